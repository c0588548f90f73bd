"""The training engine shared by search and evaluation: devices, seeding, the batch loop with its
progress bar and meters, the epoch loop with checkpoint/resume, run directories and logging.

A job plugs in as an `EpochTask`: `begin_epoch(epoch) -> phases` (the batch passes of the epoch),
`end_epoch(epoch, meters) -> metrics`, `state_dict` / `load_state_dict`. `fit` owns everything
around them, once, for every job: progress, checkpoints, resume, signals, non-finite losses.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

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


def setup_runtime(seed: int, threads: int | None, device: str = "auto") -> torch.device:
    """Seeds, threads, and the device. Under `torchrun` (WORLD_SIZE > 1) also joins the process
    group (NCCL on CUDA, gloo on CPU); each process then uses cuda:LOCAL_RANK or 1/LOCAL_WORLD_SIZE of
    the CPU threads."""
    dev = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        elif threads:
            threads = max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if not dist.is_initialized():  # NCCL for CUDA tensors, gloo for the few CPU ones (P checks, counters)
            dist.init_process_group("cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo")
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    # per process, so drop-path masks differ between processes; the models still start identical,
    # since DistributedDataParallel copies the first process's weights to the others
    torch.manual_seed(seed + int(os.environ.get("RANK", "0")))
    return dev


def single_process(command: str) -> None:
    """Refuses to run `command` under torchrun (it has no data-parallel form)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise NGEError(f"{command} runs in one process; start it without torchrun")


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside `torchrun`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def process_note(batch_size: int) -> str:
    """The log's note on the effective batch under torchrun ('' in one process)."""
    procs = world()[1]
    return f"; {procs} processes x batch {batch_size} = batch {procs * batch_size}" if procs > 1 else ""


def main_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` in the first process, silence in the others."""
    return log if is_main() else (lambda _msg: None)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch from a worker loader arrives on the CPU; device-resident batches pass through."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (a no-op in a single process)."""
    if world()[1] > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def check_same_everywhere(t: torch.Tensor, what: str) -> None:
    """Under torchrun: stop if the processes disagree on `t` (e.g. P, which must be identical)."""
    if world()[1] == 1:
        return
    import torch.distributed as dist

    hi, lo = t.detach().clone(), -t.detach().clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MAX)
    if not torch.equal(hi, -lo):
        raise NGEError(f"the processes disagree on {what} (largest difference {float((hi + lo).max()):.3g})")


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` wrapped in DistributedDataParallel under torchrun (gradients averaged over the
    processes during backward); `module` itself otherwise."""
    if world()[1] == 1:
        return module
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # 1x1 conv weight gradients can differ from their bucket's strides only on size-1 dimensions,
    # the same memory layout; torch warns about it on every step.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # no device_ids: inputs are already on the device, and the parameterisation is called without any
    return DistributedDataParallel(module, gradient_as_bucket_view=True)


def shutdown() -> None:
    """Leaves the process group, if this process joined one. Call it once no DistributedDataParallel
    module is referenced any more (one destroyed after the group aborts the process)."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


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


def linear_lr(base: float, step: int, steps_per_epoch: int, warmup_epochs: int, epochs: int) -> float:
    """Per step: linear warm-up from 0 over `warmup_epochs`, then linear decay to 0 at the end."""
    t, warm, total = step + 1, warmup_epochs * steps_per_epoch, epochs * steps_per_epoch
    if t <= warm:
        return base * t / warm
    return base * max(0.0, (total - t + 1) / (total - warm))


def poly_lr(base: float, step: int, total_steps: int, power: float) -> float:
    """DeepLab's poly schedule: base * (1 - step / total) ** power."""
    return base * max(0.0, 1 - step / total_steps) ** power


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


def progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)


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


def sgd_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], grad_clip: float,
             skip_nonfinite: bool = False) -> bool:
    """Backward, clip, step. A non-finite loss or gradient norm raises NonFinite before the
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

    MARKERS = ("config.yaml", "checkpoint.pt", "metrics.jsonl", "summary.json", "ablation.yaml")

    @classmethod
    def open(cls, path: Path, force: bool, resume: bool) -> RunDir:
        """`create` in the main process; elsewhere (torchrun) a handle that is only read from."""
        return cls.create(path, force, resume) if is_main() else cls(path)

    @classmethod
    def create(cls, path: Path, force: bool, resume: bool) -> RunDir:
        cls.check(path, force, resume)
        path = Path(path)
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


# ---------------------------------------------------------------------------- epoch loop


class Phase(NamedTuple):
    """One pass of an epoch: `step(batch, meters)` over `batches` (e.g. weights, then embedding).

    `meters` maps a metric prefix ("train", "val", ...) to a Meter; the engine creates them on
    first use and keeps them across an interruption."""

    name: str
    batches: Iterable
    total: int
    step: Callable[[Any, dict[str, Meter]], None]


class EpochTask(Protocol):
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

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _all_finite(state: Any) -> bool:
    """True if every floating-point tensor in a nested state (dicts, lists) is finite."""
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(_all_finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(_all_finite(v) for v in state)
    return True


def check_resume(path: Path, current: dict, may_differ: tuple[str, ...]) -> None:
    """Before any work: the run's checkpoint must load and its configuration match `current`."""
    ckpt = load_checkpoint(Path(path) / RunDir.CHECKPOINT)
    check_resume_config(ckpt.get("config", {}), current, may_differ)


def check_resume_config(saved: dict, current: dict, may_differ: tuple[str, ...]) -> None:
    """A run resumes only with the configuration it started with (`may_differ` keys excepted)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            out.update(flat(v, key + ".") if isinstance(v, dict) else {key: v})
        return out

    a, b = flat(saved), flat(current)
    differ = sorted(k for k in set(a) | set(b)
                    if a.get(k) != b.get(k) and not any(k == m or k.startswith(m + ".") for m in may_differ))
    if differ:
        raise NGEError(f"cannot resume: the configuration differs from the run's in {', '.join(differ[:6])} "
                       "(resume with the same preset and overrides)")


def fit(
    task: EpochTask,
    epochs: int,
    run: RunDir,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    extra: dict | None = None,
    show_progress: bool = False,
    resume_hint: str = "--resume",
) -> list[dict]:
    """Run epochs [start, epochs) and return all metrics rows.

    A checkpoint (task state, metrics, RNG states, and the position inside the epoch) is written
    atomically after every epoch and when SIGINT/SIGTERM asks to stop, so a resumed run continues
    exactly where the last one left off. A non-finite loss stops the run (NGEError) without
    writing a checkpoint, so the last good one stays.
    """
    ckpt_path = run.file(RunDir.CHECKPOINT)
    history: list[dict] = []
    start, cursor, saved_meters, elapsed = 0, {}, {}, 0.0
    main, procs = is_main(), world()[1]
    distributed = procs > 1
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        if int(ckpt.get("processes", 1)) != procs:  # the global batch, steps per epoch and cursor depend on it
            raise NGEError(f"cannot resume: the run used {ckpt.get('processes', 1)} process(es), this is {procs}; "
                           "resume with the same number (data.batch_size is per process)")
        if int(ckpt["epoch"]) > epochs or (int(ckpt["epoch"]) == epochs and ckpt.get("cursor")):
            raise NGEError(f"cannot resume: the checkpoint is past epoch {epochs}; ask for more epochs")
        try:
            task.load_state_dict(ckpt["task"])
        except (KeyError, RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise NGEError(f"cannot resume from {ckpt_path}: it does not fit this run ({first})") from None
        history = list(ckpt.get("metrics", []))
        set_rng_state(ckpt["rng"])
        start = int(ckpt["epoch"])
        cursor, saved_meters = dict(ckpt.get("cursor", {})), dict(ckpt.get("meters", {}))
        elapsed = float(ckpt.get("elapsed", 0.0))

    def checkpoint(epoch: int, **inside) -> None:
        state = task.state_dict()
        if not _all_finite(state):  # on every process (they hold the same state), so all stop together
            raise NGEError(f"non-finite weights or statistics in epoch {epoch + 1}; not checkpointed, the last good "
                           f"checkpoint in {run.path} is kept")
        if main:  # under torchrun the first process writes
            save_checkpoint({"epoch": epoch, "task": state, "metrics": history, "rng": rng_state(), "processes": procs,
                             **inside, **(extra or {})}, ckpt_path)

    with _StopSignals() as stop:
        for epoch in range(start, epochs):
            t0 = time.perf_counter() - elapsed
            phases = task.begin_epoch(epoch)
            meters: dict[str, Meter] = defaultdict(Meter)
            for name, m in saved_meters.items():
                meters[name].load_state_dict(m if main else {k: 0 for k in m})
            for p in phases:
                done = cursor.get(p.name, 0)
                desc = f"epoch {epoch + 1}/{epochs} {p.name}"
                batches, first = p.batches, 0
                if done and hasattr(batches, "batches_from"):  # a loader that can skip without replaying
                    batches, first = batches.batches_from(done), done
                for i, batch in enumerate(progress(batches, p.total - first, desc, show_progress and main), start=first):
                    if i < done:
                        continue  # replayed for its random numbers; done before the interruption
                    try:
                        p.step(batch, meters)
                    except NonFinite as e:
                        raise NGEError(f"non-finite {e} at epoch {epoch + 1}, {p.name} step {i + 1}; the last good "
                                       f"checkpoint in {run.path} is kept (runtime.nonfinite=skip skips such steps)") from None
                    cursor[p.name] = i + 1
                    if distributed:  # every few steps the processes agree whether any of them was signalled
                        if (i + 1) % STOP_POLL_STEPS == 0 and _any_process(stop.received is not None, task):
                            stop.received = stop.received or "a signal to another process"
                        elif (i + 1) % STOP_POLL_STEPS:
                            continue
                    if stop.received:
                        for name in sorted(meters):  # the partial sums of all processes, held by the first on resume
                            meters[name].all_reduce()
                        checkpoint(epoch, cursor=cursor, meters={k: m.state_dict() for k, m in meters.items()},
                                   elapsed=time.perf_counter() - t0)
                        raise NGEError(f"stopped by {stop.received} at epoch {epoch + 1}, {p.name} step {i + 1}; "
                                       f"checkpoint saved, continue with {resume_hint}")
            for name in sorted(meters):
                meters[name].all_reduce()
            row = {"epoch": epoch + 1, **task.end_epoch(epoch, meters)}
            row["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(row)
            cursor, saved_meters, elapsed = {}, {}, 0.0
            checkpoint(epoch + 1)
            if main:
                run.write_jsonl("metrics.jsonl", history)
                if log:
                    log(_format_row(row, epochs))
            stopping = stop.received is not None
            if distributed:  # every process stops if any was asked to
                stopping = _any_process(stopping, task)
            if stopping and epoch + 1 < epochs:
                raise NGEError(f"stopped by {stop.received or 'a signal'} after epoch {epoch + 1}; checkpoint saved, "
                               f"continue with {resume_hint}")
    return history


STOP_POLL_STEPS = 10  # under torchrun, how often the processes agree on a stop request (torchrun kills after 30 s)


def _any_process(flag: bool, task: EpochTask) -> bool:
    """True on every process if `flag` is true on any (a collective: all processes must call it)."""
    device = getattr(task, "device", torch.device("cpu"))
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device)).item())


def _format_row(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for k, v in row.items():
        if k != "epoch" and isinstance(v, (float, int)):
            parts.append(f"{k} {v:.4g}")
    return "  ".join(parts)
