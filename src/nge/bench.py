"""`nge bench`: images/s and peak memory of the search and training steps, on synthetic data.

    nge bench [--what supernet|arch-step|path-step|eval|arch-forward|all] [--device auto|cpu|cuda] [--batch N]
              [--steps N] [--warmup N] [--reference] [--smoke]
              [--json] [--in-process] [KEY=VALUE ...]
    python -m nge.bench ...    (the same, without the `nge` command)

What is timed (the real step functions, on batches made before timing):

- `supernet`: the search's weight step (`SearchTask.weight_step`: forward, backward, clip, SGD) of a
  search preset's supernet (default `paper`: 8 cells, C = 16, 32x32x3 input, 10 classes, batch 32);
- `arch-step`: the search's arch step (`SearchTask.arch_step`: P, forward, backward to the
  parameterisation, Adam) on the same supernet;
- `path-step`: the single-path weight step of `search.strategy=rl|ea` (`SearchTask.path_weight_step`:
  one uniformly drawn cell, forward, backward, clip, SGD) on the same supernet;
- `eval`: the training step of an evaluation network (`TrainTask.train_step`; default the
  `paper-cifar10` network of DARTS_V2, 20 cells, C = 36, auxiliary head, drop-path at its final
  value, batch 128);
- `arch-forward`: the parameterisation's forward alone (P from the search preset's `search.arch.name`,
  with autograd recording as in the arch step). Its images/s is the batch size over that time,
  the rate the step could reach if it did nothing else (P is computed once per batch).

`--reference` adds the supernet weight and arch steps in DARTS's own form (`reference_forward`: every
op called whole, P from the parameterisation inside the step and not detached, NCHW, fp32), so the
speed-up is measured on the same machine. Each measurement runs in a fresh process, so its peak
memory is its own: peak RSS on CPU (`ru_maxrss`, which includes torch itself; `base_mem_mb` is the
RSS before the first step), `torch.cuda.max_memory_allocated` on CUDA. images/s is the batch size
over the median time of the timed steps, after the warm-up steps.

KEY=VALUE overrides go to the search and/or training configuration, whichever has the key
(e.g. `runtime.channels_last=true`, `runtime.amp=true`, `runtime.threads=2`, `model.C=8`,
`model.checkpoint=early`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nge.errors import NGEError

WHATS = ("supernet", "arch-step", "path-step", "eval", "arch-forward")
REFERENCE_WHATS = ("supernet", "arch-step")  # the steps that have a reference form


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--what", choices=(*WHATS, "all"), default="all", help="which step to time (default: all)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available")
    p.add_argument("--batch", type=int,
                   help="batch size (default: 32 for the supernet steps and arch-forward, the training preset's (128) for eval; "
                        "--smoke: the presets')")
    p.add_argument("--steps", type=int, help="timed steps, the median is reported (default: 5; --smoke: 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default: 2; --smoke: 1)")
    p.add_argument("--preset", help="search preset for supernet, arch-step, arch-forward (default: paper; --smoke: smoke)")
    p.add_argument("--train-preset", help="training preset for eval (default: paper-cifar10; --smoke: smoke)")
    p.add_argument("--genotype", default="DARTS_V2", help="genotype of the eval network (default: DARTS_V2)")
    p.add_argument("--reference", action="store_true", help="also time the supernet steps in DARTS's form")
    p.add_argument("--autodl", metavar="DIR",
                   help="also time the benchmark authors' NAS-Bench-201 search network (AutoDL-Projects' TinyNetworkDarts, "
                        "from a checkout DIR holding xautodl/) on the same batches; a search.space=nb201 preset only")
    p.add_argument("--smoke", action="store_true", help="tiny presets, 1 warm-up and 2 timed steps: seconds")
    p.add_argument("--json", action="store_true", help="one JSON object per line per measurement")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process (faster; peak memory is then the maximum so far)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: WHAT or WHAT:reference, in this process
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. runtime.channels_last=true")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds `bench` to the `nge` command's subparsers."""
    b = subparsers.add_parser("bench", help="images/s and peak memory of the search and training steps")
    add_arguments(b)
    b.set_defaults(func=cmd_bench)
    return b


def _settings(args: argparse.Namespace) -> argparse.Namespace:
    """Fills the defaults that depend on --smoke and checks the numbers."""
    s = argparse.Namespace(**vars(args))
    s.steps = s.steps if s.steps is not None else (2 if s.smoke else 5)
    s.warmup = s.warmup if s.warmup is not None else (1 if s.smoke else 2)
    s.preset = s.preset or ("smoke" if s.smoke else "paper")
    s.train_preset = s.train_preset or ("smoke" if s.smoke else "paper-cifar10")
    if s.steps < 1 or s.warmup < 0:
        raise NGEError(f"--steps must be >= 1 and --warmup >= 0, got {s.steps} and {s.warmup}")
    if s.batch is not None and s.batch < 1:
        raise NGEError(f"--batch must be >= 1, got {s.batch}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise NGEError("nge bench runs in one process; start it without torchrun")
    if s.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise NGEError("--device cuda but no CUDA device is available")
    return s


def _measurements(s: argparse.Namespace) -> list[tuple[str, str]]:
    whats = WHATS if s.what == "all" else (s.what,)
    out = []
    for w in whats:
        out.append((w, "nge"))
        if s.reference and w in REFERENCE_WHATS:
            out.append((w, "reference"))
        if s.autodl and w in REFERENCE_WHATS:
            out.append((w, "autodl"))
    return out


# ---------------------------------------------------------------------------- configuration


def _configs(s: argparse.Namespace, kinds: set[str]) -> dict[str, Any]:
    """The search and/or training configuration; each override goes to every one whose schema has its
    key (e.g. `model.checkpoint` to the search only), and all of a config's overrides load together."""
    from nge.config import SearchRunConfig, TrainRunConfig, load_config, route_overrides

    schemas = {"search": (SearchRunConfig, s.preset), "train": (TrainRunConfig, s.train_preset)}
    given = route_overrides(s.overrides)
    cfgs = {}
    for kind in kinds:
        schema, preset = schemas[kind]
        batch = s.batch or (32 if kind == "search" and not s.smoke else None)
        extra = [f"runtime.device={s.device}"] + ([f"data.batch_size={batch}"] if batch else [])
        cfgs[kind] = load_config(schema, kind, preset, given[kind] + extra)
    return cfgs


def _synthetic(cfg, n_train: int):
    from nge.data import make_synthetic
    from nge.profile import input_of

    channels, size, classes = input_of(cfg)
    return make_synthetic(n_train=n_train, n_test=1, num_classes=classes, channels=channels, size=size)


# ---------------------------------------------------------------------------- one measurement


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _reference_steps(task):
    """The weight and arch steps of `task` with the supernet in DARTS's form (the space's reference
    forward, P computed by the parameterisation inside the step, not detached, NCHW, fp32)."""
    import torch.nn.functional as F

    from nge.engine import frozen, optimizer_step

    reference_forward = task.space.reference_forward
    clip = task.cfg.search.weights.grad_clip

    def weight(x, y):
        task.net.train()
        task.arch_opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(reference_forward(task.net, x, task.arch()), y)
        optimizer_step(loss, task.weight_opt, task.weight_params, clip)

    def arch(x, y):
        task.net.train()
        with frozen(task.net):
            loss = F.cross_entropy(reference_forward(task.net, x, task.arch()), y)
            optimizer_step(loss, task.arch_opt, task.arch_params, 0.0)

    return weight, arch


def _autodl_steps(task, checkout: str):
    """The weight and arch steps of AutoDL-Projects' TinyNetworkDarts (NAS-Bench-201's DARTS search network,
    first order: SGD on the weights with P detached, Adam on its alphas) built like `task`'s supernet."""
    import torch
    import torch.nn.functional as F

    from nge.engine import optimizer_step

    if not (Path(checkout) / "xautodl" / "models" / "cell_searchs" / "search_model_darts.py").is_file():
        raise NGEError(f"--autodl {checkout}: no xautodl/models/cell_searchs/search_model_darts.py there "
                       "(a checkout of AutoDL-Projects)")
    sys.path.insert(0, str(Path(checkout).resolve()))
    from xautodl.models.cell_operations import NAS_BENCH_201
    from xautodl.models.cell_searchs.search_model_darts import TinyNetworkDarts

    cfg = task.cfg
    net = TinyNetworkDarts(cfg.model.C, cfg.model.layers, 4, task.net.classifier.out_features, NAS_BENCH_201, False, True)
    if task.net.stem[0].in_channels != 3:
        raise NGEError("--autodl: TinyNetworkDarts takes RGB input; bench a 3-channel preset (e.g. nb201-paper)")
    w = cfg.search.weights
    weights, alphas = net.get_weights(), net.get_alphas()
    weight_opt = torch.optim.SGD(weights, lr=w.lr, momentum=w.momentum, weight_decay=w.weight_decay)
    a = cfg.search.arch
    arch_opt = torch.optim.Adam(alphas, lr=a.lr, betas=(a.beta1, a.beta2), weight_decay=a.weight_decay or 0.0)

    def weight(x, y):
        net.train()
        loss = F.cross_entropy(net(x)[1], y)
        optimizer_step(loss, weight_opt, weights, w.grad_clip)

    def arch(x, y):
        net.train()
        for p in weights:  # frozen, as in nge's arch step (a stronger baseline than their script's full backward)
            p.requires_grad_(False)
        try:
            loss = F.cross_entropy(net(x)[1], y)
            optimizer_step(loss, arch_opt, alphas, 0.0)
        finally:
            for p in weights:
                p.requires_grad_(True)

    return weight, arch


def measure(s: argparse.Namespace, what: str, form: str = "nge") -> dict[str, Any]:
    """Times one step kind in this process (form: nge, reference or autodl); returns the result row."""
    reference = form != "nge"
    import torch

    from nge.config import to_dict, validate
    from nge.engine import Meter, resolve_device, setup_runtime

    kind = "train" if what == "eval" else "search"
    cfg = _configs(s, {kind})[kind]
    if reference:
        cfg.runtime.channels_last = False
        cfg.runtime.amp = False
    validate(cfg)
    device = resolve_device(cfg.runtime.device)
    setup_runtime(cfg.runtime.seed, cfg.runtime.threads)
    batch, n = cfg.data.batch_size, s.warmup + s.steps
    row: dict[str, Any] = {"what": what, "form": form}
    if kind == "search":
        from nge.searching import SearchTask

        data = _synthetic(cfg, 2 * batch * n)
        cfg.data.train_portion = 0.5
        task = SearchTask(cfg, data, device)
        batches = list(task.val_loader if what == "arch-step" else task.train_loader)[:n]
        if what == "arch-forward":
            def step(x, y):
                task.arch()
        elif form == "autodl":
            ref = _autodl_steps(task, s.autodl)[what == "arch-step"]

            def step(x, y):
                ref(x.contiguous(), y)  # NCHW
        elif reference:
            ref = _reference_steps(task)[what == "arch-step"]

            def step(x, y):
                ref(x.contiguous(), y)  # NCHW
        elif what == "supernet":
            probs = task.arch().detach()

            def step(x, y):
                task.weight_step(x, y, probs, Meter())
        elif what == "path-step":
            cells = iter([task.space.random_genotype(k) for k in range(n)])  # drawn before timing

            def step(x, y):
                task.path_weight_step(x, y, next(cells), Meter())
        else:
            def step(x, y):
                task.arch_step(x, y, Meter())
        row.update(preset=cfg.preset, space=str(cfg.search.space), arch=str(cfg.search.arch.name), C=cfg.model.C,
                   layers=cfg.model.layers,
                   checkpoint="none" if reference or what == "arch-forward" else getattr(task.net, "checkpoint", "none"))
    else:
        from nge.genotypes import resolve_genotype
        from nge.training import TrainTask

        task = TrainTask(cfg, resolve_genotype(s.genotype), _synthetic(cfg, batch * n), device)
        task.net.set_drop_path(cfg.model.drop_path)
        batches = list(task.train_loader)[:n]

        def step(x, y):
            task.train_step(x, y, Meter())

        row.update(preset=cfg.preset, genotype=s.genotype, C=cfg.model.C, layers=cfg.model.layers,
                   drop_path=cfg.model.drop_path)
    if len(batches) < n:
        raise NGEError(f"could not make {n} batches of {batch}")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb()
    times = []
    t_warm = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        if i == s.warmup:
            warmup_s = time.perf_counter() - t_warm
        t = time.perf_counter()
        step(x, y)
        if cuda:
            torch.cuda.synchronize()
        if i >= s.warmup:
            times.append(time.perf_counter() - t)
    if s.warmup == 0:
        warmup_s = 0.0
    median = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    x0 = batches[0][0]
    row.update(
        images_per_s=round(batch / median, 2),
        step_ms=round(median * 1e3, 2),
        warmup_s=round(warmup_s, 2),
        peak_mem_mb=round(peak, 1),
        peak_mem_kind="cuda max_memory_allocated" if cuda else "process peak RSS",
        base_mem_mb=round(base, 1),
        device=str(device) if not cuda else f"cuda ({torch.cuda.get_device_name(device)})",
        threads=torch.get_num_threads(),
        batch=batch,
        input=list(x0.shape[1:]),
        channels_last=bool(cfg.runtime.channels_last),
        # the layout the network actually gets (random crops give NHWC batches even without channels_last)
        input_nhwc=not reference and x0.dim() == 4 and x0.shape[1] > 1 and x0.is_contiguous(memory_format=torch.channels_last),
        amp=bool(cfg.runtime.amp),
        steps=s.steps,
        warmup=s.warmup,
        torch=torch.__version__,
        config=to_dict(cfg.runtime),
    )
    return row


# ---------------------------------------------------------------------------- driver


def _child_argv(s: argparse.Namespace, what: str, form: str) -> list[str]:
    argv = ["--one", what if form == "nge" else f"{what}:{form}", "--device", s.device, "--steps", str(s.steps),
            "--warmup", str(s.warmup), "--preset", s.preset, "--train-preset", s.train_preset,
            "--genotype", s.genotype]
    if s.batch:
        argv += ["--batch", str(s.batch)]
    if s.smoke:
        argv.append("--smoke")
    if s.autodl:
        argv += ["--autodl", s.autodl]
    return argv + list(s.overrides)


def _run_child(s: argparse.Namespace, what: str, form: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "nge.bench", *_child_argv(s, what, form)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise NGEError(f"bench {what}{'' if form == 'nge' else f' ({form})'} failed: {lines[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench(s: argparse.Namespace) -> list[dict[str, Any]]:
    s = _settings(s)
    rows = []
    for what, form in _measurements(s):
        row = measure(s, what, form) if s.in_process else _run_child(s, what, form)
        rows.append(row)
        if s.json:
            print(json.dumps(row), flush=True)
    return rows


def _above_base(row: dict[str, Any]) -> float:
    """Peak memory less the process's memory before the first step (torch, the model, the batches)."""
    return max(row["peak_mem_mb"] - row["base_mem_mb"], 1e-9)


def _table(rows: list[dict[str, Any]], in_process: bool) -> str:
    lines = [f"{'step':<11} {'form':<10} {'images/s':>9} {'ms/step':>9} {'peak MB':>9}  config"]
    for r in rows:
        conf = f"batch {r['batch']}, {'x'.join(map(str, r['input']))}"
        if r["what"] == "eval":
            conf += f", {r['genotype']} {r['layers']} cells C={r['C']}"
        else:
            conf += f", {r['preset']} {r['layers']} cells C={r['C']}"
            if r.get("checkpoint", "none") != "none":
                conf += f", checkpoint {r['checkpoint']}"
        conf += f", channels_last={r['channels_last']} (input {'NHWC' if r['input_nhwc'] else 'NCHW'}), amp={r['amp']}"
        lines.append(f"{r['what']:<11} {r['form']:<10} {r['images_per_s']:>9.1f} {r['step_ms']:>9.1f} "
                     f"{r['peak_mem_mb']:>9.0f}  {conf}")
    by = {(r["what"], r["form"]): r for r in rows}
    for w in REFERENCE_WHATS:
        for form, name in (("reference", "the reference's"), ("autodl", "TinyNetworkDarts's")):
            fast, ref = by.get((w, "nge")), by.get((w, form))
            if fast and ref:
                lines.append(f"{w}: {fast['images_per_s'] / ref['images_per_s']:.2f}x {name} images/s, "
                             f"{fast['peak_mem_mb'] / ref['peak_mem_mb']:.2f}x its peak memory, "
                             f"{_above_base(fast) / _above_base(ref):.2f}x its memory above the process's base")
    r = rows[0]
    lines.append(f"device {r['device']}, {r['threads']} threads, torch {r['torch']}; images/s: median of "
                 f"{r['steps']} steps after {r['warmup']} warm-up; peak: {r['peak_mem_kind']}"
                 + (" so far in this process" if in_process else ", each in a fresh process"))
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.one:
        what, _, form = args.one.partition(":")
        if what not in WHATS or form not in ("", "reference", "autodl"):
            raise NGEError(f"bad --one {args.one!r}")
        print(json.dumps(measure(_settings(args), what, form or "nge")), flush=True)
        return 0
    rows = run_bench(args)
    if not args.json:
        print(_table(rows, args.in_process))
    return 0


def main(argv: list[str] | None = None) -> int:
    from nge.cli import module_main

    return module_main("nge bench", "Time the search and training steps on synthetic data.", add_arguments, cmd_bench, argv)


if __name__ == "__main__":
    sys.exit(main())
