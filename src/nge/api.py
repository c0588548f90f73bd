"""nge from Python: `nge.search`, `nge.train` and `nge.load`, with the command line's validation
and errors (NGEError, never SystemExit).

Overrides are a dict of dotted keys or sections ({"data.root": "toy"} or {"data": {"root": "toy"}}),
or keyword arguments named by a section (data={"root": "toy"}); their values keep their Python types.
Each call restores the torch thread count and the RNG states (Python, numpy, torch, and CUDA's where it
was initialised before the call) it changed. `log=False` prints nothing (no run log, no progress, no
warnings): what the calling thread writes to stdout and stderr is dropped, other threads' output passes.
A callable receives the log lines.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nge.config import SearchRunConfig, TrainRunConfig, load_config, preset_name
from nge.engine import default_run_dir, rng_state, set_rng_state
from nge.errors import NGEError
from nge.inference import Classifier, load
from nge.space import Genotype
from nge.spaces import genotype_from_dict

Log = bool | Callable[[str], None]


@dataclass
class Result:
    """A finished run: the genotype it searched or trained, its summary.json, its directory."""

    genotype: Genotype
    summary: dict
    run_dir: Path

    def load(self) -> Classifier:
        """The trained network (training runs only; see `nge.load`)."""
        return load(self.run_dir)


def _overrides(overrides: dict[str, Any] | None, sections: dict[str, Any]) -> dict[str, Any]:
    if overrides is not None and not isinstance(overrides, dict):
        raise NGEError(f"overrides must be a dict of dotted keys, e.g. {{'search.epochs': 1}}, not {type(overrides).__name__}")
    merged = dict(overrides or {})
    for name, value in sections.items():
        if not isinstance(value, dict):
            raise NGEError(f"keyword argument {name}= must be a dict of that section's keys (e.g. data={{'root': 'DIR'}})")
        if any(k == name or k.startswith(name + ".") for k in merged):
            raise NGEError(f"the section {name} is given both in overrides and as a keyword argument")
        merged[name] = value
    return merged


class _Muted:
    """A stand-in for sys.stdout or sys.stderr that drops what the muted threads write (keeping nothing)
    and passes every other thread's writes to the stream it replaced."""

    def __init__(self, stream) -> None:
        self.stream, self.threads = stream, {}  # thread id -> nesting depth

    def write(self, text: str) -> int:
        return len(text) if threading.get_ident() in self.threads else self.stream.write(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if threading.get_ident() not in self.threads:
            self.stream.flush()

    def __getattr__(self, name: str):  # encoding, isatty, fileno, ...: the replaced stream's
        return getattr(self.stream, name)


_MUTE_LOCK = threading.Lock()


@contextlib.contextmanager
def _mute_this_thread() -> Iterator[None]:
    """While inside, this thread's writes to sys.stdout and sys.stderr are dropped; nested and concurrent
    uses share one stand-in per stream, which goes when its last muted thread leaves."""
    me, muted = threading.get_ident(), []
    with _MUTE_LOCK:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _Muted):
                stream = _Muted(stream)
                setattr(sys, name, stream)
            stream.threads[me] = stream.threads.get(me, 0) + 1
            muted.append((name, stream))
    try:
        yield
    finally:
        with _MUTE_LOCK:
            for name, stream in muted:
                stream.threads[me] -= 1
                if not stream.threads[me]:
                    del stream.threads[me]
                if not stream.threads and getattr(sys, name) is stream:  # else someone replaced it since: left alone
                    setattr(sys, name, stream.stream)


@contextlib.contextmanager
def _contained(log: Log) -> Iterator[Callable[[str], None]]:
    """The log function to use; restores threads and RNG states afterwards, and with log=False
    drops whatever this thread writes to stdout and stderr meanwhile."""
    threads, rng = torch.get_num_threads(), rng_state()
    quiet = log is False or log is None
    try:
        with _mute_this_thread() if quiet else contextlib.nullcontext():
            if quiet:
                yield lambda _msg: None
            else:
                yield log if callable(log) else (lambda msg: print(msg, file=sys.stderr, flush=True))
    finally:
        torch.set_num_threads(threads)
        set_rng_state(rng)


def _out(out: str | Path | None, kind: str, preset: str) -> Path:
    return Path(out).expanduser() if out is not None else default_run_dir(kind, preset_name(preset))


def search(preset: str = "quick", out: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
           force: bool = False, resume: bool = False, log: Log = True, **sections: dict[str, Any]) -> Result | None:
    """`nge search`: searches a cell with `preset` (a name or a FILE.yaml) and writes the run
    directory `out` (default runs/search-PRESET-TIME)."""
    from nge.searching import run_search

    cfg = load_config(SearchRunConfig, "search", preset, _overrides(overrides, sections))
    if log is False or log is None:
        cfg.runtime.progress = False
    path = _out(out, "search", preset)
    with _contained(log) as write:
        summary = run_search(cfg, path, force=force, resume=resume, log=write)
    if summary is None:  # under torchrun, in all but the first process
        return None
    return Result(genotype_from_dict(summary["genotype"]), summary, path)


def train(genotype: Genotype | str | Path, preset: str = "quick", out: str | Path | None = None,
          overrides: dict[str, Any] | None = None, *, force: bool = False, resume: bool = False, log: Log = True,
          **sections: dict[str, Any]) -> Result | None:
    """`nge train`: trains `genotype` (a Genotype, a built-in name, random:SEED, a genotype.json or a
    search run directory) from scratch and writes the run directory `out` (default runs/train-PRESET-TIME)."""
    from nge.training import run_train

    if not isinstance(genotype, (Genotype, str, Path)):
        raise NGEError(f"genotype must be a Genotype, a name or a path, not {type(genotype).__name__}")
    cfg = load_config(TrainRunConfig, "train", preset, _overrides(overrides, sections))
    if log is False or log is None:
        cfg.runtime.progress = False
    path = _out(out, "train", preset)
    spec = genotype if isinstance(genotype, Genotype) else str(genotype)
    with _contained(log) as write:
        summary = run_train(cfg, spec, path, force=force, resume=resume, log=write)
    if summary is None:  # under torchrun, in all but the first process
        return None
    return Result(genotype_from_dict(summary["genotype"]), summary, path)


def fit(data: str | Path, time: str | float | None = None, out: str | Path | None = None, *, space: str | None = None,
        preset: str | None = None, search_share: float | None = None, overrides: dict[str, Any] | None = None,
        force: bool = False, resume: bool = False, log: Log = True) -> Classifier:
    """`nge fit`: searches and trains a network on `data` (an image folder or a data set name) within
    `time` ("30m", "1h30m", or seconds), exports and checks it, writes a report in `out` (default
    runs/fit-PRESET-TIME), and returns the trained network (`nge.load(out)`)."""
    from nge.fitting import run_fit

    if overrides is not None and not isinstance(overrides, dict):
        raise NGEError(f"overrides must be a dict of dotted keys, e.g. {{'model.C': 16}}, not {type(overrides).__name__}")
    items = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in (overrides or {}).items()]
    path = Path(out).expanduser() if out is not None else None
    with _contained(log) as write:
        done = run_fit(data, time, path, space=space, preset=preset, search_share=search_share, overrides=items,
                       force=force, resume=resume, log=write)
    return load(done)


__all__ = ["Result", "fit", "load", "search", "train"]
