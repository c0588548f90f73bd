"""Run directories and checkpoints: atomic writes, safe loading, and the resume check.

A run directory is obtained one way, `RunDir.open(path, force, resume)`; `RunDir.check` runs the
same checks early, before any data is read.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from nge.engine.runtime import is_main
from nge.errors import NGEError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, rename: a crash leaves the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: no temporary file left behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(obj: dict, path: Path) -> None:

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
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise NGEError(f"{path} is not a readable nge checkpoint ({first[:160]})") from None
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
    MARKERS = ("config.yaml", "checkpoint.pt", "metrics.jsonl", "summary.json", "ablation.yaml")

    def __init__(self, path: Path):
        self.path = Path(path)

    @staticmethod
    def check(path: Path, force: bool, resume: bool, resumes_from: str = CHECKPOINT) -> None:
        """Fail early, before data is read, if the run directory cannot be used as asked. A run
        resumes from the file `resumes_from` (a checkpoint, or an ablation's plan)."""
        path = Path(path)
        if force and resume:
            raise NGEError("--force and --resume exclude each other")
        if resume:
            if not (path / resumes_from).is_file():
                raise NGEError(f"cannot resume: no {resumes_from} in {path}")
        elif path.exists() and (not path.is_dir() or any(path.iterdir())) and not force:
            raise NGEError(f"run directory {path} already exists: use --resume to continue it or --force to replace it")

    @classmethod
    def open(cls, path: Path, force: bool, resume: bool, resumes_from: str = CHECKPOINT) -> RunDir:
        """Checks as `check`, then (main process only; under torchrun the others only read) empties
        the folder if `force` and creates it."""
        path = Path(path)
        if not is_main():  # the first process checks and creates it (the others ran `check` earlier)
            return cls(path)
        cls.check(path, force, resume, resumes_from)
        if force and path.exists():
            if not path.is_dir() or not any((path / m).exists() for m in cls.MARKERS) and any(path.iterdir()):
                raise NGEError(f"--force refuses to delete {path}: it does not look like an nge run directory")
            shutil.rmtree(path)
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


def check_resume(path: Path, current: dict, may_differ: tuple[str, ...], defaults: dict | None = None) -> int:
    """Before any work: the run's checkpoint must load and its configuration match `current`
    (`defaults`: see `check_resume_config`). Returns the number of epochs the checkpoint has finished."""
    ckpt = load_checkpoint(Path(path) / RunDir.CHECKPOINT)
    if "config" not in ckpt:
        raise NGEError(f"cannot resume {path}: its checkpoint records no configuration to check against")
    check_resume_config(ckpt["config"], current, may_differ, defaults)
    return int(ckpt["epoch"])


def resume_checked(config: dict, may_differ: tuple[str, ...]) -> dict:
    """A configuration as dotted keys, without the `may_differ` keys and sections: what a resume compares."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            out.update(flat(v, key + ".") if isinstance(v, dict) else {key: v})
        return out

    return {k: v for k, v in flat(config).items() if not any(k == m or k.startswith(m + ".") for m in may_differ)}


def check_resume_config(saved: dict, current: dict, may_differ: tuple[str, ...], defaults: dict | None = None,
                        what: str = "resume") -> None:
    """A run resumes only with the configuration it started with (`may_differ` keys excepted).
    `defaults` ({dotted key: schema default}): a key that one configuration lacks (one of another nge
    version) is read as its default there; a key without a default is foreign and refused. `what`: the
    action the messages name."""
    a, b = resume_checked(saved, may_differ), resume_checked(current, may_differ)
    unsaved = {k for k in set(b) - set(a) if k in (defaults or {})}  # read as their defaults
    for side in (a, b):
        side.update({k: defaults[k] for k in (set(a) | set(b)) - set(side) if k in (defaults or {})})
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    foreign = [k for k in differ if k not in a or k not in b]
    if foreign:
        raise NGEError(f"cannot {what}: the run was started by an nge version with other settings ({', '.join(foreign[:4])}); "
                       "start a new run")
    if differ:
        values = ", ".join(f"{k} (run: {a[k]}{', the default: not in its config' if k in unsaved else ''}, now: {b[k]})"
                           for k in differ[:6])
        runs = " ".join(f"{k}={a[k]}" for k in differ[:6])
        raise NGEError(f"cannot {what}: the configuration differs from the run's in {values}; {what} with the same "
                       f"preset and overrides, or pass the run's values ({runs})")
