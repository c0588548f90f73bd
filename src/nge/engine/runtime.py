"""The runtime: device, threads, seeding, and the process group under torchrun (DDP).

Outside torchrun every helper here is a no-op or returns the single-process answer, so the rest of
nge never branches on whether it is distributed.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from nge.errors import NGEError


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
        dev = join_process_group(dev)
        if dev.type != "cuda" and threads:
            threads = max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    # per process, so drop-path masks differ between processes; the models still start identical,
    # since DistributedDataParallel copies the first process's weights to the others
    torch.manual_seed(seed + int(os.environ.get("RANK", "0")))
    return dev


def join_process_group(dev: torch.device) -> torch.device:
    """Joins the process group torchrun's environment describes (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT), once: NCCL for CUDA tensors and gloo for the few CPU ones (P checks, counters), or
    gloo alone on the CPU. Returns this process's device: cuda:LOCAL_RANK, made current, on CUDA."""
    import torch.distributed as dist

    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        if dev.type == "cuda":  # device_id: NCCL binds to this GPU now instead of guessing at the first collective
            dist.init_process_group("cpu:gloo,cuda:nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
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
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # reading it would initialise CUDA: a CPU run never does
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])  # lazy: applied when CUDA is first initialised
