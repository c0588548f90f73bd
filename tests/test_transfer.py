"""ImageNet training and VOC segmentation end to end on synthetic files in the real layouts; the paper
presets at full size; schedules; the mobile-setting limit."""

import json

import pytest
import torch

from helpers.tasks import sigterm_at_step, without_seconds
from nge.cli import main
from nge.config import SegmentRunConfig, TrainRunConfig, load_config, validate
from nge.data import write_synthetic_imagefolder, write_synthetic_voc
from nge.engine import Meter
from nge.genotypes import DARTS_V2
from nge.profile import count_params_without_aux

QUIET = ["runtime.progress=false"]


@pytest.mark.slow
def test_imagenet_then_segmentation_through_the_cli(tmp_path, capsys):
    images = write_synthetic_imagefolder(tmp_path / "imagenet")
    voc = write_synthetic_voc(tmp_path / "voc", aug=True)
    run = tmp_path / "in-run"
    assert main(["train", "--genotype", "DARTS_V2", "--preset", "smoke-imagenet", "--out", str(run),
                 f"data.root={images}", *QUIET]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_test_top5"] == 1.0  # 3 classes: the top 5 always hold the label
    assert 0 <= result["final_test_acc"] <= 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all("test_top5" in r for r in rows)
    # the ImageNet weights become the DeepLab backbone
    seg = tmp_path / "seg-run"
    assert main(["segment", "--preset", "smoke", "--backbone", str(run / "model.pt"), "--out", str(seg),
                 f"data.root={voc}", "data.aug=true", *QUIET]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out["final_val_miou"] <= 1
    table = (seg / "iou.md").read_text().splitlines()
    assert len(table) == 2 + 21 + 1 and table[2].startswith("| background |")
    assert (seg / "predictions.png").stat().st_size > 1000 and (seg / "curves.png").is_file()
    model = torch.load(seg / "model.pt", weights_only=True)
    backbone = torch.load(run / "model.pt", weights_only=True)["task"]["net"]
    key = "stack.cells.0.preprocess.pre1.1.weight"
    assert model["task"]["net"]["backbone." + key].shape == backbone[key].shape


def test_segment_needs_a_backbone_or_a_genotype(tmp_path, capsys):
    voc = write_synthetic_voc(tmp_path / "voc")
    assert main(["segment", "--preset", "smoke", "--out", str(tmp_path / "r"), f"data.root={voc}", *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--backbone" in err and not (tmp_path / "r").exists()
    assert main(["segment", "--preset", "smoke", "--backbone", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "r"),
                 f"data.root={voc}"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["segment", "--preset", "smoke", "--backbone", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "r"),
                 f"data.root={voc}", "model.C=16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.C has no effect with --backbone" in err


def test_paper_imagenet_preset_values_and_one_step_at_full_size(tmp_path):
    from nge.training import TrainTask, load_train_data

    cfg = load_config(TrainRunConfig, "train", "paper-imagenet", [])
    validate(cfg)
    m, t, d = cfg.model, cfg.train, cfg.data
    assert (m.layers, m.C, m.auxiliary_weight, m.mult_adds_limit) == (14, 48, 0.4, 600_000_000)
    assert (t.epochs, d.batch_size, t.lr, t.schedule, t.warmup_epochs, t.momentum) == (250, 512, 0.25, "linear", 5, 0.9)
    assert (t.weight_decay, t.label_smoothing, d.image_size, d.resize) == (3e-5, 0.1, 224, 256)
    root = write_synthetic_imagefolder(tmp_path / "imagenet")
    cfg = load_config(TrainRunConfig, "train", "paper-imagenet",
                      [*QUIET, f"data.root={root}", "data.batch_size=2", "data.workers=0"])
    task = TrainTask(cfg, DARTS_V2, load_train_data(cfg, torch.device("cpu")), torch.device("cpu"))
    # DARTS_V2 has 4,718,752 weights with 1,000 classes; the synthetic set has 3
    assert count_params_without_aux(task.net) == 4_718_752 - 997 * (768 + 1)
    phases = task.begin_epoch(0)
    x, y = next(iter(phases[0].batches))
    assert x.shape == (2, 3, 224, 224)
    before = task.net.classifier.weight.clone()
    meters = {"train": Meter()}
    phases[0].step((x, y), meters)
    steps_per_epoch = len(task.train_loader)
    assert task.lr == pytest.approx(0.25 / (5 * steps_per_epoch))  # first warm-up step
    assert meters["train"].n == 2 and not torch.equal(before, task.net.classifier.weight)


@pytest.mark.slow
def test_paper_voc_preset_one_step_at_full_size(tmp_path):
    from nge.evalnet import NetworkImageNet
    from nge.segment import SegmentTask, build_segmenter

    voc = write_synthetic_voc(tmp_path / "voc", aug=True)
    cfg = load_config(SegmentRunConfig, "segment", "paper-voc",
                      [*QUIET, f"data.root={voc}", "data.batch_size=2", "data.workers=0"])
    validate(cfg)
    assert (cfg.data.crop, cfg.model.output_stride, cfg.model.rates, cfg.data.aug) == (513, 16, [6, 12, 18], True)
    torch.manual_seed(0)
    model = build_segmenter(cfg, NetworkImageNet(DARTS_V2, C=48, layers=14))
    assert sum(p.numel() for p in model.parameters()) == 9_987_533
    task = SegmentTask(cfg, model, torch.device("cpu"))
    x, y = next(iter(task.train_loader))
    assert x.shape == (2, 3, 513, 513) and y.shape == (2, 513, 513)
    before = model.classifier.weight.clone()
    task.train_step(x, y, Meter())
    assert task.lr == pytest.approx(0.007) and not torch.equal(before, model.classifier.weight)


@pytest.mark.slow
def test_imagenet_mid_epoch_resume_skips_without_decoding_and_equals_one_run(tmp_path):
    from nge.engine import RunDir, fit
    from nge.errors import NGEError
    from nge.training import TrainTask, load_train_data

    root = write_synthetic_imagefolder(tmp_path / "imagenet")
    cfg = load_config(TrainRunConfig, "train", "smoke-imagenet", [*QUIET, f"data.root={root}", "data.workers=0",
                                                                   "train.epochs=3"])

    def task() -> TrainTask:
        torch.manual_seed(0)
        return TrainTask(cfg, DARTS_V2, load_train_data(cfg, torch.device("cpu")), torch.device("cpu"))

    want = fit(task(), 3, RunDir.open(tmp_path / "full", False, False))
    stopped = task()
    sigterm_at_step(stopped, len(stopped.train_loader) + 2)
    run = RunDir.open(tmp_path / "run", False, False)
    with pytest.raises(NGEError, match="epoch 2, train step 2"):
        fit(stopped, 3, run)
    resumed = task()
    skipped = []
    real_from = resumed.train_loader.batches_from
    resumed.train_loader.batches_from = lambda first: skipped.append(first) or real_from(first)
    got = fit(resumed, 3, run, resume=True)
    assert skipped[0] == 2  # epoch 2 started at batch 2 instead of decoding batches 0 and 1 again
    assert without_seconds(got) == without_seconds(want)
