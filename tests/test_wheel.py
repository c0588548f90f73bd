"""Packaging: `python -m build` makes a wheel that installs into a clean venv and runs `nge --help`.

Offline: the build uses this environment's setuptools (--no-isolation) and the wheel is installed
without its dependencies (`nge --help` needs none of them; everything else is tested in place)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_built_wheel_installs_and_runs(tmp_path):
    pytest.importorskip("build")
    src = tmp_path / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                    str(src)], check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "dist").glob("nge-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "nge/presets/search/smoke.yaml" in names and "nge/presets/ablate/compare.yaml" in names
    assert "nge/spaces/nb201_table.csv.xz" in names and "nge/presets/search/nb201-quick.yaml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    assert "Classifier: License :: OSI Approved :: MIT License" in meta and "Provides-Extra: onnx" in meta
    venv = tmp_path / "venv"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of this checkout on the path
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=clean)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=300, env=clean)
    help_ = subprocess.run([str(venv / "bin/nge"), "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           env=clean)
    assert help_.returncode == 0, help_.stderr
    for command in ("search", "train", "export", "predict", "ablate", "lookup"):
        assert command in help_.stdout
    version = subprocess.run([str(venv / "bin/nge"), "--version"], capture_output=True, text=True, timeout=120, env=clean)
    assert version.stdout.strip() == "nge 0.1.0"
