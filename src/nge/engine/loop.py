"""The loop: meters, the optimiser step, and `fit`, the epoch loop every job runs through.

A job plugs in as an `EpochTask`: `begin_epoch(epoch) -> phases` (the batch passes of the epoch),
`end_epoch(epoch, meters) -> metrics`, `state_dict` / `load_state_dict`. `fit` owns everything
around them, once, for every job: progress, checkpoints, resume, signals, non-finite losses.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from nge.engine.rundir import RunDir, load_checkpoint, save_checkpoint
from nge.engine.runtime import all_reduce_sum, is_main, rng_state, set_rng_state, world
from nge.errors import NGEError

# ---------------------------------------------------------------------------- steps and meters


class Meter:
    """Sums loss and correct predictions (top-1, and top-5 if asked) as device tensors; reads them
    back once per epoch."""

    def __init__(self, top5: bool = False) -> None:
        self.loss = 0.0
        self.correct = 0.0
        self.correct5 = 0.0 if top5 else None
        self.n = 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        logits = logits.detach()
        self.add(loss, (logits.argmax(1) == y).sum(), y.shape[0])
        if self.correct5 is not None:
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            self.correct5 = self.correct5 + (top == y[:, None]).any(1).sum()

    def add(self, loss: torch.Tensor, correct: torch.Tensor, n: int | torch.Tensor) -> None:
        """A mean loss over n predictions of which `correct` were right (n may stay on the device)."""
        self.loss = self.loss + loss.detach().float() * n
        self.correct = self.correct + correct
        self.n += n

    def state_dict(self) -> dict:
        state = {"loss": torch.as_tensor(self.loss).cpu(), "correct": torch.as_tensor(self.correct).cpu(), "n": self.n}
        if self.correct5 is not None:
            state["correct5"] = torch.as_tensor(self.correct5).cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.loss, self.correct, self.n = state["loss"], state["correct"], int(state["n"])
        self.correct5 = state.get("correct5")

    def all_reduce(self) -> None:
        """Sums over processes, so every process reports the metrics of the global batch."""
        if world()[1] == 1:
            return
        vals = [self.loss, self.correct, self.n] + ([self.correct5] if self.correct5 is not None else [])
        ref = next((v for v in vals if isinstance(v, torch.Tensor)), None)
        device = ref.device if ref is not None else torch.device("cpu")
        total = all_reduce_sum(torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in vals]))
        self.loss, self.correct, self.n = total[0], total[1], int(total[2])
        if self.correct5 is not None:
            self.correct5 = total[3]

    def result(self, prefix: str) -> dict[str, float]:
        if self.n == 0:
            return {}
        out = {f"{prefix}_loss": float(self.loss) / self.n, f"{prefix}_acc": float(self.correct) / self.n}
        if self.correct5 is not None:
            out[f"{prefix}_top5"] = float(self.correct5) / self.n
        return out


PROGRESS_EVERY_S = 30.0  # when stderr is not a terminal: one progress line this often


def progress(iterable: Iterable, total: int, desc: str, enabled: bool, stream=None,
             every_s: float = PROGRESS_EVERY_S) -> Iterable:
    """A progress bar on a terminal; where stderr is a file or a pipe (nohup, a batch job, CI), one
    plain line every `every_s` seconds instead of carriage-return updates."""
    if not enabled:
        return iterable
    stream = stream or sys.stderr
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=False, file=stream, dynamic_ncols=True)
    return progress_lines(iterable, total, desc, stream, every_s)


def progress_lines(iterable: Iterable, total: int, desc: str, stream, every_s: float,
                   clock: Callable[[], float] = time.monotonic) -> Iterator:
    """`iterable`, printing '{desc}: i/total (p%), s/step, time left' to `stream` every `every_s`
    seconds by `clock` (never after the last item: the epoch's own line follows)."""
    start = last = clock()
    for i, item in enumerate(iterable, 1):
        yield item
        now = clock()
        if now - last >= every_s and i < total:
            per = (now - start) / i
            print(f"{desc}: {i}/{total} ({100 * i // total}%), {per:.2f} s/step, about {per * (total - i):.0f} s left",
                  file=stream, flush=True)
            last = now


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], batches: Iterable, total: int, desc: str,
             show: bool, prefix: str, top5: bool = False) -> dict[str, float]:
    """Loss and accuracy of `forward` over `batches` (the caller puts the model in eval mode and
    has `forward` move a batch to its device)."""
    meter = Meter(top5)
    for x, y in progress(batches, total, desc, show):
        if y.numel() == 0:  # this process's share of a last, short batch
            continue
        logits = forward(x).float()
        y = y.to(logits.device, non_blocking=True)
        meter.update(torch.nn.functional.cross_entropy(logits, y), logits, y)
    meter.all_reduce()
    return meter.result(prefix)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                   grad_clip: float, skip_nonfinite: bool = False) -> bool:
    """Backward, clip, one step of `optimizer` (SGD or Adam). A non-finite loss or gradient norm raises NonFinite before the
    weights change, or, with `skip_nonfinite`, skips the update and returns False.

    Under torchrun only the gradient norm is checked: gradients are averaged over the processes,
    so all of them see the same norm and stop or skip together."""
    if world()[1] == 1 and not torch.isfinite(loss):
        if skip_nonfinite:
            return False
        raise NonFinite("loss")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    if not torch.isfinite(norm):
        if skip_nonfinite:
            optimizer.zero_grad(set_to_none=True)
            return False
        raise NonFinite("gradient")
    optimizer.step()
    return True


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


# ---------------------------------------------------------------------------- the epoch loop


class Batches(Protocol):
    """What a phase iterates: a loader with a length that can start at any batch of the epoch.

    `batches_from(k)` yields batches k, k+1, ... exactly as a full pass would (a resumed epoch);
    a loader whose random numbers come in sequence draws and discards the first k."""

    def __len__(self) -> int: ...
    def batches_from(self, first: int) -> Iterator: ...


class Zipped:
    """Two loaders stepped together (batch-wise alternation), as long as the shorter."""

    def __init__(self, a: Batches, b: Batches):
        self.a, self.b = a, b

    def __len__(self) -> int:
        return min(len(self.a), len(self.b))

    def batches_from(self, first: int) -> Iterator:
        return zip(self.a.batches_from(first), self.b.batches_from(first), strict=False)


class Phase(NamedTuple):
    """One pass of an epoch: `step(batch, meters)` over `batches` (e.g. weights, then arch).

    `meters` maps a metric prefix ("train", "val", ...) to a Meter; the engine creates them on
    first use and keeps them across an interruption."""

    name: str
    batches: Batches
    step: Callable[[Any, dict[str, Meter]], None]


class EpochTask(Protocol):
    device: torch.device

    def begin_epoch(self, epoch: int) -> list[Phase]: ...
    def end_epoch(self, epoch: int, meters: dict[str, Meter]) -> dict[str, float]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class NonFinite(Exception):
    """Raised by a step whose loss or gradient is not finite."""


class _StopSignals:
    """Turns SIGINT/SIGTERM into a request to stop after the current step (a second SIGINT aborts)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        if self.received == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __exit__(self, exc_type, *_) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if exc_type is None and self.received in ("SIGINT", "SIGTERM"):
            _late[:] = [self.received]  # it came after the last step: the run finished, the caller may stop

    def agreed(self, step: int, task: EpochTask) -> bool:
        """Whether to stop now. Under torchrun the processes agree every STOP_POLL_STEPS steps (a
        collective), so all stop at the same step; between polls none stops."""
        if world()[1] > 1:
            if step % STOP_POLL_STEPS:
                return False
            if _any_process(self.received is not None, task):
                self.received = self.received or "a signal to another process"
        return self.received is not None


_late: list[str] = []


def late_stop() -> str | None:
    """The signal that reached the last run after its last step (so it finished instead of stopping), once;
    a caller that starts further runs stops on it (nge ablate)."""
    return _late.pop() if _late else None


STOP_POLL_STEPS = 10  # under torchrun, how often the processes agree on a stop request (torchrun kills after 30 s)


def _any_process(flag: bool, task: EpochTask) -> bool:
    """True on every process if `flag` is true on any (a collective: all processes must call it)."""
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=task.device)).item())


def _all_finite(state: Any) -> bool:
    """True if every floating-point tensor in a nested state (dicts, lists) is finite."""
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(_all_finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(_all_finite(v) for v in state)
    return True


@dataclass
class _Position:
    """Where a run stands: finished epochs, and inside the current one the steps done per phase,
    the partial meters and the time spent."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    cursor: dict[str, int] = field(default_factory=dict)
    meters: dict[str, dict] = field(default_factory=dict)
    elapsed: float = 0.0


def _restore(task: EpochTask, run: RunDir, epochs: int) -> _Position:
    """Loads the run's checkpoint into `task` and the RNGs; returns where to continue."""
    path = run.file(RunDir.CHECKPOINT)
    ckpt = load_checkpoint(path)
    procs = world()[1]
    if int(ckpt.get("processes", 1)) != procs:  # the global batch, steps per epoch and cursor depend on it
        raise NGEError(f"cannot resume: the run used {ckpt.get('processes', 1)} process(es), this is {procs}; "
                       "resume with the same number (data.batch_size is per process)")
    if int(ckpt["epoch"]) > epochs or (int(ckpt["epoch"]) == epochs and ckpt.get("cursor")):
        raise NGEError(f"cannot resume: the checkpoint is past epoch {epochs}; ask for more epochs")
    try:
        task.load_state_dict(ckpt["task"])
    except (KeyError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise NGEError(f"cannot resume from {path}: it does not fit this run ({first})") from None
    set_rng_state(ckpt["rng"])
    return _Position(int(ckpt["epoch"]), list(ckpt.get("metrics", [])), dict(ckpt.get("cursor", {})),
                     dict(ckpt.get("meters", {})), float(ckpt.get("elapsed", 0.0)))


def _checkpoint(task: EpochTask, run: RunDir, pos: _Position, meta: dict) -> None:
    """Writes `pos` and the task's state atomically (the first process writes; all check)."""
    state = task.state_dict()
    if not _all_finite(state):  # on every process (they hold the same state), so all stop together
        raise NGEError(f"non-finite weights or statistics in epoch {pos.epoch + 1}; not checkpointed, the last good "
                       f"checkpoint in {run.path} is kept")
    if is_main():
        inside = {"cursor": pos.cursor, "meters": pos.meters, "elapsed": pos.elapsed} if pos.cursor else {}
        save_checkpoint({"epoch": pos.epoch, "task": state, "metrics": pos.history, "rng": rng_state(),
                         "processes": world()[1], **inside, **meta}, run.file(RunDir.CHECKPOINT))


def _run_phase(p: Phase, meters: dict[str, Meter], pos: _Position, stop: _StopSignals, task: EpochTask,
               epochs: int, run: RunDir, show: bool) -> int | None:
    """Steps through the rest of phase `p`; returns the step at which a stop was agreed, or None."""
    done = pos.cursor.get(p.name, 0)
    desc = f"epoch {pos.epoch + 1}/{epochs} {p.name}"
    for i, batch in enumerate(progress(p.batches.batches_from(done), len(p.batches) - done, desc, show), start=done):
        try:
            p.step(batch, meters)
        except NonFinite as e:
            raise NGEError(f"non-finite {e} at epoch {pos.epoch + 1}, {p.name} step {i + 1}; the last good checkpoint "
                           f"in {run.path} is kept (runtime.nonfinite=skip skips such steps)") from None
        pos.cursor[p.name] = i + 1
        if stop.agreed(i + 1, task):
            return i + 1
    return None


def fit(task: EpochTask, epochs: int, run: RunDir, *, config: dict | None = None, resume: bool = False,
        log: Callable[[str], None] | None = None, meta: dict | None = None, show_progress: bool = False,
        resume_hint: str = "--resume", on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Run epochs [start, epochs) and return all metrics rows.

    A checkpoint (task state, metrics, RNG states, the position inside the epoch, `config` and
    `meta`) is written atomically after every epoch and when SIGINT/SIGTERM asks to stop, so a
    resumed run continues exactly where the last one left off. `config` (the run's configuration as
    a dict) is what a later `check_resume` compares with; a checkpoint without one cannot be resumed
    through the CLI. A non-finite loss stops the run (NGEError) without writing a checkpoint, so the
    last good one stays. `on_epoch(row)` runs in the first process after each epoch's checkpoint.
    """
    pos = _restore(task, run, epochs) if resume else _Position()
    meta = {**({"config": config} if config is not None else {}), **(meta or {})}
    with _StopSignals() as stop:
        while pos.epoch < epochs:
            epoch = pos.epoch
            t0, c0 = time.perf_counter() - pos.elapsed, time.process_time()
            meters: dict[str, Meter] = defaultdict(Meter)
            for name, m in pos.meters.items():  # partial sums of all processes, held by the first
                meters[name].load_state_dict(m if is_main() else {k: 0 for k in m})
            for p in task.begin_epoch(epoch):
                step = _run_phase(p, meters, pos, stop, task, epochs, run, show_progress and is_main())
                if step is not None:
                    for name in sorted(meters):
                        meters[name].all_reduce()
                    pos.meters = {k: m.state_dict() for k, m in meters.items()}
                    pos.elapsed = time.perf_counter() - t0
                    _checkpoint(task, run, pos, meta)
                    raise NGEError(f"stopped by {stop.received} at epoch {epoch + 1}, {p.name} step {step}; "
                                   f"checkpoint saved, continue with {resume_hint}")
            for name in sorted(meters):
                meters[name].all_reduce()
            row = {"epoch": epoch + 1, **task.end_epoch(epoch, meters)}
            row["seconds"] = round(time.perf_counter() - t0, 3)
            row["cpu_seconds"] = round(time.process_time() - c0, 3)  # all threads; a resumed epoch: since the resume
            pos = _Position(epoch + 1, [*pos.history, row])
            _checkpoint(task, run, pos, meta)
            if is_main():
                run.write_jsonl("metrics.jsonl", pos.history)
                if log:
                    log(_format_row(row, epochs))
                if on_epoch:
                    on_epoch(row)
            stopping = stop.received is not None
            if world()[1] > 1:  # every process stops if any was asked to
                stopping = _any_process(stopping, task)
            if stopping and pos.epoch < epochs:
                raise NGEError(f"stopped by {stop.received or 'a signal'} after epoch {epoch + 1}; checkpoint saved, "
                               f"continue with {resume_hint}")
    return pos.history


def _format_row(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for k, v in row.items():
        if k != "epoch" and isinstance(v, (float, int)):
            parts.append(f"{k} {v:.4g}")
    return "  ".join(parts)
