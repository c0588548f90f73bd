"""`nge predict`: class names and probabilities for image files, or folders of them, from a training
run, its model.pt, or a file of `nge export` (.onnx, .pt2). Every image goes through the run's own
test-time preprocessing (`Preprocess`, carried by the model file)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nge.data.preprocess import Preprocess
from nge.data.transforms import IMAGE_EXTENSIONS
from nge.errors import NGEError
from nge.export import FORMATS, METADATA_KEYS, RUNNERS, RUNTIMES, failing, require_onnx
from nge.inference import load

BATCH = 32  # images decoded and run at a time


@dataclass
class Predictor:
    """Logits of preprocessed batches, whatever holds the network."""

    classes: tuple[str, ...]
    preprocess: Preprocess
    logits: Callable[[torch.Tensor], np.ndarray]
    source: Path


def _from_metadata(meta: dict[str, str], path: Path) -> tuple[tuple[str, ...], Preprocess]:
    missing = [k for k in ("nge.classes", "nge.preprocess") if not meta.get(k)]
    if missing:
        raise NGEError(f"{path} has no {' or '.join(missing)} metadata: not a file of nge export")
    try:
        classes = tuple(str(c) for c in json.loads(meta["nge.classes"]))
        pre = json.loads(meta["nge.preprocess"])
    except (ValueError, TypeError) as e:
        raise NGEError(f"{path}: unreadable nge metadata ({e})") from None
    return classes, Preprocess.from_dict(pre)


def open_model(model: str | Path) -> Predictor:
    """A training run directory, its model.pt, or an exported .onnx or .pt2 file."""
    path = Path(model).expanduser()
    if path.suffix in FORMATS.values():
        if not path.is_file():
            raise NGEError(f"{path} does not exist")
        if path.suffix == ".onnx":
            require_onnx()
            import onnx

            try:
                meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            except Exception as e:  # not an ONNX file
                raise NGEError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
            fmt = "onnx"
        else:
            meta = dict.fromkeys(METADATA_KEYS, "")
            try:
                torch.export.load(str(path), extra_files=meta)
            except Exception as e:
                raise NGEError(f"{path} is not a readable torch.export file ({type(e).__name__})") from None
            fmt = "pt2"
        classes, pre = _from_metadata(meta, path)
        with failing(f"{RUNTIMES[fmt]} could not load {path}"):
            run = RUNNERS[fmt](path)

        def exported(x: torch.Tensor) -> np.ndarray:
            with failing(f"{RUNTIMES[fmt]} failed to run {path}"):
                return np.asarray(run(x.numpy()))

        return Predictor(classes, pre, exported, path)
    net = load(path)

    def logits(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return net(x).numpy()

    return Predictor(net.classes, net.preprocess, logits, net.path)


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively for .jpeg, .jpg and .png, sorted."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise NGEError(f"{p} holds no .jpeg/.jpg/.png images")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise NGEError(f"{p} does not exist")
    return files


def predict(model: Predictor, inputs: Sequence[str | Path], top: int = 5) -> Iterator[dict]:
    """Per image, in order: {"image", "top": [{"class", "prob"}, ...]}, most probable first. A file
    that cannot be decoded stops it with a one-line NGEError naming the file."""
    if top < 1:
        raise NGEError(f"--top must be >= 1, got {top}")
    files = image_files(inputs)
    k = min(top, len(model.classes))
    for start in range(0, len(files), BATCH):
        chunk = files[start:start + BATCH]
        logits = model.logits(model.preprocess(chunk))
        if start == 0 and (logits.ndim != 2 or logits.shape[1] != len(model.classes)):  # one network: checked once
            raise NGEError(f"{model.source} gives logits of shape {tuple(logits.shape)} for {len(chunk)} image(s) but names "
                           f"{len(model.classes)} classes: its class names do not fit its network")
        probs = torch.from_numpy(logits).double().softmax(1)
        p, idx = probs.topk(k, dim=1)
        for f, pi, ki in zip(chunk, p.tolist(), idx.tolist(), strict=True):
            yield {"image": str(f), "top": [{"class": model.classes[j], "prob": q} for q, j in zip(pi, ki, strict=True)]}


def format_line(row: dict) -> str:
    return f"{row['image']}: " + ", ".join(f"{t['class']} {t['prob']:.4f}" for t in row["top"])
