"""Data parallel with torchrun: 2 CPU processes (gloo) against each other and against one process
with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.join_group import run_under_torchrun

pytestmark = pytest.mark.ddp

HELPER = Path(__file__).parent / "helpers" / "ddp_run.py"
QUIET = ["runtime.progress=false"]


def run(tmp_path: Path, name: str, kind: str, procs: int, *overrides: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = tmp_path / name
    args = [str(HELPER), kind, str(tmp_path / f"{name}-run"), str(result), *QUIET, *overrides]
    if procs > 1:
        # --standalone: a local rendezvous on a free port that torchrun picks itself
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *args]
    else:
        cmd = [sys.executable, *args, "runtime.threads=1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(Path(f"{result}.rank{r}.json").read_text()) for r in range(procs)]


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_search_on_two_processes_matches_one_with_the_same_global_batch(tmp_path):
    common = ["search.epochs=3", "data.synthetic.n_train=768"]
    r0, r1 = run(tmp_path, "ddp", "search", 2, *common, "data.batch_size=64")
    (single,) = run(tmp_path, "one", "search", 1, *common, "data.batch_size=128")
    assert r0["world"] == r1["world"] == 2 and r0["global_batch"] == 128
    # both processes hold exactly the same P after every epoch, hence the same genotype
    assert r0["p_history"] == r1["p_history"] and r0["genotype"] == r1["genotype"]
    # against one process: every quantity but batch norm's statistics (over 64 images per process
    # instead of 128) is the same, so P differs by a few percent of how far it has moved
    p_ddp, p_one = np.array(r0["p_history"]), np.array(single["p_history"])
    assert np.array_equal(p_ddp[0], p_one[0])
    moved = np.abs(p_one - p_one[0]).max()
    assert moved > 0.01
    assert np.abs(p_ddp - p_one).max() <= 0.15 * moved
    assert (Path(tmp_path / "ddp-run") / "genotype.json").is_file()  # written once, by rank 0


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_training_on_two_processes_reports_global_metrics(tmp_path):
    r0, r1 = run(tmp_path, "ddp", "train", 2, "train.epochs=1", "data.batch_size=8")
    assert r0["processes"] == 2 and r0["global_batch"] == 16
    assert r0["final_test_acc"] == r1["final_test_acc"]  # test metrics summed over both shards
    rows = [json.loads(line) for line in (tmp_path / "ddp-run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["test_acc"] == r0["final_test_acc"]


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_one_torchrun_process_joins_the_gloo_group_through_the_runtime():
    """tests/test_cuda.py's process-group check on the CPU: gloo only."""
    proc = run_under_torchrun("cpu")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
