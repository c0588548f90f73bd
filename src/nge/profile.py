"""Profiling: parameter and multiply-add counts of a network for one input, without training it,
and `nge profile`'s report for a preset's supernet or evaluation network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nge.errors import NGEError


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_params_without_aux(net: nn.Module) -> int:
    """Number of parameters, leaving out the auxiliary head (as DARTS and the literature count)."""
    aux = getattr(net, "auxiliary_head", None)
    skip = {id(p) for p in aux.parameters()} if aux is not None else set()
    return sum(p.numel() for p in net.parameters() if id(p) not in skip)


def count_mult_adds(model: nn.Module, run: Callable[[], object]) -> int:
    """Multiply-adds of the convolutions and matrix products during `run()`, in eval mode (the usual
    convention: BN, pooling, activations and additions are not counted). Counted on the operations
    that run, so convs called functionally (the fast dilated forms in `ops`) count too. Divide by the
    batch size for a per-image figure."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            run()
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2  # a multiply-add is two flops


def profile_network(net: nn.Module, in_channels: int, size: int) -> dict[str, int]:
    """Params (without the auxiliary head) and multiply-adds per image of an evaluation network."""
    x = torch.zeros(1, in_channels, size, size, device=next(net.parameters()).device)
    return {"params": count_params_without_aux(net), "mult_adds": count_mult_adds(net, lambda: net(x))}


def input_of(cfg: Any) -> tuple[int, int, int]:
    """(channels, size, classes) of a config's data, known without decoding it."""
    from nge.config import to_dict
    from nge.data import input_shape

    d = to_dict(cfg.data)
    return input_shape(d["name"], d["synthetic"], d["root"], d["image_size"], d["channels"])


def profile_eval_preset(cfg: Any, genotype: Any) -> dict[str, Any]:
    """Params and multiply-adds of a training config's network for one image, built without reading data."""
    from nge.evalnet import build_network

    channels, size, classes = input_of(cfg)
    net = build_network(cfg.model, genotype, channels, classes, imagenet=cfg.data.name == "imagenet")
    return {"input": [channels, size, size], "num_classes": classes, **profile_network(net, channels, size)}


def check_mult_adds(cfg: Any, mult_adds: int, genotype_spec: str) -> None:
    """Refuses a network over the training config's `model.mult_adds_limit` (the mobile setting)."""
    limit = cfg.model.mult_adds_limit
    if limit is not None and mult_adds > limit:
        raise NGEError(f"genotype {genotype_spec} gives {mult_adds:,} multiply-adds per image under preset {cfg.preset}, "
                       f"over its limit of {limit:,} (the mobile setting); lift it with model.mult_adds_limit=null "
                       "or make the network smaller (model.C, model.layers)")


def profile_search_preset(cfg: Any) -> dict[str, Any]:
    """Params of the supernet and the parameterisation, and the supernet's multiply-adds per image."""
    from nge.arch import build_arch
    from nge.spaces import get_space

    sp = get_space(cfg.search.space)
    channels, size, classes = input_of(cfg)
    net = sp.build_supernet(cfg.model, channels, classes)
    arch = build_arch(cfg.search.arch.name, sp.topology, len(sp.primitives), cell_types=sp.cell_types,
                      cells=cfg.search.arch.cells)
    with torch.no_grad():
        probs = arch()
    x = torch.zeros(1, channels, size, size)
    return {"input": [channels, size, size], "num_classes": classes, "params": count_params(net),
            "arch_params": count_params(arch), "mult_adds": count_mult_adds(net, lambda: net(x, probs))}


def profile(preset: str, overrides: list[str], genotype_spec: str | None) -> tuple[dict[str, Any], str | None]:
    """`nge profile`: a search preset's supernet, or with a genotype a training preset's evaluation
    network. Returns the report and, for a network over its preset's limit, the refusal message."""
    from nge.config import SearchRunConfig, TrainRunConfig, load_config, to_dict
    from nge.genotypes import resolve_genotype

    over_limit = None
    if genotype_spec:
        cfg = load_config(TrainRunConfig, "train", preset, overrides)
        result = {"preset": preset, "network": "evaluation", "genotype": genotype_spec,
                  **profile_eval_preset(cfg, resolve_genotype(genotype_spec)), "arch_params": 0,
                  "mult_adds_limit": cfg.model.mult_adds_limit}
        try:
            check_mult_adds(cfg, result["mult_adds"], genotype_spec)
        except NGEError as e:
            over_limit = str(e)
    else:
        cfg = load_config(SearchRunConfig, "search", preset, overrides)
        result = {"preset": preset, "network": "supernet", **profile_search_preset(cfg), "arch": str(cfg.search.arch.name)}
    result["config"] = to_dict(cfg.model)
    return result, over_limit


def format_profile(result: dict[str, Any]) -> str:
    channels, size, _ = result["input"]
    genotype = result.get("genotype")
    what = f"{result['network']} network" + (f" of {genotype}" if genotype else "")
    lines = [f"preset {result['preset']}: {what} on {channels}x{size}x{size} input, {result['num_classes']} classes"]
    label = "weights (without aux head)" if genotype else "supernet weights"
    lines.append(f"  {label:<27} {result['params']:>14,}")
    if not genotype:
        lines.append(f"  {'architecture params':<27} {result['arch_params']:>14,}  ({result['arch']})")
    lines.append(f"  {'multiply-adds / image':<27} {result['mult_adds']:>14,}")
    return "\n".join(lines)
