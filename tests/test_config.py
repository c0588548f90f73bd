import pytest

from nge.config import SearchRunConfig, TrainRunConfig, available_presets, load_config, validate
from nge.errors import NGEError


def test_presets_exist_and_paper_matches_spec():
    assert {"smoke", "quick", "paper"} <= set(available_presets("search"))
    cfg = load_config(SearchRunConfig, "search", "paper", [])
    validate(cfg)
    assert cfg.data.name == "cifar10" and cfg.data.train_portion == 0.5 and cfg.data.limit is None
    assert (cfg.model.C, cfg.model.layers) == (16, 8)
    s = cfg.search
    assert s.epochs == 25 and s.alternation == "epoch" and s.arch.name == "nge"
    assert (s.weights.lr, s.weights.momentum, s.weights.weight_decay, s.weights.lr_min) == (0.025, 0.9, 3e-4, 0.0)
    assert (s.arch.lr, s.arch.weight_decay, s.arch.beta1, s.arch.beta2) == (6e-4, 1e-3, 0.5, 0.999)


def test_overrides_are_typed():
    cfg = load_config(SearchRunConfig, "search", "smoke", ["search.epochs=7", "data.limit=10", "search.alternation=batch"])
    assert cfg.search.epochs == 7 and cfg.data.limit == 10 and cfg.search.alternation == "batch"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["search.epoch=3"], "search.epoch"),
        (["search.epochs=three"], "search.epochs"),
        (["search.alternation=sometimes"], "search.alternation"),
        (["data.name=mnist"], "data.name"),
        (["nonsense"], "KEY=VALUE"),
    ],
)
def test_bad_keys_and_types_are_one_line_errors(overrides, fragment):
    with pytest.raises(NGEError) as e:
        load_config(SearchRunConfig, "search", "smoke", overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("overrides", [["a\nb=1"], {"a\nb": 1}, ["search.epochs=1", "x\u2028y=2"]])
def test_a_key_with_a_line_break_is_shown_quoted_in_one_line(overrides):
    """A Hypothesis draw once cut the message at the key's own line break."""
    key = "a\nb" if "a\nb=1" in overrides or "a\nb" in overrides else "x\u2028y"
    with pytest.raises(NGEError) as e:
        load_config(SearchRunConfig, "search", "smoke", overrides)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and repr(key) in msg and "not in 'SearchRunConfig'" in msg


def test_an_omegaconf_error_without_a_message_still_says_something_in_one_line():
    from omegaconf.errors import ValidationError

    from nge.config import _one_line

    plain, odd, blank = ValidationError(""), ValidationError("  \n "), ValidationError("bad value\n    full_key: x")
    plain.full_key, odd.full_key, blank.full_key = "search.epochs", "a\rb", "rows[0].name"
    assert _one_line(plain) == "search.epochs: ValidationError"
    assert _one_line(odd) == "'a\\rb': ValidationError"
    assert _one_line(blank) == "rows[0].name: bad value"


def test_a_yaml_error_names_only_the_bad_override():
    good = ["search.epochs=2", "data.limit=10"]
    with pytest.raises(NGEError) as e:
        load_config(SearchRunConfig, "search", "smoke", [*good, "search.arch.lr=[1", "model.C=4"])
    msg = str(e.value)
    assert msg.startswith("bad configuration: the value of override 'search.arch.lr=[1' is not valid YAML (")
    assert "\n" not in msg and all(item not in msg for item in (*good, "model.C=4"))


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["search.epochs=0"], "search.epochs"),
        (["data.batch_size=-1"], "data.batch_size"),
        (["data.train_portion=1.5"], "data.train_portion"),
        (["search.arch.name=gcn9"], "search.arch.name"),
        (["model.layers=2"], "model.layers"),
        (["search.weights.lr=0"], "search.weights.lr"),
    ],
)
def test_impossible_values_rejected_when_loading(overrides, fragment):
    with pytest.raises(NGEError) as e:
        load_config(SearchRunConfig, "search", "smoke", overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_a_config_changed_after_loading_is_validated_again():
    cfg = load_config(SearchRunConfig, "search", "smoke", [])
    cfg.search.epochs = 0
    with pytest.raises(NGEError, match="search.epochs"):
        validate(cfg)


@pytest.mark.parametrize(
    "kind, overrides, fragment",
    [
        # keys a command does not have at all
        ("search", ["data.cutout=16"], "data.cutout"),
        ("search", ["data.workers=2"], "data.workers"),
        ("search", ["data.image_size=64"], "data.image_size"),
        ("search", ["data.resize=64"], "data.resize"),
        ("train", ["data.train_portion=0.3"], "data.train_portion"),
        # keys it has, set where they do nothing
        ("train", ["data.workers=2"], "data.workers has no effect with data.name=synthetic"),
        ("train", ["data.image_size=64"], "data.image_size"),
        ("train", ["data.resize=300"], "data.resize"),
        ("train", ["data.name=cifar10", "data.synthetic.size=16"], "data.synthetic.size has no effect"),
        ("train", ["model.auxiliary=false", "model.auxiliary_weight=0.3"], "model.auxiliary_weight"),
        ("train", ["train.schedule=linear", "train.lr_min=0.001"], "train.lr_min"),
        ("search", ["data.name=fashion_mnist", "data.synthetic.n_train=9"], "data.synthetic.n_train"),
        ("search", ["data.root=/x"], "data.root has no effect with data.name=synthetic"),
        ("train", ["data.name=imagenet", "model.stem_multiplier=2"], "model.stem_multiplier"),
        ("search", ["search.ea.population=5"], "search.ea.population has no effect with search.strategy=gd"),
        ("search", ["search.strategy=rl", "search.alternation=batch"], "search.alternation has no effect"),
        ("search", ["search.strategy=ea", "search.rl.entropy_weight=0"], "search.rl.entropy_weight has no effect"),
    ],
)
def test_keys_that_would_be_ignored_are_refused(kind, overrides, fragment):
    schema = SearchRunConfig if kind == "search" else TrainRunConfig
    with pytest.raises(NGEError) as e:
        load_config(schema, kind, "smoke-imagenet" if "data.name=imagenet" in overrides else "smoke", overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_choices_are_enums():
    import enum

    from nge.arch import ARCH_PARAMS
    from nge.supernet import CHECKPOINT_MODES

    cfg = load_config(SearchRunConfig, "search", "smoke", ["model.checkpoint=early", "search.arch.name=darts"])
    assert isinstance(cfg.model.checkpoint, enum.Enum) and isinstance(cfg.search.arch.name, enum.Enum)
    assert cfg.model.checkpoint == "early" and f"{cfg.search.arch.name}" == "darts"  # compares and formats as its value
    # the choices are the tables themselves, not copies of them
    assert [c.value for c in type(cfg.model.checkpoint)] == ["auto", *CHECKPOINT_MODES]
    assert [c.value for c in type(cfg.search.arch.name)] == list(ARCH_PARAMS)
    with pytest.raises(NGEError, match="model.checkpoint"):
        load_config(SearchRunConfig, "search", "smoke", ["model.checkpoint=sometimes"])


def test_unknown_preset():
    with pytest.raises(NGEError, match="unknown search preset 'nope'.*smoke"):
        load_config(SearchRunConfig, "search", "nope", [])


def test_a_preset_may_set_keys_that_an_override_makes_inert():
    """Only overrides are refused: `--preset smoke data.name=cifar10` keeps the preset's synthetic sizes."""
    cfg = load_config(TrainRunConfig, "train", "smoke", ["data.name=cifar10"])
    assert cfg.data.name == "cifar10" and cfg.data.synthetic.size == 16


def test_bench_routes_each_override_to_the_configs_that_have_its_key():
    import argparse

    from nge.bench import _configs

    s = argparse.Namespace(preset="smoke", train_preset="smoke", overrides=["model.checkpoint=early", "model.C=8",
                           "train.schedule=linear", "train.warmup_epochs=1"], batch=None, smoke=True, device="cpu")
    search, train = _configs(s, {"search"})["search"], _configs(s, {"train"})["train"]
    assert search.model.checkpoint == "early" and search.model.C == 8
    assert train.model.C == 8 and train.train.schedule == "linear" and train.train.warmup_epochs == 1
    s.overrides = ["model.nonsense=1"]
    with pytest.raises(NGEError, match="model.nonsense"):
        _configs(s, {"search"})


def test_the_arch_weight_decay_defaults_to_the_strategy_s():
    from nge.config import ARCH_WEIGHT_DECAY, Strategy, to_yaml
    from nge.strategies import STRATEGIES

    assert set(ARCH_WEIGHT_DECAY) == set(Strategy) == set(STRATEGIES)  # one entry per strategy

    def decay(preset, *overrides):
        return load_config(SearchRunConfig, "search", preset, list(overrides)).search.arch.weight_decay

    assert decay("smoke") == decay("paper") == decay("quick") == 1e-3  # gd: the paper's
    assert decay("smoke", "search.strategy=rl") == decay("paper", "search.strategy=ea") == 0.0
    assert decay("quick-rl") == decay("quick-ea") == 0.0  # as when the presets set it
    assert decay("smoke", "search.strategy=rl", "search.arch.weight_decay=0.001") == 1e-3
    cfg = load_config(SearchRunConfig, "search", "smoke", ["search.strategy=rl"])
    assert "weight_decay: 0.0" in to_yaml(cfg).split("arch:")[1].split("rl:")[0]  # config.yaml holds the value


def test_an_old_run_resumes_where_its_settings_are_the_same_and_is_refused_in_one_line_where_not():
    """Runs started before search.arch.weight_decay had strategy defaults and before search.ea.entropy_weight."""
    from nge.config import inert_keys, to_dict
    from nge.engine import check_resume_config

    def old(*overrides):
        saved = to_dict(load_config(SearchRunConfig, "search", "smoke", list(overrides)))
        del saved["search"]["ea"]["entropy_weight"]
        saved["search"]["arch"]["weight_decay"] = 1e-3  # the old default, whatever the strategy
        return saved

    def resume(saved, *overrides):
        cfg = load_config(SearchRunConfig, "search", "smoke", list(overrides))
        check_resume_config(saved, to_dict(cfg), ("search.epochs", *inert_keys(cfg)))

    resume(old())  # gd: the same settings; the ea key is inert
    with pytest.raises(NGEError) as e:
        resume(old("search.strategy=rl"), "search.strategy=rl")
    msg = str(e.value)
    assert "search.arch.weight_decay (run: 0.001, now: 0.0)" in msg and "search.arch.weight_decay=0.001" in msg
    assert "\n" not in msg
    resume(old("search.strategy=rl"), "search.strategy=rl", "search.arch.weight_decay=0.001")
    with pytest.raises(NGEError, match=r"other settings \(search\.ea\.entropy_weight\); start a new run"):
        resume(old("search.strategy=ea"), "search.strategy=ea", "search.arch.weight_decay=0.001")
