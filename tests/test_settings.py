"""Settings that survive new keys (issue 32): --reuse lines store their settings and compare them key by
key, a missing key read as its schema default; older 12-hex fingerprints keep working; a finished or
interrupted run whose config lacks a key resumes where the key holds its default."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

import nge.ablate as ablate
from nge.ablate import _check_finished, _Ledger, _settings_cell, fingerprint, run_ablation, settings
from nge.cli import main
from nge.config import (
    KEYS_SINCE_FINGERPRINTS,
    AblateConfig,
    SearchRunConfig,
    TrainRunConfig,
    load_config,
    schema_defaults,
    to_dict,
)
from nge.engine import check_resume_config, load_checkpoint, save_checkpoint
from nge.errors import NGEError
from nge.space import random_genotype

ROOT = Path(__file__).resolve().parent.parent
CONFIRM = ROOT / "docs" / "results" / "confirm"


def _train(*overrides: str) -> TrainRunConfig:
    return load_config(TrainRunConfig, "train", "smoke", list(overrides))


def _write(path: Path, lines: list[dict]) -> Path:
    fields = list(dict.fromkeys(k for line in lines for k in line))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(lines)
    return path


def _line(cell: str, acc: float = 0.5, seed: int = 3) -> dict:
    return {"row": "r", "seed": 0, "train_seed": 0, "genotype": random_genotype(seed).to_json(), "test_acc[a]": acc,
            "config[a]": cell}


def test_schema_defaults_are_flat_and_leave_missing_keys_out():
    d = schema_defaults(SearchRunConfig)
    assert d["search.epochs"] == 25 and d["data.root"] is None and d["search.arch.name"] == "nge"
    assert d["data.name"] == "fashion_mnist" and "preset" not in d  # enums as text; preset is MISSING
    assert all("." in k for k in d)
    assert set(schema_defaults(TrainRunConfig)) >= {"train.epochs", "model.drop_path", "data.cutout"}


# ----------------------------------------------------------------------------- a new key at its default


def _with_new_key(monkeypatch, value, listed: bool = True) -> None:
    """The schemas gain search.new_key and train.new_key (default 0): this run's configs hold `value`."""
    real_to_dict, real_defaults = ablate.to_dict, ablate.schema_defaults

    def to_dict_(cfg):
        d = real_to_dict(cfg)
        for section in ("search", "train"):
            if section in d:
                d[section]["new_key"] = value
        return d

    monkeypatch.setattr(ablate, "to_dict", to_dict_)
    monkeypatch.setattr(ablate, "schema_defaults", lambda s: {**real_defaults(s), "search.new_key": 0, "train.new_key": 0})
    added = ("search.new_key", "train.new_key") if listed else ()
    monkeypatch.setattr(ablate, "KEYS_SINCE_FINGERPRINTS", (*KEYS_SINCE_FINGERPRINTS, *added))


def _nothing_runs(monkeypatch) -> list[str]:
    ran: list[str] = []

    def refuse(*args, **kwargs):
        ran.append(str(args))
        raise NGEError("this run would run")

    monkeypatch.setattr(ablate, "run_search", refuse)
    monkeypatch.setattr(ablate, "run_train", refuse)
    monkeypatch.setattr(ablate, "_check_data", lambda configs: None)  # the data sets need not be here
    return ran


@pytest.mark.slow
def test_a_new_key_at_its_default_keeps_every_line_of_the_committed_confirm_table(tmp_path, monkeypatch, capsys):
    """`nge ablate --preset confirm --reuse docs/results/confirm/ablation.csv` runs nothing and prints the
    committed table, though the schemas have a key its fingerprints never saw."""
    _nothing_runs(monkeypatch)
    _with_new_key(monkeypatch, 0)
    args = ["ablate", "--preset", "confirm", "--threads-per-run", "1", "--reuse", str(CONFIRM / "ablation.csv")]
    assert main([*args, "--out", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    assert out == (CONFIRM / "ablation.md").read_text() == (tmp_path / "again" / "ablation.md").read_text()
    assert (tmp_path / "again" / "ablation.csv").read_bytes() == (CONFIRM / "ablation.csv").read_bytes()
    assert not [p for p in (tmp_path / "again").iterdir() if p.is_dir()]  # no run directory: nothing ran

    # the same key at another value (or at its default but not listed as added since): every line is refused
    for value, listed in ((1, True), (0, False)):
        _with_new_key(monkeypatch, value, listed)
        assert main([*args, "--out", str(tmp_path / f"other-{value}")]) == 2
        err = capsys.readouterr().err
        assert "random, seed 3: training proxy not reused: its settings fingerprint" in err
        assert err.count("this run would run") == 1


def test_the_fingerprint_ignores_only_added_keys_that_hold_their_default(monkeypatch):
    cfg = _train()
    before = fingerprint(cfg)
    _with_new_key(monkeypatch, 0)
    assert fingerprint(cfg) == before and settings(cfg)["train.new_key"] == 0
    _with_new_key(monkeypatch, 2)
    assert fingerprint(cfg) != before
    _with_new_key(monkeypatch, 0, listed=False)
    assert fingerprint(cfg) != before


def test_stored_settings_lacking_a_key_are_read_at_its_default_and_a_refusal_names_the_first_key(tmp_path):
    """A line written before train.label_smoothing existed (its settings lack the key)."""
    cell = json.loads(_settings_cell(_train()))
    del cell["train.label_smoothing"]
    table = _write(tmp_path / "t.csv", [_line(json.dumps(cell))])
    logs: list[str] = []
    ledger = _Ledger([table], log=logs.append)
    assert ledger.training("r", 0, 0, "a", _train(), random_genotype(3))["final_test_acc"] == 0.5
    assert ledger.training("r", 0, 0, "a", _train("train.label_smoothing=0.1"), random_genotype(3)) is None
    assert ledger.training("r", 0, 0, "a", _train("train.epochs=3", "model.C=6"), random_genotype(3)) is None
    assert ledger.training("r", 0, 0, "a", _train(), random_genotype(4)) is None
    assert logs == ["nge ablate: r, seed 0: training a not reused: train.label_smoothing differs (table: 0.0, now: 0.1)",
                    "nge ablate: r, seed 0: training a not reused: model.C differs (table: 4, now: 6)",
                    "nge ablate: r, seed 0: training a not reused: it trained another cell"]


# ----------------------------------------------------------------------------- what counts in the settings


def test_data_root_counts_where_it_is_the_data_set_and_threads_where_a_row_sets_them(tmp_path):
    folder = settings(_train("data.name=folder", "data.root=/a"))
    assert folder["data.root"] == "/a"
    assert "data.root" not in settings(_train("data.name=fashion_mnist", "data.root=/a"))
    assert "data.root" not in settings(_train("data.name=cifar10", "data.root=/a"))
    search = load_config(SearchRunConfig, "search", "smoke", ["runtime.threads=2"])
    assert "runtime.threads" not in settings(search) and settings(search, threads=True)["runtime.threads"] == 2
    acfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AblateConfig), {
        "preset": "t", "seeds": 3, "search_preset": "quick", "trainings": [{"name": "a", "preset": "smoke"}],
        "rows": [{"name": "nge"}, {"name": "nge-2t", "search": ["runtime.threads=2"]}]}))
    assert ablate._own_threads(acfg) == {("nge-2t", s, "search") for s in range(3)}  # its row sets runtime.threads=2
    # where it counts, a line from another thread count is refused
    line = {"row": "x", "seed": 0, "train_seed": 0, "genotype": random_genotype(3).to_json(), "search_val_acc": 0.5,
            "search_seconds": 1.0, "config[search]": _settings_cell(search, threads=True)}
    logs: list[str] = []
    table = _Ledger([_write(tmp_path / "s.csv", [line])], log=logs.append)
    assert table.search("x", 0, search, threads=True)["search_val_acc"] == 0.5
    one = load_config(SearchRunConfig, "search", "smoke", ["runtime.threads=1"])
    assert table.search("x", 0, one) is None and table.search("x", 0, one, threads=True) is None
    assert logs == ["nge ablate: x, seed 0: search not reused: runtime.threads differs (table: 2, now: null)",
                    "nge ablate: x, seed 0: search not reused: runtime.threads differs (table: 2, now: 1)"]


def test_two_image_folders_are_never_mixed_by_reuse(tmp_path, monkeypatch):
    """A comparison on data.name=folder: its lines are reused for the same folder only; a standard data set's
    lines are reused wherever it lies."""
    trained: list[str] = []

    def fake_train(cfg, genotype_spec, path, log=None, force=False, resume=False):
        trained.append(cfg.data.root)
        return {"final_test_acc": 0.25 + 0.5 * (cfg.data.root == "/b"), "wall_seconds": 1.0, "params": 7}

    monkeypatch.setattr(ablate, "run_train", fake_train)
    monkeypatch.setattr(ablate, "_check_data", lambda configs: None)
    acfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AblateConfig), {
        "preset": "t", "seeds": 1, "rows": [{"name": "d", "genotype": "DARTS_V2"}],
        "trainings": [{"name": "a", "preset": "smoke", "overrides": ["train.epochs=1", "data.name=folder"]}]}))
    quiet = ["runtime.progress=false"]
    run_ablation(acfg, [*quiet, "data.root=/a"], tmp_path / "a", log=lambda _m: None)
    table = tmp_path / "a" / "ablation.csv"
    assert trained == ["/a"]

    logs: list[str] = []
    rows = run_ablation(acfg, [*quiet, "data.root=/b"], tmp_path / "b", log=logs.append, reuse=[table])
    assert trained == ["/a", "/b"] and rows[0]["test_acc[a]"] == 0.75  # /b's own result, not /a's
    assert 'nge ablate: d, seed 0: training a not reused: data.root differs (table: "/a", now: "/b")' in logs
    rows = run_ablation(acfg, [*quiet, "data.root=/a"], tmp_path / "a2", log=logs.append, reuse=[table])
    assert trained == ["/a", "/b"] and rows[0]["test_acc[a]"] == 0.25  # the same folder: reused

    # Fashion-MNIST (a standard set) in another folder: the same data, reused
    acfg.trainings[0].overrides = ["train.epochs=1", "data.name=fashion_mnist"]
    run_ablation(acfg, [*quiet, "data.root=/a"], tmp_path / "f", log=lambda _m: None)
    run_ablation(acfg, [*quiet, "data.root=/b"], tmp_path / "f2", log=lambda _m: None, reuse=[tmp_path / "f" / "ablation.csv"])
    assert trained == ["/a", "/b", "/a"]


# ----------------------------------------------------------------------------- several tables


def test_lines_of_several_tables_merge_where_their_settings_agree_and_stay_apart_where_not(tmp_path):
    five, six = _train("train.epochs=5"), _train("train.epochs=6")
    a = _write(tmp_path / "a.csv", [_line(_settings_cell(five), 0.5)])
    b = _write(tmp_path / "b.csv", [_line(_settings_cell(six), 0.6)])
    logs: list[str] = []
    ledger = _Ledger([a, b], log=logs.append)  # other settings, other results: no conflict, both kept
    assert len(ledger.lines["r", 0, 0]) == 2
    assert ledger.training("r", 0, 0, "a", five, random_genotype(3))["final_test_acc"] == 0.5
    assert ledger.training("r", 0, 0, "a", six, random_genotype(3))["final_test_acc"] == 0.6
    assert ledger.training("r", 0, 0, "a", _train("train.epochs=7"), random_genotype(3)) is None
    assert logs == [f"nge ablate: r, seed 0: training a not reused: train.epochs differs (table: {n}, now: 7)" for n in (5, 6)]

    # the same settings as stored settings and as an older table's fingerprint: one run, columns merged
    old = _write(tmp_path / "old.csv", [{**_line(fingerprint(five), 0.5), "val_acc[a]": 0.4}])
    ledger = _Ledger([old, a])
    assert len(ledger.lines["r", 0, 0]) == 1 and ledger.lines["r", 0, 0][0]["config[a]"] == _settings_cell(five)
    assert ledger.training("r", 0, 0, "a", five, random_genotype(3))["final_val_acc"] == 0.4
    clash = _write(tmp_path / "clash.csv", [_line(_settings_cell(five), 0.9)])
    with pytest.raises(NGEError, match=r"clash.csv: r, seed 0, training seed 0 has test_acc\[a\] = 0.9, another file 0.5"):
        _Ledger([old, clash])


# ----------------------------------------------------------------------------- finished and interrupted runs


def test_a_finished_run_whose_config_lacks_a_key_is_reused_at_its_default_and_refused_otherwise(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = to_dict(load_config(SearchRunConfig, "search", "smoke", []))
    del saved["search"]["warmup_epochs"]  # a key added after the run
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    _check_finished(run, load_config(SearchRunConfig, "search", "smoke", []), None)
    with pytest.raises(NGEError) as e:
        _check_finished(run, load_config(SearchRunConfig, "search", "smoke", ["search.warmup_epochs=1"]), None)
    msg = str(e.value)
    assert "search.warmup_epochs (run: 0, the default: not in its config, now: 1)" in msg and "\n" not in msg
    # a key the schema no longer has is still another version's setting
    saved["search"]["gone"] = 1
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(NGEError, match=r"other settings \(search\.gone\)"):
        _check_finished(run, load_config(SearchRunConfig, "search", "smoke", []), None)


def test_without_defaults_a_missing_key_stays_foreign():
    current = to_dict(_train())
    saved = to_dict(_train())
    del saved["train"]["label_smoothing"]
    with pytest.raises(NGEError, match=r"other settings \(train\.label_smoothing\)"):
        check_resume_config(saved, current, ())
    check_resume_config(saved, current, (), schema_defaults(TrainRunConfig))


@pytest.mark.slow
def test_an_interrupted_search_whose_checkpoint_lacks_a_key_resumes_at_its_default(tmp_path):
    from nge.searching import run_search

    base = ["runtime.progress=false", "runtime.threads=1"]
    run_search(load_config(SearchRunConfig, "search", "smoke", [*base, "search.epochs=1"]), tmp_path / "run", log=lambda m: None)
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt = load_checkpoint(path)
    del ckpt["config"]["search"]["warmup_epochs"]
    save_checkpoint(ckpt, path)
    with pytest.raises(NGEError) as e:
        run_search(load_config(SearchRunConfig, "search", "smoke", [*base, "search.epochs=2", "search.warmup_epochs=1"]),
                   tmp_path / "run", resume=True, log=lambda m: None)
    assert "search.warmup_epochs (run: 0, the default: not in its config, now: 1)" in str(e.value)
    summary = run_search(load_config(SearchRunConfig, "search", "smoke", [*base, "search.epochs=2"]), tmp_path / "run",
                         resume=True, log=lambda m: None)
    assert summary["epochs"] == 2
