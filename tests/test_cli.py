import json
import subprocess
import sys

import pytest

from nge.arch import build_arch
from nge.cli import main
from nge.profile import count_params
from nge.space import Genotype


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nge", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and fragment in lines[0], lines[0]


SMOKE = ["runtime.progress=false"]


@pytest.mark.slow
def test_smoke_search_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--preset", "smoke", "--out", str(out), *SMOKE]) == 0
    genotype = Genotype.load(out / "genotype.json")
    assert json.loads(capsys.readouterr().out) == genotype.to_dict()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert {"train_loss", "train_acc", "val_loss", "val_acc", "seconds", "lr"} <= set(r)
        assert 0.0 <= r["val_acc"] <= 1.0
    probs = [json.loads(line) for line in (out / "probs.jsonl").read_text().splitlines()]
    assert [p["epoch"] for p in probs] == [0, 1, 2]
    assert len(probs[-1]["normal"]) == 14 and len(probs[-1]["reduce"][0]) == 7
    summary = json.loads((out / "summary.json").read_text())
    assert summary["genotype"] == genotype.to_dict()
    assert summary["params"] > 0 and summary["arch_params"] == count_params(build_arch("nge"))
    assert summary["wall_seconds"] > 0
    for png in ("normal.png", "reduce.png", "probs.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "search:" in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_existing_run_directory_is_refused_then_forced(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("old run")
    assert main(["search", "--preset", "smoke", "--out", str(out), *SMOKE]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--force" in err
    assert (out / "config.yaml").read_text() == "old run"
    assert main(["search", "--preset", "smoke", "--out", str(out), "--force", *SMOKE, "search.epochs=1"]) == 0
    assert (out / "genotype.json").exists() and "old run" not in (out / "config.yaml").read_text()


def test_force_never_deletes_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["search", "--preset", "smoke", "--out", str(tmp_path), "--force", *SMOKE]) == 2
    assert "does not look like an nge run directory" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_resume_with_another_config_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--preset", "smoke", "--out", str(out), *SMOKE, "search.epochs=1"]) == 0
    assert main(["search", "--preset", "smoke", "--out", str(out), "--resume", *SMOKE, "search.epochs=2",
                 "model.C=6"]) == 2
    assert "model.C" in capsys.readouterr().err
    assert main(["search", "--preset", "quick", "--out", str(out), "--resume", *SMOKE]) == 2
    assert "cannot resume" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_continues_a_shorter_run(tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--preset", "smoke", "--out", str(out), *SMOKE, "search.epochs=1"]) == 0
    first = (out / "metrics.jsonl").read_text().splitlines()
    assert main(["search", "--preset", "smoke", "--out", str(out), "--resume", *SMOKE, "search.epochs=2"]) == 0
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2] and rows[0] == first[0]  # epoch 1 kept as it was
    assert [json.loads(r)["epoch"] for r in (out / "probs.jsonl").read_text().splitlines()] == [0, 1, 2]


@pytest.mark.slow
def test_missing_data_root_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("search", "--preset", "quick", "--out", str(out), f"data.root={tmp_path / 'nowhere'}")
    assert_one_line_error(proc, "data.root")
    assert not out.exists()


@pytest.mark.slow
def test_corrupt_idx_is_one_line(tmp_path, fmnist_root):
    f = fmnist_root / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:200])
    proc = run_cli("search", "--preset", "quick", "--out", str(tmp_path / "r"), f"data.root={fmnist_root}")
    assert_one_line_error(proc, "train-images-idx3-ubyte.gz")


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["search", "--preset", "nope"], "unknown search preset"),
        (["search", "--preset", "smoke", "search.epoch=3"], "search.epoch"),
        (["search", "--bogus"], "unrecognized arguments"),
        (["profile", "--preset", "smoke", "model.C=abc"], "model.C"),
    ],
)
def test_bad_input_is_one_line(args, fragment):
    assert_one_line_error(run_cli(*args), fragment)


def test_profile_json(capsys):
    assert main(["profile", "--preset", "paper", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["arch_params"] == count_params(build_arch("nge"))
    assert result["params"] > 1_000_000 and result["mult_adds"] > 100_000_000
    assert result["input"] == [3, 32, 32]


@pytest.mark.slow
def test_a_redirected_log_has_lines_not_bar_updates(tmp_path):
    proc = run_cli("search", "--preset", "smoke", "--out", str(tmp_path / "run"), "search.epochs=1")
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "epoch 1/1  train_loss" in proc.stderr
