"""The CUDA subset (marker `cuda`), run by scripts/gpu_check.sh on a GPU machine; skipped elsewhere.

Tolerances: fp32 on the GPU against the same network's reference formulation, 1e-4 relative (TF32
is switched off for the comparison); bf16 autocast against fp32, logits within 5% of their range
and P's gradient within 10% in cosine distance (bf16 keeps 8 bits of mantissa).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.join_group import run_under_torchrun
from nge.arch import build_arch
from nge.evalnet import NetworkCIFAR
from nge.genotypes import DARTS_V2
from nge.supernet import SuperNet, reference_forward

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _supernet_and_p(seed: int = 0):
    torch.manual_seed(seed)
    net = SuperNet(C=8, num_classes=10, layers=5).cuda()
    arch = build_arch("nge", init="normal").cuda()
    x = torch.randn(8, 3, 32, 32, device="cuda")
    return net, arch, x


@pytest.mark.parametrize("channels_last", [False, True])
def test_supernet_equals_its_reference_in_fp32(channels_last):
    net, arch, x = _supernet_and_p()
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    net.eval()  # running statistics: the two forms see the same numbers
    p = arch()
    fast, ref = net(x, p), reference_forward(net, x, p)
    assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    g_fast = torch.autograd.grad(fast.square().sum(), p.normal, retain_graph=True)[0]
    g_ref = torch.autograd.grad(ref.square().sum(), p.normal)[0]
    assert torch.allclose(g_fast, g_ref, rtol=1e-3, atol=1e-4 * g_ref.abs().max().item())


def test_supernet_under_bf16_autocast_stays_close_to_fp32():
    net, arch, x = _supernet_and_p()
    net.train()
    p = arch()
    y = torch.randint(0, 10, (8,), device="cuda")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    logits32 = net(x, p)
    g32 = torch.autograd.grad(F.cross_entropy(logits32, y), p.normal)[0]
    net.load_state_dict(state)  # the same running statistics for the second pass
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits16 = net(x, p)
    g16 = torch.autograd.grad(F.cross_entropy(logits16.float(), y), p.normal)[0]
    spread = (logits32.max() - logits32.min()).item()
    assert (logits16.float() - logits32).abs().max().item() <= 0.05 * spread
    assert F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0).item() >= 0.9


def test_evaluation_network_matches_the_cpu_and_trains():
    torch.manual_seed(0)
    net = NetworkCIFAR(DARTS_V2, C=8, num_classes=10, layers=5, auxiliary=True).eval()
    x = torch.randn(4, 3, 32, 32)
    cpu = net(x)[0]
    gpu_net = net.cuda()
    assert torch.allclose(gpu_net(x.cuda())[0].cpu(), cpu, rtol=1e-3, atol=1e-4 * cpu.abs().max().item())
    gpu_net.train()
    logits, aux = gpu_net(x.cuda())
    loss = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long, device="cuda")) + 0.4 * aux.square().mean()
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in gpu_net.parameters() if p.requires_grad)


def test_one_torchrun_process_joins_the_nccl_group_through_the_runtime():
    """torchrun's NCCL path, in one process: nge's runtime joins the `cpu:gloo,cuda:nccl` group from
    torchrun's environment on cuda:0 (join_process_group, which setup_runtime runs under torchrun), DDP
    wraps a module and all-reduces its gradients in the backward pass, a CUDA tensor (NCCL) and a CPU
    one (gloo) are all-reduced, and nge's shutdown leaves the group (tests/helpers/join_group.py)."""
    proc = run_under_torchrun("cuda", NCCL_DEBUG="WARN")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
