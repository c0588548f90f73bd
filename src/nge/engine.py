"""The training engine shared by search and evaluation: devices, seeding, the batch loop with its
progress bar and meters, the epoch loop with checkpoint/resume, run directories and logging.

A job plugs in as an `EpochTask`: `run_epoch(epoch) -> metrics` plus `state_dict` /
`load_state_dict`. `fit` owns everything around it, once, for every job.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from nge.errors import NGEError

# ---------------------------------------------------------------------------- runtime


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NGEError("runtime.device=cuda but no CUDA device is available (use runtime.device=cpu)")
    return torch.device(name)


def setup_runtime(seed: int, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast where asked for; a no-op context otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {  # plain types and tensors only, so weights_only loading accepts it
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cosine_lr(base: float, final: float, epoch: int, epochs: int) -> float:
    """Cosine decay from `base` at epoch 0 towards `final` (reached after the last epoch)."""
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * epoch / epochs))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of `module` take no gradient inside the block (saves their backward work)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------- batch loop


class Meter:
    """Sums loss and correct predictions as device tensors; reads them back once per epoch."""

    def __init__(self) -> None:
        self.loss = 0.0
        self.correct = 0.0
        self.n = 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = y.shape[0]
        self.loss = self.loss + loss.detach().float() * n
        self.correct = self.correct + (logits.detach().argmax(1) == y).sum()
        self.n += n

    def result(self, prefix: str) -> dict[str, float]:
        if self.n == 0:
            return {}
        return {f"{prefix}_loss": float(self.loss) / self.n, f"{prefix}_acc": float(self.correct) / self.n}


def progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], batches: Iterable, total: int, desc: str,
             show: bool, prefix: str) -> dict[str, float]:
    """Loss and accuracy of `forward` over `batches` (the caller puts the model in eval mode)."""
    meter = Meter()
    for x, y in progress(batches, total, desc, show):
        logits = forward(x).float()
        meter.update(torch.nn.functional.cross_entropy(logits, y), logits, y)
    return meter.result(prefix)


def sgd_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], grad_clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


# ---------------------------------------------------------------------------- files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, rename: a crash leaves the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(obj: dict, path: Path) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """Load with weights_only=True: a checkpoint can hold tensors and plain data, never code."""
    path = Path(path)
    if not path.is_file():
        raise NGEError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or holds objects weights_only refuses
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NGEError(f"{path} is not a readable nge checkpoint ({first[:200]})") from None
    if not isinstance(obj, dict) or "epoch" not in obj or "task" not in obj:
        raise NGEError(f"{path} is not an nge checkpoint (missing epoch/task)")
    return obj


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x


def default_run_dir(kind: str, preset: str) -> Path:
    return Path("runs") / f"{kind}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunDir:
    """A run's output folder. Never overwrites an existing run unless asked to (`--force`)."""

    CHECKPOINT = "checkpoint.pt"

    def __init__(self, path: Path):
        self.path = Path(path)

    @staticmethod
    def check(path: Path, force: bool, resume: bool) -> None:
        """Fail early, before data is read, if the run directory cannot be used as asked."""
        path = Path(path)
        if force and resume:
            raise NGEError("--force and --resume exclude each other")
        exists = path.exists() and (not path.is_dir() or any(path.iterdir()))
        if resume:
            if not (path / RunDir.CHECKPOINT).is_file():
                raise NGEError(f"cannot resume: no {RunDir.CHECKPOINT} in {path}")
        elif exists and not force:
            raise NGEError(f"run directory {path} already exists: use --resume to continue it or --force to replace it")

    @classmethod
    def create(cls, path: Path, force: bool, resume: bool) -> RunDir:
        cls.check(path, force, resume)
        path = Path(path)
        if force and path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.file(name), json.dumps(_jsonable(obj), indent=2) + "\n")

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.file(name), text)

    def write_jsonl(self, name: str, rows: list[dict]) -> None:
        atomic_write_text(self.file(name), "".join(json.dumps(_jsonable(r)) + "\n" for r in rows))


# ---------------------------------------------------------------------------- epoch loop


class EpochTask(Protocol):
    def run_epoch(self, epoch: int) -> dict[str, float]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def fit(
    task: EpochTask,
    epochs: int,
    run: RunDir,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    extra: dict | None = None,
) -> list[dict]:
    """Run epochs [start, epochs), checkpointing after each; returns all metrics rows.

    The checkpoint holds the task state, the metrics so far and the RNG states, so a resumed run
    continues exactly where the last completed epoch left it.
    """
    ckpt_path = run.file(RunDir.CHECKPOINT)
    history: list[dict] = []
    start = 0
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        task.load_state_dict(ckpt["task"])
        history = list(ckpt.get("metrics", []))
        set_rng_state(ckpt["rng"])
        start = int(ckpt["epoch"])
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, **task.run_epoch(epoch)}
        row["seconds"] = round(time.perf_counter() - t0, 3)
        history.append(row)
        save_checkpoint(
            {"epoch": epoch + 1, "task": task.state_dict(), "metrics": history, "rng": rng_state(), **(extra or {})},
            ckpt_path,
        )
        run.write_jsonl("metrics.jsonl", history)
        if log:
            log(_format_row(row, epochs))
    return history


def _format_row(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for k, v in row.items():
        if k != "epoch" and isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
    return "  ".join(parts)
