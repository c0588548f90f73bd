"""Every failure in one line (issue 33, item 2): hostile inputs driven through `nge.cli.main` in-process
each give a non-zero exit and exactly one line on stderr, never a traceback; the same failures are
NGEError from Python."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from nge import export as export_mod
from nge.cli import main
from nge.config import EvalNetConfig
from nge.data.preprocess import Preprocess
from nge.engine import load_checkpoint, save_checkpoint
from nge.errors import NGEError
from nge.evalnet import build_network
from nge.genotypes import resolve_genotype
from nge.inference import _misfit, load
from nge.predict import Predictor, predict

CONFIRM = Path(__file__).resolve().parents[1] / "docs" / "results" / "confirm" / "ablation.csv"


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return rc, err.getvalue()


def _model_pt(path: Path) -> Path:
    """A tiny but real model.pt, as nge train writes it (3 classes, 1 channel, 8 x 8)."""
    genotype = resolve_genotype("DARTS_V2")
    torch.manual_seed(0)
    net = build_network(EvalNetConfig(C=4, layers=3, auxiliary=False), genotype, 1, 3, imagenet=False)
    path.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"epoch": 1, "task": {"net": net.state_dict()}, "genotype": genotype.to_dict(), "in_channels": 1,
                     "num_classes": 3, "classes": ["a", "b", "c"],
                     "preprocess": Preprocess("square", 8, 1, (0.5,), (0.25,)).to_dict(),
                     "config": {"model": {"C": 4, "layers": 3, "auxiliary": False}, "data": {"name": "folder"}}},
                    path / "model.pt")
    return path / "model.pt"


def _bad_csv(path: Path, column: str, value: str) -> Path:
    """The first three lines of the committed confirm table, the second's `column` set to `value`."""
    with open(CONFIRM, newline="") as f:
        lines = list(csv.DictReader(f))[:3]
    lines[1][column] = value
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(lines[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(lines)
    return path


def test_hostile_inputs_fail_in_one_line_each(tmp_path):
    rows = tmp_path / "rows.yaml"
    rows.write_text("search_preset: smoke\nrows: {name: x}\n")
    row_seeds = tmp_path / "row_seeds.yaml"
    row_seeds.write_text("search_preset: smoke\ntrainings:\n  - name: a\n    preset: smoke\n    row_seeds: [1]\n")
    named_search = tmp_path / "named_search.yaml"
    named_search.write_text("search_preset: smoke\nrows: [{name: random}]\ntrainings: [{name: search, preset: smoke}]\n")
    model = _model_pt(tmp_path / "run")
    misfit = tmp_path / "misfit"
    misfit.mkdir()
    ckpt = load_checkpoint(model)
    ckpt["task"]["net"]["extra.weight"] = torch.zeros(1)
    del ckpt["task"]["net"]["classifier.bias"]
    save_checkpoint(ckpt, misfit / "model.pt")
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    cases = {
        "model.rates must be a list": ["segment", "model.rates.0=3", "--out", str(tmp_path / "o1")],
        "rows must be a list": ["ablate", "--preset", str(rows), "--out", str(tmp_path / "o2")],
        "trainings[0].row_seeds must be a mapping": ["ablate", "--preset", str(row_seeds), "--out", str(tmp_path / "o3")],
        "may not be named 'search'": ["ablate", "--preset", str(named_search), "--out", str(tmp_path / "o4")],
        "line 3: the genotype is empty": ["ablate", "--preset", "confirm", "--tabulate",
                                          str(_bad_csv(tmp_path / "g.csv", "genotype", ""))],
        "line 3: genotype is not a cell's JSON": ["ablate", "--preset", "confirm", "--tabulate",
                                                  str(_bad_csv(tmp_path / "j.csv", "genotype", '{"normal": 3}'))],
        "line 3: seed must be a whole number >= 0, got 'x'": ["ablate", "--preset", "confirm", "--tabulate",
                                                              str(_bad_csv(tmp_path / "s.csv", "seed", "x"))],
        "line 3: train_seed must be a whole number >= 0, got ''": [
            "ablate", "--preset", "confirm", "--reuse", str(_bad_csv(tmp_path / "t.csv", "train_seed", "")),
            "--out", str(tmp_path / "o5")],
        "line 3: train_seconds[proxy] must be a finite number or empty, got 'soon'": [
            "ablate", "--preset", "confirm", "--tabulate", str(_bad_csv(tmp_path / "w.csv", "train_seconds[proxy]", "soon"))],
        "line 3: search_seconds must be a finite number or empty, got 'inf'": [
            "ablate", "--preset", "confirm", "--tabulate", str(_bad_csv(tmp_path / "i.csv", "search_seconds", "inf"))],
        "does not end in .onnx, which --format onnx writes; name a .onnx file or give --format pt2": [
            "export", str(model), "--format", "onnx", "--out", str(tmp_path / "m.pt2")],
        "does not end in .pt2": ["export", str(model), "--format", "pt2", "--out", str(tmp_path / "m")],
        "does not fit its own network: missing classifier.bias; unexpected extra.weight": [
            "predict", str(misfit), str(image)],
    }
    for fragment, argv in cases.items():
        rc, err = _run(argv)
        assert rc != 0 and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert err.startswith("nge: error: ") and fragment in err, (fragment, err)
    assert not any((tmp_path / f"o{k}").exists() for k in range(1, 6))  # refused before any run directory
    assert not (tmp_path / "m.pt2").exists() and not (tmp_path / "m").exists()  # no export file either


def test_a_state_dict_mismatch_names_the_keys_not_torch_s_header(tmp_path):
    model = _model_pt(tmp_path / "run")
    assert load(model).classes == ("a", "b", "c")  # the real file loads
    ckpt = load_checkpoint(model)
    state = ckpt["task"]["net"]
    for k in [k for k in state if k.startswith("stack.cells.1.")]:
        del state[k]
    state["classifier.weight"] = torch.zeros(5, state["classifier.weight"].shape[1])
    save_checkpoint(ckpt, tmp_path / "model.pt")
    with pytest.raises(NGEError) as e:
        load(tmp_path / "model.pt")
    msg = str(e.value)
    assert "\n" not in msg and "Error(s) in loading state_dict" not in msg and len(msg) < 400
    assert "missing stack.cells.1." in msg and "more)" in msg and "classifier.weight (5, " in msg
    assert _misfit({"a": torch.zeros(2)}, {"a": torch.zeros(2)}) == ""
    assert _misfit({"a": torch.zeros(2), "b": torch.zeros(1)}, {"a": torch.zeros(3), "c": torch.zeros(1)}) == \
        "missing b; unexpected c; other shapes: a (3,) for (2,)"


def test_exporter_and_runtime_failures_are_one_line_errors_with_their_first_line(tmp_path, monkeypatch):
    model = _model_pt(tmp_path / "run")

    def boom(*_args):
        raise RuntimeError("the exporter broke\n  at some internal frame\n  and more")

    monkeypatch.setitem(export_mod.WRITERS, "pt2", boom)
    with pytest.raises(NGEError, match=r"^the pt2 exporter failed \(RuntimeError: the exporter broke\)$"):
        export_mod.export(model, "pt2", log=lambda _m: None)
    monkeypatch.setitem(export_mod.WRITERS, "pt2", lambda _m, path: Path(path).write_bytes(b"x"))
    monkeypatch.setitem(export_mod.RUNNERS, "pt2", boom)
    with pytest.raises(NGEError, match=r"^torch.export could not load the export \(RuntimeError: the exporter broke\)$"):
        export_mod.export(model, "pt2", log=lambda _m: None)
    monkeypatch.setitem(export_mod.RUNNERS, "pt2", lambda _path: lambda x: (_ for _ in ()).throw(ValueError("bad input")))
    with pytest.raises(NGEError, match=r"^the export failed to run on a batch of 1 \(ValueError: bad input\)$"):
        export_mod.export(model, "pt2", log=lambda _m: None)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["model.pt"]  # nothing left behind
    long = export_mod.first_line(RuntimeError("x" * 500))
    assert len(long) == 200 and long.endswith("...")


def test_predict_checks_the_class_count_against_the_logits_once(tmp_path):
    images = []
    for k in range(40):  # two batches of 32
        images.append(tmp_path / f"{k}.png")
        images[-1].write_bytes(b"")
    calls = []

    def logits(x: torch.Tensor) -> np.ndarray:
        calls.append(len(x))
        return np.zeros((len(x), 3), dtype=np.float32)

    fake = Predictor(("a", "b"), lambda files: torch.zeros(len(files), 1, 8, 8), logits, tmp_path / "m.onnx")
    with pytest.raises(NGEError, match=r"m.onnx gives logits of shape \(32, 3\) for 32 image\(s\) but names 2 classes"):
        list(predict(fake, [tmp_path]))
    assert calls == [32]
    fine = Predictor(("a", "b", "c"), fake.preprocess, logits, fake.source)
    assert len(list(predict(fine, [tmp_path]))) == 40
