"""The prepared GPU check (run it through scripts/gpu_check.sh, which installs what is missing).

    python3 scripts/gpu_check.py OUT [--cpu-smoke] [--epoch-timeout S]

On a CUDA machine, in this order, each step's result going into OUT/gpu_check.json and a table into
OUT/gpu_check.md (both rewritten after every step, so a run cut short keeps what it measured):

1. the CUDA tests (`pytest -m cuda`: the supernet against its reference in fp32 and under bf16
   autocast, the evaluation network, a single-process NCCL start);
2. one epoch of the `paper` search on synthetic CIFAR-size data at full size (25K + 25K images),
   timed, and from it the estimate for the paper's 25 epochs;
3. `nge bench --device cuda`: the supernet weight and arch steps at the paper's batch 64 and the
   paper-cifar10 evaluation step at batch 96 and 128, each in fp32 and bf16 (`runtime.amp=true`),
   and from the fp32 supernet steps a second estimate of the search (steps only, no data or eval).

The whole check keeps within `--budget` seconds (default 480): each step gets what is left, and a
step that runs out is killed with its processes and recorded as an error.

Without a GPU it prints one line saying so and exits 1. `--cpu-smoke` runs every step on the CPU
at smoke size instead (seconds), to check the script itself without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_EPOCHS = 25
TARGET_MINUTES = 15  # the paper search on one H100-class GPU (issue #15)


class Budget:
    """Seconds left for the whole check; each command gets at most what is left (less a margin)."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self, cap: float) -> float:
        return max(1.0, min(cap, self.end - time.monotonic() - 20))


def sh(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Runs `cmd` in its own process group; on timeout the whole group is killed (a bench's child too)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NCCL_DEBUG": os.environ.get("NCCL_DEBUG", "WARN")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return subprocess.CompletedProcess(cmd, 124, out or "", f"timed out after {timeout:.0f} s")


def nge(*args: str) -> list[str]:
    return [sys.executable, "-m", "nge", *args]


def tests(smoke: bool, budget: Budget) -> dict:
    """The CUDA tests (on the CPU they are collected and skipped)."""
    proc = sh([sys.executable, "-m", "pytest", "-q", "-o", "addopts=--strict-markers", "-p", "no:cacheprovider",
               "-m", "cuda", "tests/test_cuda.py"], budget.left(240))
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    ok = proc.returncode == 0 and (smoke or ("passed" in last and "skipped" not in last))
    return {"ok": ok, "summary": last, "tail": "" if ok else (proc.stdout + proc.stderr)[-2000:]}


def bench(smoke: bool, budget: Budget) -> list[dict]:
    """`nge bench` per step kind, batch and precision (smoke: each kind once, fp32, smoke presets)."""
    plan = [(what, batch, amp) for what, batches in (("supernet", (64,)), ("arch-step", (64,)), ("eval", (96, 128)))
            for batch in batches for amp in (False, True)]
    if smoke:
        plan = [("supernet", 64, False), ("arch-step", 64, False), ("eval", 96, False)]
    runs = []
    for what, batch, amp in plan:
        # --in-process: this command is already a process of its own (one torch start, not two)
        args = ["bench", "--what", what, "--device", "cpu" if smoke else "cuda", "--json", "--in-process"]
        args += ["--smoke"] if smoke else ["--batch", str(batch), "--steps", "5", "--warmup", "3"]
        args += ["runtime.amp=true"] if amp else []
        proc = sh(nge(*args), budget.left(120))
        rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{") and line.endswith("}")]
        if proc.returncode or not rows:
            runs.append({"what": what, "batch": batch, "amp": amp, "error": proc.stderr.strip()[-300:]})
            continue
        r = rows[0]
        runs.append({"what": what, "batch": r["batch"], "amp": amp, "images_per_s": r["images_per_s"],
                     "step_ms": r["step_ms"], "peak_mem_mb": r["peak_mem_mb"], "device": r["device"]})
    return runs


def steps_estimate(runs: list[dict]) -> dict | None:
    """The 25-epoch search from the fp32 supernet steps alone: 25K images through the weight step and
    25K through the arch step per epoch (no data loading, evaluation or plots)."""
    ips = {r["what"]: r["images_per_s"] for r in runs if not r["amp"] and "error" not in r}
    if "supernet" not in ips or "arch-step" not in ips:
        return None
    epoch_s = 25_000 / ips["supernet"] + 25_000 / ips["arch-step"]
    return {"epoch_s": round(epoch_s, 1), "estimate_25_epochs_min": round(epoch_s * PAPER_EPOCHS / 60, 1)}


def search_epoch(smoke: bool, budget: Budget, cap: float) -> dict:
    """One epoch of the paper search on synthetic data of CIFAR-10's size; the estimate for 25. The
    run directory is temporary (only the numbers are kept)."""
    tmp = Path(tempfile.mkdtemp(prefix="nge-gpu-check-"))
    try:
        return _search_epoch(smoke, tmp / "run", budget.left(cap))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _search_epoch(smoke: bool, run: Path, timeout: float) -> dict:
    n = 96 if smoke else 50_000
    args = ["search", "--preset", "smoke" if smoke else "paper", "--out", str(run), "--force",
            "search.epochs=1", "runtime.progress=false", f"runtime.device={'cpu' if smoke else 'cuda'}"]
    if not smoke:
        args += ["data.name=synthetic", f"data.synthetic.n_train={n}", "data.synthetic.n_test=1000",
                 "data.synthetic.num_classes=10", "data.synthetic.channels=3", "data.synthetic.size=32"]
    t0 = time.perf_counter()
    proc = sh(nge(*args), timeout)
    wall = time.perf_counter() - t0
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300], "wall_s": round(wall, 1)}
    summary = json.loads((run / "summary.json").read_text())
    epoch_s = summary["wall_seconds"]  # the first epoch, warm-up included: the estimate errs high
    estimate_min = epoch_s * PAPER_EPOCHS / 60
    return {"images": n, "epoch_s": epoch_s, "process_wall_s": round(wall, 1), "device": summary["device"],
            "estimate_25_epochs_min": round(estimate_min, 1), "target_min": TARGET_MINUTES,
            "meets_target": estimate_min <= TARGET_MINUTES}


def environment(smoke: bool) -> dict:
    import torch

    env = {"torch": torch.__version__, "python": sys.version.split()[0], "cpu_smoke": smoke}
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return env


def table(result: dict) -> str:
    lines = [f"# nge GPU check ({result['environment'].get('gpu', 'CPU smoke run')})", "",
             f"torch {result['environment']['torch']}, CUDA {result['environment'].get('cuda', '-')}", ""]
    if "tests" in result:
        t = result["tests"]
        lines += [f"CUDA tests: {'pass' if t.get('ok') else 'FAIL'} ({t.get('summary') or t.get('error')})", ""]
    if isinstance(result.get("bench"), list):
        lines += ["| step | batch | precision | images/s | step (ms) | peak memory (MB) |", "|---|---|---|---|---|---|"]
        for r in result["bench"]:
            prec = "bf16 autocast" if r["amp"] else "fp32"
            if "error" in r:
                lines.append(f"| {r['what']} | {r['batch']} | {prec} | error: {r['error'][:80]} | | |")
            else:
                lines.append(f"| {r['what']} | {r['batch']} | {prec} | {r['images_per_s']} | {r['step_ms']} "
                             f"| {r['peak_mem_mb']} |")
        lines.append("")
    e = result.get("steps_estimate")
    if e:
        lines += [f"From the fp32 supernet steps alone (25K images through each step): {e['epoch_s']} s an epoch, "
                  f"{e['estimate_25_epochs_min']} min for {PAPER_EPOCHS} epochs.", ""]
    s = result.get("search_epoch")
    if s and "error" not in s:
        lines += [f"One epoch of the paper search ({s['images'] // 2} + {s['images'] // 2} images): {s['epoch_s']:.1f} s; "
                  f"estimate for {PAPER_EPOCHS} epochs: {s['estimate_25_epochs_min']} min "
                  f"(target {s['target_min']} min: {'met' if s['meets_target'] else 'not met'}).", ""]
    elif s:
        lines += [f"Search epoch: error: {s['error']}", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--cpu-smoke", action="store_true", help="every step on the CPU at smoke size")
    p.add_argument("--budget", type=float, default=480, help="seconds for the whole check (default 480)")
    p.add_argument("--epoch-timeout", type=float, default=300, help="seconds at most for the search epoch")
    args = p.parse_args()
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no GPU (torch.cuda.is_available() is false); run it on a CUDA machine, "
              "or with --cpu-smoke to check its CPU parts", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"environment": environment(args.cpu_smoke)}

    def save() -> None:
        (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "gpu_check.md").write_text(table(result) + "\n")

    budget = Budget(args.budget)
    steps = (("tests", lambda: tests(args.cpu_smoke, budget)),
             ("search_epoch", lambda: search_epoch(args.cpu_smoke, budget, args.epoch_timeout)),
             ("bench", lambda: bench(args.cpu_smoke, budget)))
    save()
    for name, step in steps:
        t0 = time.perf_counter()
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        try:
            result[name] = step()
        except Exception as e:  # record it and go on: the other steps' numbers still count
            result[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
        result.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
        if name == "bench" and isinstance(result["bench"], list):
            result["steps_estimate"] = steps_estimate(result["bench"])
        save()
    print(table(result))
    bench_ok = isinstance(result["bench"], list) and all("error" not in r for r in result["bench"])
    ok = result["tests"].get("ok", False) and bench_ok and "error" not in result["search_epoch"]
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
