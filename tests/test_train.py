import json

import numpy as np
import pytest
import torch

from helpers.files import make_cifar10
from helpers.tasks import without_seconds
from nge.cli import main
from nge.config import TrainRunConfig, available_presets, load_config, validate
from nge.engine import RunDir, fit
from nge.errors import NGEError
from nge.evalnet import NetworkCIFAR
from nge.genotypes import BUILTIN_GENOTYPES, resolve_genotype
from nge.profile import count_params_without_aux
from nge.training import TrainTask

QUIET = ["runtime.progress=false"]


def test_paper_presets_match_spec():
    assert {"smoke", "quick", "paper-cifar10", "paper-cifar100"} <= set(available_presets("train"))
    for name, wd, dataset in (("paper-cifar10", 3e-4, "cifar10"), ("paper-cifar100", 5e-4, "cifar100")):
        cfg = load_config(TrainRunConfig, "train", name, [])
        validate(cfg)
        m, t, d = cfg.model, cfg.train, cfg.data
        assert (m.layers, m.C, m.auxiliary, m.auxiliary_weight, m.drop_path) == (20, 36, True, 0.4, 0.3)
        assert (t.epochs, t.lr, t.lr_min, t.momentum, t.weight_decay) == (600, 0.25, 0.0, 0.9, wd)
        assert (d.name, d.batch_size, d.cutout, d.crop_pad, d.flip) == (dataset, 128, 16, 4, True)


def test_drop_path_ramps_and_lr_decays(tmp_path, train_task):
    task = train_task("train.epochs=4", "model.drop_path=0.2")
    rows = fit(task, 2, RunDir.open(tmp_path / "run", False, False))
    assert rows[0]["drop_path"] == 0.0 and rows[1]["drop_path"] == pytest.approx(0.05)
    assert rows[0]["lr"] > rows[1]["lr"]
    assert {"train_loss", "train_acc", "test_loss", "test_acc"} <= set(rows[0])


def test_test_every_measures_the_test_split_every_nth_epoch_and_the_last(tmp_path, train_task):
    rows = fit(train_task("train.epochs=5", "train.test_every=2"), 5, RunDir.open(tmp_path / "run", False, False))
    assert [r["epoch"] for r in rows if "test_acc" in r] == [2, 4, 5]
    assert all("train_acc" in r for r in rows)


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tmp_path, train_task):
    full = train_task("train.epochs=3")
    a = fit(full, 3, RunDir.open(tmp_path / "a", False, False))
    run = RunDir.open(tmp_path / "b", False, False)
    fit(train_task("train.epochs=3"), 1, run)
    resumed = train_task("train.epochs=3")
    b = fit(resumed, 3, run, resume=True)
    assert without_seconds(a) == without_seconds(b)
    for (k, v), w in zip(full.net.state_dict().items(), resumed.net.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_resolve_genotype(tmp_path):
    assert resolve_genotype("DARTS_V1") == BUILTIN_GENOTYPES["DARTS_V1"]
    BUILTIN_GENOTYPES["DARTS_V2"].save(tmp_path / "genotype.json")
    assert resolve_genotype(str(tmp_path)) == BUILTIN_GENOTYPES["DARTS_V2"]
    assert resolve_genotype(str(tmp_path / "genotype.json")) == BUILTIN_GENOTYPES["DARTS_V2"]
    with pytest.raises(NGEError, match="built-in name"):
        resolve_genotype("DARTS_V9")
    (tmp_path / "bad.json").write_text('{"normal": []}')
    with pytest.raises(NGEError, match="bad.json"):
        resolve_genotype(str(tmp_path / "bad.json"))


@pytest.mark.slow
def test_train_cli_end_to_end_with_search_run_dir(tmp_path, capsys):
    search = tmp_path / "search"
    assert main(["search", "--preset", "smoke", "--out", str(search), *QUIET, "search.epochs=1"]) == 0
    out = tmp_path / "train"
    assert main(["train", "--genotype", str(search), "--preset", "smoke", "--out", str(out), *QUIET]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert printed["final_test_acc"] == summary["final_test_acc"]
    assert summary["best_test_acc"] >= summary["final_test_acc"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "drop_path", "seconds"} <= set(rows[0])
    for name in ("checkpoint.pt", "model.pt", "curves.png", "genotype.json", "config.yaml"):
        assert (out / name).exists(), name
    weights = torch.load(out / "model.pt", weights_only=True)
    assert weights["genotype"] == json.loads((search / "genotype.json").read_text())


def test_resume_refuses_another_genotype(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", "--genotype", "DARTS_V2", "--preset", "smoke", "--out", str(out), *QUIET, "train.epochs=1"]) == 0
    assert main(["train", "--genotype", "DARTS_V1", "--preset", "smoke", "--out", str(out), "--resume", *QUIET]) == 2
    assert "different genotype" in capsys.readouterr().err


@pytest.mark.parametrize("preset, wd", [("paper-cifar10", 3e-4), ("paper-cifar100", 5e-4)])
def test_paper_presets_build_and_step_on_synthetic_cifar_files(tmp_path, preset, wd):
    from nge.data import write_cifar_batch

    if preset == "paper-cifar10":
        root = make_cifar10(tmp_path, per_batch=2)
    else:
        root = tmp_path
        folder = tmp_path / "cifar-100-python"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for name in ("train", "test"):
            write_cifar_batch(folder / name, rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8),
                              rng.integers(0, 100, 4), label_key="fine_labels")
    # full-size network (20 cells, C = 36), one step of batch 2
    cfg = load_config(TrainRunConfig, "train", preset, [*QUIET, f"data.root={root}", "data.batch_size=2"])
    from nge.data import load_dataset

    data = load_dataset(cfg.data.name, cfg.data.root)
    task = TrainTask(cfg, BUILTIN_GENOTYPES["DARTS_V2"], data, torch.device("cpu"))
    assert task.opt.param_groups[0]["weight_decay"] == wd
    x, y = next(iter(task.train_loader))
    before = task.net.classifier.weight.clone()
    task.net.train()
    loss, _ = task.loss(x, y)
    loss.backward()
    task.opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, task.net.classifier.weight)


def test_profile_darts_v2_paper_cifar10(capsys):
    assert main(["profile", "--preset", "paper-cifar10", "--genotype", "DARTS_V2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == count_params_without_aux(NetworkCIFAR(BUILTIN_GENOTYPES["DARTS_V2"], C=36, layers=20))
    assert 500_000_000 < result["mult_adds"] < 600_000_000
