"""`nge bench` in smoke mode: every measurement runs and reports its fields (no speed is asserted)."""

import json
import subprocess
import sys

import pytest

from nge.bench import main

FIELDS = ("what", "form", "images_per_s", "step_ms", "peak_mem_mb", "base_mem_mb", "device", "threads", "batch",
          "input", "channels_last", "input_nhwc", "amp", "torch", "steps", "warmup")


@pytest.mark.slow
def test_smoke_bench_reports_every_measurement():
    proc = subprocess.run([sys.executable, "-m", "nge.bench", "--smoke", "--reference", "--json", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["what"], r["form"]) for r in rows] == [
        ("supernet", "nge"), ("supernet", "reference"), ("arch-step", "nge"), ("arch-step", "reference"),
        ("path-step", "nge"), ("eval", "nge"), ("arch-forward", "nge")]
    for r in rows:
        assert all(k in r for k in FIELDS), r
        assert r["images_per_s"] > 0 and r["step_ms"] > 0 and r["peak_mem_mb"] > 0
        assert r["device"] == "cpu" and r["steps"] == 2 and r["warmup"] == 1
    assert rows[0]["batch"] == 16 and rows[0]["input"] == [3, 16, 16]  # the smoke preset
    assert rows[1]["channels_last"] is False and rows[1]["amp"] is False  # the reference is NCHW fp32


def test_bad_numbers_are_one_line_errors(capsys):
    assert main(["--smoke", "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nge bench: error: --steps") and err.count("\n") == 1
