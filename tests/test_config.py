import pytest

from nge.config import SearchRunConfig, available_presets, load_config, validate_search
from nge.errors import NGEError


def test_presets_exist_and_paper_matches_spec():
    assert {"smoke", "quick", "paper"} <= set(available_presets("search"))
    cfg = load_config(SearchRunConfig, "search", "paper", [])
    validate_search(cfg)
    assert cfg.data.name == "cifar10" and cfg.data.train_portion == 0.5 and cfg.data.limit is None
    assert (cfg.model.C, cfg.model.layers) == (16, 8)
    s = cfg.search
    assert s.epochs == 25 and s.alternation == "epoch" and s.param == "nge"
    assert (s.weights.lr, s.weights.momentum, s.weights.weight_decay, s.weights.lr_min) == (0.025, 0.9, 3e-4, 0.0)
    assert (s.arch.lr, s.arch.weight_decay, s.arch.beta1, s.arch.beta2) == (6e-4, 1e-3, 0.5, 0.999)


def test_overrides_are_typed():
    cfg = load_config(SearchRunConfig, "search", "smoke", ["search.epochs=7", "data.root=/x", "search.alternation=batch"])
    assert cfg.search.epochs == 7 and cfg.data.root == "/x" and cfg.search.alternation == "batch"


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


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["search.epochs=0"], "search.epochs"),
        (["data.batch_size=-1"], "data.batch_size"),
        (["data.train_portion=1.5"], "data.train_portion"),
        (["search.param=gcn9"], "search.param"),
        (["model.layers=2"], "model.layers"),
        (["search.weights.lr=0"], "search.weights.lr"),
    ],
)
def test_impossible_values_rejected(overrides, fragment):
    cfg = load_config(SearchRunConfig, "search", "smoke", overrides)
    with pytest.raises(NGEError) as e:
        validate_search(cfg)
    assert fragment in str(e.value)


def test_unknown_preset():
    with pytest.raises(NGEError, match="unknown search preset 'nope'.*smoke"):
        load_config(SearchRunConfig, "search", "nope", [])
