"""scripts/gpu_check.sh without a GPU: one line and exit 1; with --cpu-smoke every step runs on the CPU."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    proc = run(str(tmp_path / "out"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "no GPU" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_and_writes_json_and_a_table(tmp_path):
    out = tmp_path / "out"
    proc = run(str(out), "--cpu-smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["environment"]["cpu_smoke"] and result["tests"]["ok"]
    summary = result["tests"]["summary"]  # every CUDA test collected; on a CPU each one skips
    assert "failed" not in summary and "error" not in summary, summary
    if not torch.cuda.is_available():
        assert re.match(r"\d+ skipped", summary) and "passed" not in summary, summary
    assert [r["what"] for r in result["bench"]] == ["supernet", "arch-step", "eval"]
    assert all(r["images_per_s"] > 0 and r["device"] == "cpu" for r in result["bench"])
    s = result["search_epoch"]
    assert s["estimate_25_epochs_min"] == round(s["epoch_s"] * 25 / 60, 1)  # 0.75 rounds to 0.8, not within 0.05
    table = (out / "gpu_check.md").read_text()
    e = result["steps_estimate"]
    ips = {r["what"]: r["images_per_s"] for r in result["bench"]}
    assert e["epoch_s"] == pytest.approx(25_000 / ips["supernet"] + 25_000 / ips["arch-step"], rel=1e-3)
    assert "| supernet |" in table and "estimate for 25 epochs" in table
