"""Run under `torchrun --nproc_per_node=1` with DEVICE (cuda: tests/test_cuda.py; cpu: tests/test_ddp.py):
joins the process group through nge's runtime, as `setup_runtime` does under torchrun; wraps a module
in DistributedDataParallel as `data_parallel` does and all-reduces its gradients in the backward pass;
all-reduces a tensor on DEVICE and one on the CPU (NCCL and gloo on CUDA); leaves the group with nge's
shutdown. Prints "ok" at the end. `run_under_torchrun` starts it."""

import os
import subprocess
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from nge.engine import join_process_group, resolve_device, shutdown, world


def run_under_torchrun(device: str, **env: str) -> subprocess.CompletedProcess:
    """This script under `torchrun --standalone` (a local rendezvous on a port it picks) in one process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", __file__, device]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def main() -> None:
    dev = join_process_group(resolve_device(sys.argv[1]))
    assert dist.is_initialized() and world() == (0, 1)
    assert join_process_group(dev) == dev  # once: a second call joins nothing
    if dev.type == "cuda":
        assert dev == torch.device("cuda", 0) and torch.cuda.current_device() == 0
    # data_parallel's own wrapping, which it skips in a group of one
    net = DistributedDataParallel(torch.nn.Linear(4, 2).to(dev), gradient_as_bucket_view=True)
    net(torch.randn(3, 4, device=dev)).sum().backward()
    assert net.module.weight.grad is not None and net.module.weight.grad.device == dev
    for t in (torch.ones(2, device=dev), torch.ones(2)):
        dist.all_reduce(t)
        assert t.tolist() == [1.0, 1.0]
    del net
    shutdown()
    assert not dist.is_initialized()
    print("ok")


if __name__ == "__main__":
    main()
