"""The Python API: names that no submodule shadows, overrides with their Python types, NGEError
instead of SystemExit, and the README's "From Python" block as written."""

from __future__ import annotations

import importlib.util
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import nge
from nge.config import TrainRunConfig, load_config
from nge.data import write_synthetic_folder
from nge.errors import NGEError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_api_names_are_functions_no_submodule_shadows():
    import nge.api
    import nge.inference
    import nge.searching
    import nge.training  # noqa: F401  (importing submodules binds their names on the package)

    assert nge.search is nge.api.search and nge.train is nge.api.train and nge.load is nge.inference.load
    assert callable(nge.search) and callable(nge.train) and callable(nge.load)
    for name in ("search", "train", "load"):
        assert importlib.util.find_spec(f"nge.{name}") is None
    assert nge.NGEError is NGEError


def test_overrides_keep_their_python_types():
    cfg = load_config(TrainRunConfig, "train", "smoke",
                      {"data.name": "folder", "data.root": "null", "data": {"batch_size": 7}})
    assert cfg.data.root == "null" and cfg.data.batch_size == 7
    assert load_config(TrainRunConfig, "train", "smoke", {"data.name": "folder", "data.root": Path("a/${b}")}).data.root \
        == "a/${b}"
    with pytest.raises(NGEError, match="needs data.root"):  # on the command line, null is YAML's None
        load_config(TrainRunConfig, "train", "smoke", ["data.name=folder", "data.root=null"])
    for bad, msg in (({"data.nope": 1}, "nope"), ({"data.batch_size": "many"}, "batch_size"),
                     ({"data.batch_size": 0}, "batch_size must be >= 1"),
                     ({"data.batch_size": 2, "data": {"batch_size": 3}}, "twice"),
                     ({"data.resize": 300}, "no effect")):
        with pytest.raises(NGEError, match=msg):
            load_config(TrainRunConfig, "train", "smoke", bad)


def test_api_errors_are_ngeerror_not_systemexit(tmp_path):
    with pytest.raises(NGEError, match="unknown search preset"):
        nge.search(preset="nope", out=tmp_path / "s")
    with pytest.raises(NGEError, match="genotype must be"):
        nge.train(123, preset="smoke", out=tmp_path / "t")
    with pytest.raises(NGEError, match="section data is given both"):
        nge.train("DARTS_V2", preset="smoke", out=tmp_path / "t", overrides={"data.limit": 4}, data={"limit": 8})
    with pytest.raises(NGEError, match="must be a dict"):
        nge.search(preset="smoke", out=tmp_path / "s", data="toy")
    with pytest.raises(NGEError, match="no trained weights"):
        (tmp_path / "s").mkdir()
        (tmp_path / "s" / "probs.jsonl").write_text("")
        nge.load(tmp_path / "s")
    assert not (tmp_path / "t").exists()


def test_quiet_mode_drops_this_thread_s_output_only_and_keeps_none_of_it(capsys):
    import sys
    import threading
    import tracemalloc

    from nge.api import _contained

    stdout, stderr = sys.stdout, sys.stderr
    with _contained(False) as log:
        log("a log line")
        print("this thread")
        print("this thread too", file=sys.stderr)
        other = threading.Thread(target=lambda: (print("another thread"), print("its error", file=sys.stderr)))
        other.start()
        other.join()
        with _contained(False):  # nested: still quiet after the inner one ends
            print("inner")
        print("after the inner one")
        tracemalloc.start()
        for _ in range(2000):  # 20 MB written, none of it kept
            sys.stdout.write("x" * 10_000)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert sys.stdout is stdout and sys.stderr is stderr  # put back
    print("after")
    out, err = capsys.readouterr()
    assert out == "another thread\nafter\n" and err == "its error\n" and peak < 1_000_000


@pytest.mark.slow
def test_readme_python_block_runs_as_written_silently_and_restores_state(tmp_path, capfd, monkeypatch):
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text[text.index("## From Python\n"):], re.S).group(1)
    write_synthetic_folder(tmp_path / "toy")
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    before = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    capfd.readouterr()
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102
    out, err = capfd.readouterr()
    assert err == ""  # log=False: no run log, no progress, no warnings
    lines = out.splitlines()
    assert len(lines) == 4 and lines[2] in ("blue", "green", "red")  # only the block's own prints
    assert torch.get_num_threads() == 2  # the runs used 1 thread
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
    found, trained, model = scope["found"], scope["trained"], scope["model"]
    assert found.genotype == trained.genotype and trained.run_dir == Path("runs/py-train")
    assert (tmp_path / "runs/py-search/genotype.json").is_file() and os.path.isfile(trained.run_dir / "model.pt")
    assert trained.summary["final_test_acc"] == float(lines[1]) and not model.training
    assert model.classes == ("blue", "green", "red") and trained.load().classes == model.classes
