"""`nge export`: a training run's inference network as an ONNX file (torch.onnx, the optional extra
nge[onnx]) or a torch.export program (.pt2), with a dynamic batch axis. Class names and the
preprocessing travel in the file: ONNX metadata_props and the pt2 file's extra files, the keys of
`METADATA_KEYS`, each a JSON value. Every export is checked before it is kept: the exported file,
run by onnxruntime or as the loaded program, must give PyTorch's logits (within ATOL + RTOL |logit|)
and argmax on a batch of 1 and a batch of 4.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from nge import __version__
from nge.errors import NGEError
from nge.inference import Classifier, load, model_file

FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}
ATOL = RTOL = 1e-4
CHECK_BATCHES = (1, 4)
METADATA_KEYS = ("nge.classes", "nge.preprocess", "nge.genotype", "nge.version")
INPUT, OUTPUT = "images", "logits"


def metadata(model: Classifier) -> dict[str, str]:
    """The exported file's metadata: METADATA_KEYS -> JSON text."""
    m = model.metadata()
    return {"nge.classes": json.dumps(m["classes"]), "nge.preprocess": json.dumps(m["preprocess"]),
            "nge.genotype": json.dumps(m["genotype"]), "nge.version": json.dumps(__version__)}


def require_onnx() -> None:
    """The ONNX exporter's and the checker's packages, or a one-line error naming the extra."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise NGEError(f"ONNX needs {', '.join(missing)}: pip install 'nge[onnx]'")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx's notices (optional torchvision ops, deprecations) are not the user's concern."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _example(model: Classifier, batch: int, seed: int) -> torch.Tensor:
    p = model.preprocess
    return torch.randn(batch, p.channels, p.size, p.size, generator=torch.Generator().manual_seed(seed))


def _batch_dim() -> dict:
    return {"x": {0: torch.export.Dim("batch", min=1)}}


def _write_onnx(model: Classifier, path: Path) -> None:
    with _quiet_exporter():
        program = torch.onnx.export(model, (_example(model, 2, 0),), dynamic_shapes=_batch_dim(), dynamo=True,
                                    input_names=[INPUT], output_names=[OUTPUT], verbose=False)
        program.model.metadata_props.update(metadata(model))
        program.save(str(path))


def _write_pt2(model: Classifier, path: Path) -> None:
    program = torch.export.export(model, (_example(model, 2, 0),), dynamic_shapes=_batch_dim())
    torch.export.save(program, str(path), extra_files=metadata(model))


def onnx_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def pt2_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    module = torch.export.load(str(path)).module()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


RUNNERS = {"onnx": onnx_runner, "pt2": pt2_runner}
WRITERS = {"onnx": _write_onnx, "pt2": _write_pt2}
RUNTIMES = {"onnx": "onnxruntime", "pt2": "torch.export"}


def first_line(e: BaseException, limit: int = 200) -> str:
    """An exception's first non-empty line, with its type, at most `limit` characters."""
    line = next((x.strip() for x in str(e).splitlines() if x.strip()), "")
    text = f"{type(e).__name__}: {line}" if line else type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def failing(what: str) -> Iterator[None]:
    """Any exception inside (an exporter's, a runtime's) as a one-line NGEError: `what` and its first line."""
    try:
        yield
    except NGEError:
        raise
    except Exception as e:  # noqa: BLE001 - the exporters and runtimes raise many kinds
        raise NGEError(f"{what} ({first_line(e)})") from None


def check(model: Classifier, run: Callable[[np.ndarray], np.ndarray]) -> dict[int, float]:
    """Largest |exported - PyTorch| logit per checked batch size; an NGEError if any is over
    ATOL + RTOL |logit| or any argmax differs."""
    diffs = {}
    for batch in CHECK_BATCHES:
        x = _example(model, batch, 1 + batch)
        with torch.no_grad():
            want = model(x).numpy()
        with failing(f"the export failed to run on a batch of {batch}"):
            got = np.asarray(run(x.numpy()))
        if got.shape != want.shape:
            raise NGEError(f"the export gives logits of shape {got.shape} for a batch of {batch}, PyTorch {want.shape}")
        diffs[batch] = float(np.abs(got - want).max())
        if not np.all(np.abs(got - want) <= ATOL + RTOL * np.abs(want)):
            raise NGEError(f"the export's logits differ from PyTorch's by up to {diffs[batch]:.3g} on a batch of {batch} "
                           f"(allowed {ATOL:g} + {RTOL:g} |logit|); not written")
        if not np.array_equal(got.argmax(1), want.argmax(1)):
            raise NGEError(f"the export's argmax differs from PyTorch's on a batch of {batch}; not written")
    return diffs


def export(run: str | Path, fmt: str = "onnx", out: str | Path | None = None, force: bool = False,
           log: Callable[[str], None] = print) -> dict:
    """Exports the trained network of `run` (a training run directory or its model.pt) to `out`
    (default RUN/model.onnx or RUN/model.pt2), checks it, and returns {"path", "format", "max_diff",
    "diffs"}. Refusals (a search run, a missing extra, an existing file without `force`) come
    before any work."""
    if fmt not in FORMATS:
        raise NGEError(f"unknown export format {fmt!r} (onnx or pt2)")
    source = model_file(run)
    if fmt == "onnx":
        require_onnx()
    path = Path(out).expanduser() if out is not None else source.parent / f"model{FORMATS[fmt]}"
    if path.is_dir():
        raise NGEError(f"{path} is a directory; --out names the file to write")
    if path.suffix != FORMATS[fmt]:  # nge predict tells the formats by their suffix
        other = next((f" or give --format {f}" for f, suffix in FORMATS.items() if suffix == path.suffix), "")
        raise NGEError(f"--out {path} does not end in {FORMATS[fmt]}, which --format {fmt} writes; name a {FORMATS[fmt]} "
                       f"file{other}")
    if path.exists() and not force:
        raise NGEError(f"{path} already exists: use --force to replace it")
    if not path.parent.is_dir():
        raise NGEError(f"cannot write {path}: no folder {path.parent}")
    model = load(source)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # torch.export wants the .pt2 suffix
    try:
        with failing(f"the {fmt} exporter failed"):
            WRITERS[fmt](model, tmp)
        with failing(f"{RUNTIMES[fmt]} could not load the export"):
            run_export = RUNNERS[fmt](tmp)
        diffs = check(model, run_export)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    worst = max(diffs.values())
    log(f"nge export: {source} -> {path} ({fmt}, {path.stat().st_size:,} bytes, {len(model.classes)} classes); "
        f"checked against PyTorch on batches of {' and '.join(map(str, diffs))}: largest logit difference {worst:.3g}")
    return {"path": str(path), "format": fmt, "max_diff": worst, "diffs": diffs}
