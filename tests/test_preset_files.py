"""--preset FILE.yaml: validated like a built-in preset, for every command, ablations included."""

from __future__ import annotations

import csv
import json

import pytest

from nge.cli import main
from nge.config import AblateConfig, SearchRunConfig, TrainRunConfig, load_config, preset_name
from nge.errors import NGEError


def test_a_preset_file_is_validated_like_a_builtin(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("data: {name: synthetic, batch_size: 8}\nmodel: {C: 4, layers: 3}\nsearch: {epochs: 1}\n")
    cfg = load_config(SearchRunConfig, "search", str(good), ["search.epochs=2"])
    assert (cfg.data.batch_size, cfg.model.C, cfg.search.epochs, cfg.preset) == (8, 4, 2, str(good))
    assert preset_name(str(good)) == "mine" and preset_name("quick") == "quick"
    cases = {"data: {nope: 1}\n": "nope", "data: {batch_size: many}\n": "batch_size", "search: {epochs: 0}\n": "epochs",
             "- a list\n": "must hold a mapping", "data: {batch_size: [\n": "not valid YAML"}
    for text, msg in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(NGEError, match=msg):
            load_config(SearchRunConfig, "search", str(bad), [])
    with pytest.raises(NGEError, match="does not exist"):
        load_config(TrainRunConfig, "train", str(tmp_path / "missing.yml"), [])
    with pytest.raises(NGEError, match="or a FILE.yaml"):
        load_config(TrainRunConfig, "train", "missing", [])


def test_an_ablation_file_finds_preset_files_next_to_it(tmp_path, monkeypatch):
    (tmp_path / "short.yaml").write_text("train: {epochs: 1}\n")
    (tmp_path / "mine.yaml").write_text("search_preset: smoke\ntrain_presets: [short.yaml, smoke]\n")
    monkeypatch.chdir(tmp_path.parent)
    acfg = load_config(AblateConfig, "ablate", f"{tmp_path.name}/mine.yaml", [])
    assert acfg.train_presets == [str(tmp_path / "short.yaml"), "smoke"]


@pytest.mark.slow
def test_a_user_preset_file_runs_an_ablation(tmp_path, capsys):
    (tmp_path / "tiny-search.yaml").write_text(
        "data: {name: synthetic, batch_size: 16, synthetic: {n_train: 64, n_test: 16, num_classes: 3, size: 12}}\n"
        "model: {C: 4, layers: 3}\nsearch: {epochs: 1}\n")
    (tmp_path / "tiny-train.yaml").write_text(
        "data: {name: synthetic, batch_size: 16, synthetic: {n_train: 48, n_test: 24, num_classes: 3, size: 12}}\n"
        "model: {C: 4, layers: 3, drop_path: 0.0}\ntrain: {epochs: 1, lr: 0.05}\n")
    (tmp_path / "mine.yaml").write_text(
        "seeds: 1\nsearch_preset: tiny-search.yaml\ntrain_presets: [tiny-train.yaml]\n"
        "rows:\n  - {name: random, label: Random cells}\n  - {name: mine, label: My NGE, search: [search.arch.name=nge]}\n")
    out = tmp_path / "ablation"
    assert main(["ablate", "--preset", str(tmp_path / "mine.yaml"), "--out", str(out), "runtime.threads=1",
                 "runtime.progress=false"]) == 0
    table = capsys.readouterr().out
    assert "| Random cells |" in table and "| My NGE |" in table
    rows = list(csv.DictReader((out / "ablation.csv").open()))
    assert [r["row"] for r in rows] == ["random", "mine"]
    train = json.loads((out / "mine-seed0/train-tiny-train/summary.json").read_text())
    assert train["epochs"] == 1 and train["preset"] == str(tmp_path / "tiny-train.yaml")
    search = json.loads((out / "mine-seed0/search/summary.json").read_text())
    assert search["epochs"] == 1 and search["genotype"] == json.loads(rows[1]["genotype"])


def test_profile_takes_a_preset_file(tmp_path, capsys):
    f = tmp_path / "small.yaml"
    f.write_text("data: {name: synthetic, synthetic: {channels: 1, size: 12, num_classes: 5}}\nmodel: {C: 4, layers: 3}\n")
    assert main(["profile", "--preset", str(f), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["preset"] == str(f) and result["input"] == [1, 12, 12] and result["num_classes"] == 5
    assert result["config"]["C"] == 4
    f.write_text("model: {C: four}\n")
    assert main(["profile", "--preset", str(f)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "model.C" in err
