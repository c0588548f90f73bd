"""Using what nge finds: the README's "Use the network you found" commands (search, train, both
exports, predictions on `nge synth folder` data), run once for the module; model.pt's inference
metadata; predict's tensors against the test loaders; refusals."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nge.cli import main
from nge.config import TrainRunConfig, load_config
from nge.data import write_synthetic_folder, write_synthetic_imagefolder
from nge.data.sets import CLASS_NAMES
from nge.engine import load_checkpoint, save_checkpoint
from nge.errors import NGEError
from nge.export import METADATA_KEYS, check, onnx_runner, pt2_runner
from nge.inference import load
from nge.predict import image_files
from nge.training import load_train_data

README = Path(__file__).resolve().parents[1] / "README.md"
THREADS = "runtime.threads=1"


def readme_block(heading: str, lang: str) -> str:
    text = README.read_text()
    section = text[text.index(f"## {heading}\n"):]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def used(tmp_path_factory):
    """The README's commands as written (one torch thread added to search and train), plus a
    barely trained run whose test accuracy is below 1, in one folder."""
    root = tmp_path_factory.mktemp("use")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        outputs = []
        for line in readme_block("Use the network you found", "bash").strip().splitlines():
            argv = shlex.split(line, comments=True)
            assert argv[0] == "nge"
            argv = argv[1:] + ([THREADS] if argv[1] in ("search", "train") else [])
            rc, out, err = run(argv)
            assert rc == 0, (line, err)
            outputs.append((argv, out, err))
        rc, _, err = run(["train", "--preset", "smoke", "--genotype", "DARTS_V2", "--out", "runs/weak", "train.epochs=1",
                          "train.lr=0.001", "data.name=folder", "data.root=toy", THREADS])
        assert rc == 0, err
        yield root, outputs
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_readme_commands_export_both_formats_and_check_them(used):
    root, outputs = used
    run_dir = root / "runs/toy-train"
    exports = [err for argv, _, err in outputs if argv[0] == "export"]
    assert len(exports) == 2 and all("largest logit difference" in e for e in exports)
    model = load(run_dir)
    assert not model.training and model.net.auxiliary_head is None
    files = image_files([root / "toy/test"])
    for runner in (onnx_runner(run_dir / "model.onnx"), pt2_runner(run_dir / "model.pt2")):
        for batch in (files[:1], files[:4]):
            x = model.preprocess(batch)
            with torch.no_grad():
                want = model(x).numpy()
            got = runner(x.numpy())
            assert got.shape == (len(batch), 3)
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
            assert np.array_equal(got.argmax(1), want.argmax(1))
        assert check(model, runner)[4] <= 1e-4  # the export's own check, batches 1 and 4


@pytest.mark.slow
def test_class_names_and_preprocessing_travel_with_the_exports(used):
    import onnx

    root, _ = used
    run_dir = root / "runs/toy-train"
    model = load(run_dir)
    props = {p.key: json.loads(p.value) for p in onnx.load(str(run_dir / "model.onnx")).metadata_props}
    extra = dict.fromkeys(METADATA_KEYS, "")
    torch.export.load(str(run_dir / "model.pt2"), extra_files=extra)
    for meta in (props, {k: json.loads(v) for k, v in extra.items()}):
        assert meta["nge.classes"] == ["blue", "green", "red"] == list(model.classes)
        assert meta["nge.preprocess"] == model.preprocess.to_dict()
        assert meta["nge.genotype"] == model.genotype.to_dict()


def _predicted(root: Path, model: str) -> list[dict]:
    rc, out, err = run(["predict", model, str(root / "toy/test"), "--json", "--top", "3"])
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("run_name", ["toy-train", "weak"])
def test_predict_gives_pytorch_argmax_and_the_runs_test_accuracy(used, run_name):
    root, outputs = used
    run_dir = root / "runs" / run_name
    model = load(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    for source in ("model.pt", "model.onnx", "model.pt2") if run_name == "toy-train" else ("model.pt",):
        rows = _predicted(root, str(run_dir / source))
        files = image_files([root / "toy/test"])
        assert [r["image"] for r in rows] == [str(f) for f in files] and len(rows) == 12
        with torch.no_grad():
            argmax = model(model.preprocess(files)).argmax(1).tolist()
        assert [r["top"][0]["class"] for r in rows] == [model.classes[k] for k in argmax]
        for r in rows:
            probs = [t["prob"] for t in r["top"]]
            assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-6
        correct = sum(r["top"][0]["class"] == Path(r["image"]).parent.name for r in rows)
        assert correct / len(rows) == summary["final_test_acc"]
    if run_name == "weak":
        assert summary["final_test_acc"] < 1  # so the comparison above can tell classes apart


@pytest.mark.slow
def test_readme_predict_lines(used):
    _, outputs = used
    text = [out for argv, out, _ in outputs if argv[0] == "predict" and "--json" not in argv][0].splitlines()
    assert len(text) == 4 and all(re.fullmatch(r"toy/test/red/\S+\.png: \w+ [01]\.\d{4}, \w+ [01]\.\d{4}", t) for t in text)
    rows = [json.loads(line) for line in [out for argv, out, _ in outputs if "--json" in argv][0].splitlines()]
    assert len(rows) == 12 and all(len(r["top"]) == 3 for r in rows)  # --top 5 clamped to the 3 classes


@pytest.mark.slow
def test_model_pt_preprocessing_is_the_runs_own(used):
    root, _ = used
    model = load(root / "runs/toy-train")
    cfg = load_config(TrainRunConfig, "train", "smoke", {"data": {"name": "folder", "root": str(root / "toy")}})
    assert model.preprocess == load_train_data(cfg, torch.device("cpu")).preprocess
    ckpt = load_checkpoint(root / "runs/toy-train/model.pt")
    assert ckpt["classes"] == ["blue", "green", "red"] and ckpt["preprocess"]["size"] == model.preprocess.size


# ---------------------------------------------------------------------------- refusals


def one_line_error(argv: list[str], fragment: str) -> None:
    rc, out, err = run(argv)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and fragment in err, err


@pytest.mark.slow
def test_refusals_in_one_line_before_any_work(used, tmp_path, monkeypatch):
    root, _ = used
    search, train = root / "runs/toy-search", root / "runs/toy-train"
    for cmd in (["export", str(search)], ["predict", str(search), str(root / "toy/test")]):
        one_line_error(cmd, f"no trained weights; train it first: nge train --genotype {search}")
    one_line_error(["export", str(train)], "already exists: use --force")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # the extra not installed
    one_line_error(["export", str(train), "--out", str(tmp_path / "m.onnx")], "pip install 'nge[onnx]'")
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    one_line_error(["predict", str(train), str(bad)], f"cannot decode image {bad}")
    one_line_error(["predict", str(train), str(tmp_path / "missing.png")], "does not exist")
    one_line_error(["predict", str(train), str(bad), "--top", "0"], "--top must be >= 1")
    old = load_checkpoint(train / "model.pt")  # as nge wrote it before the metadata
    del old["classes"], old["preprocess"]
    save_checkpoint(old, tmp_path / "model.pt")
    for cmd in (["export", str(tmp_path / "model.pt"), "--format", "pt2"], ["predict", str(tmp_path), str(bad)]):
        one_line_error(cmd, "written by an older nge")
    with pytest.raises(NGEError, match="older nge"):
        load(tmp_path)


@pytest.mark.slow
def test_export_check_rejects_a_wrong_export(used):
    root, _ = used
    model = load(root / "runs/toy-train")
    good = pt2_runner(root / "runs/toy-train/model.pt2")
    assert max(check(model, good).values()) <= 1e-4
    with pytest.raises(NGEError, match="differ from PyTorch's"):
        check(model, lambda x: good(x) + 1e-3)


def test_export_check_rejects_a_changed_argmax_within_tolerance():
    from types import SimpleNamespace

    from nge.data.preprocess import Preprocess

    near_tie = torch.tensor([[0.0, 1e-5, -1.0]])
    fake = SimpleNamespace(preprocess=Preprocess("square", 8, 1, (0.5,), (0.25,)))
    fake_model = lambda x: near_tie.expand(len(x), 3)  # noqa: E731
    fake_model.preprocess = fake.preprocess
    assert check(fake_model, lambda x: near_tie.expand(len(x), 3).numpy()) == {1: 0.0, 4: 0.0}
    with pytest.raises(NGEError, match="argmax differs"):
        check(fake_model, lambda x: near_tie[:, [1, 0, 2]].expand(len(x), 3).numpy())


# ---------------------------------------------------------------------------- predict's tensors are the test loader's


def _loader_images(batches) -> torch.Tensor:
    return torch.cat([x for x, _ in batches])


@pytest.mark.parametrize("case", ["memory", "memory-gray", "stream", "imagenet"])
def test_preprocess_builds_the_test_loaders_tensors(tmp_path, monkeypatch, case):
    if case == "imagenet":
        root = write_synthetic_imagefolder(tmp_path / "inet", seed=1, size=(45, 38))
        cfg = load_config(TrainRunConfig, "train", "smoke-imagenet", {"data.root": root, "data.workers": 0})
    else:
        root = write_synthetic_folder(tmp_path / "toy", seed=1, gray=case == "memory-gray")
        if case == "stream":  # nothing fits in memory: streamed by workers, ImageNet's normalisation
            monkeypatch.setattr("nge.data.folder.MEMORY_LIMIT", 0)
        cfg = load_config(TrainRunConfig, "train", "smoke", {"data": {"name": "folder", "root": root, "workers": 0}})
    data = load_train_data(cfg, torch.device("cpu"))
    # the loader's own files where it has them; else the test folder in sorted order, as load_folder reads it
    files = [p for p, _ in data.test.dataset.samples] if case in ("stream", "imagenet") else image_files([root / "test"])
    want = _loader_images(data.test)
    got = data.preprocess(files)
    assert got.shape == want.shape and torch.equal(got, want)
    assert data.preprocess.mode == ("crop" if case == "imagenet" else "square")
    assert data.preprocess.channels == (1 if case == "memory-gray" else 3)
    assert list(data.classes) == sorted(p.name for p in (root / "train").iterdir())


def test_every_data_set_names_its_classes(fmnist_root, cifar10_root):
    from nge.data.preprocess import Preprocess

    sets = (("fashion_mnist", fmnist_root, 28, (0.2860,), (0.3530,)),
            ("cifar10", cifar10_root, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)))
    for name, root, size, mean, std in sets:
        cfg = load_config(TrainRunConfig, "train", "smoke", {"data": {"name": name, "root": root}})
        data = load_train_data(cfg, torch.device("cpu"))
        assert data.classes == CLASS_NAMES[name] and len(data.classes) == 10
        assert data.preprocess == Preprocess("square", size, len(mean), mean, std)
    assert len(CLASS_NAMES["cifar100"]) == 100 == len(set(CLASS_NAMES["cifar100"]))
    synth = load_train_data(load_config(TrainRunConfig, "train", "smoke", {}), torch.device("cpu"))
    assert synth.classes == ("0", "1", "2", "3")


@pytest.mark.slow
def test_an_imagenet_run_exports_in_both_formats(tmp_path):
    """The ImageNet network (its own stem, DARTS_V2's convolutions), crop preprocessing in the files."""
    from nge.export import export

    root = write_synthetic_imagefolder(tmp_path / "inet", seed=2)
    rc, _, err = run(["train", "--preset", "smoke-imagenet", "--genotype", "DARTS_V2", "--out", str(tmp_path / "run"),
                      f"data.root={root}", "data.workers=0", "train.epochs=1", "train.warmup_epochs=0", THREADS,
                      "runtime.progress=false"])
    assert rc == 0, err
    model = load(tmp_path / "run")
    assert model.preprocess.mode == "crop" and model.preprocess.resize == 36 and len(model.classes) == 3
    for fmt in ("onnx", "pt2"):
        result = export(tmp_path / "run", fmt, log=lambda _msg: None)
        assert Path(result["path"]).is_file() and set(result["diffs"]) == {1, 4} and result["max_diff"] <= 1e-4
    rc, out, err = run(["predict", str(tmp_path / "run/model.onnx"), str(root / "val"), "--json"])
    assert rc == 0, err
    files = image_files([root / "val"])
    with torch.no_grad():
        argmax = model(model.preprocess(files)).argmax(1).tolist()
    assert [json.loads(line)["top"][0]["class"] for line in out.splitlines()] == [model.classes[k] for k in argmax]
