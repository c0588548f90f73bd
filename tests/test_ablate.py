import csv
import json
import shutil
import signal
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from nge.ablate import _configs, _Ray, _sets_threads, run_ablation
from nge.arch import ARCH_PARAMS
from nge.cli import main
from nge.config import AblateConfig, available_presets, load_config, seed_range
from nge.data import write_synthetic_folder
from nge.errors import NGEError
from nge.space import Genotype, random_genotype

QUIET = ["runtime.progress=false", "runtime.threads=1"]


@pytest.mark.slow
@pytest.mark.parametrize("param", [name for name in ARCH_PARAMS if name != "nge"])  # nge: test_cli
def test_every_other_parameterisation_drives_a_search(tmp_path, param):
    out = tmp_path / param
    assert main(["search", "--preset", "smoke", "--out", str(out), *QUIET, "search.epochs=1",
                 f"search.arch.name={param}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arch"] == param and summary["arch_params"] == sum(
        p.numel() for p in ARCH_PARAMS[param]().parameters())
    probs = [json.loads(x) for x in (out / "probs.jsonl").read_text().splitlines()]
    assert probs[0]["normal"] != probs[-1]["normal"]  # the arch phase moved P
    assert torch.allclose(torch.tensor(probs[-1]["normal"]).sum(1), torch.ones(14))


@pytest.mark.slow
def test_smoke_ablation_writes_a_table_and_resumes(tmp_path, capsys):
    out = tmp_path / "abl"
    assert main(["ablate", "--preset", "smoke", "--out", str(out), *QUIET]) == 0
    printed = capsys.readouterr().out
    table = (out / "ablation.md").read_text()
    assert printed == table
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| Model | Search val acc (%) | Test acc (%), smoke | RI (%), smoke |")
    default_rows = AblateConfig().rows
    assert [line.split(" | ")[0][2:] for line in lines[1:]] == [r.label or r.name for r in default_rows]
    rows = list(csv.DictReader((out / "ablation.csv").open()))
    assert [r["row"] for r in rows] == [r.name for r in default_rows]
    random, searched = rows[0], rows[1:]
    assert random["search_val_acc"] == "" and json.loads(random["genotype"]) == random_genotype(0).to_dict()
    assert lines[1].split(" | ")[3] == "+0.00"  # RI of the random row against itself
    for r, line in zip(searched, lines[2:], strict=True):
        assert 0 <= float(r["search_val_acc"]) <= 1 and 0 <= float(r["test_acc[smoke]"]) <= 1
        ri = 100 * (float(r["test_acc[smoke]"]) - float(random["test_acc[smoke]"])) / float(random["test_acc[smoke]"])
        assert line.split(" | ")[3] == f"{ri:+.2f}"
        g = Genotype.from_dict(json.loads(r["genotype"]))
        assert int(r["normal_ops"]) == len({op for op, _ in g.normal}) and 0 < float(r["normal_entropy"]) <= 1
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    # a killed ablation: drop the last training run's results, keep its checkpoint; resume redoes only that
    last = out / "nge-seed0" / "train-smoke"
    (last / "summary.json").unlink()
    before = {p: p.stat().st_mtime_ns for p in out.glob("*-seed0/search/summary.json")}
    assert main(["ablate", "--preset", "smoke", "--out", str(out), "--resume", *QUIET]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*-seed0/search/summary.json")} == before
    assert (last / "summary.json").exists()
    assert list(csv.DictReader((out / "ablation.csv").open())) == rows


def test_ablation_refuses_existing_dir_and_bad_params(tmp_path, capsys):
    out = tmp_path / "abl"
    out.mkdir()
    (out / "x").write_text("x")
    assert main(["ablate", "--preset", "smoke", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["ablate", "--preset", "smoke", "--seeds", "0", "--out", str(tmp_path / "n")]) == 2
    assert "seeds must be >= 1" in capsys.readouterr().err
    assert main(["ablate", "--preset", "smoke", "--out", str(tmp_path / "n"), "search.epochs=2"]) == 2
    assert "search" in capsys.readouterr().err  # a key only search has cannot go to every run
    bad_row = {"preset": "smoke", "rows": [{"name": "nge", "search": ["search.arch.shared_offset=2"]}]}
    with pytest.raises(NGEError, match="shared_offset"):
        run_ablation(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AblateConfig), bad_row)), [],
                     tmp_path / "n")
    assert not (tmp_path / "n").exists()


def test_ray_executor_arguments_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    out = tmp_path / "abl"
    for extra, message in ((["--address", "auto"], "needs --executor ray"),
                           (["--executor", "ray", "--threads-per-run", "0"], "--threads-per-run must be >= 1"),
                           (["--threads-per-run", "2", "runtime.threads=2"], "not both")):
        assert main(["ablate", "--preset", "smoke", "--out", str(out), *extra]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        main(["ablate", "--preset", "smoke", "--executor", "dask"])
    assert "invalid choice: 'dask'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as without the extra
    assert main(["ablate", "--preset", "smoke", "--out", str(out), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert err == 'nge: error: --executor ray needs Ray: pip install "nge[ray]"\n'
    assert not out.exists()


def test_missing_data_stops_the_comparison_before_any_run_and_before_ray(tmp_path, capsys, monkeypatch):
    out = tmp_path / "abl"
    monkeypatch.setitem(sys.modules, "ray", None)  # the data is checked before Ray is imported
    no_test = tmp_path / "folder"
    write_synthetic_folder(no_test)
    shutil.rmtree(no_test / "test")  # the searches would run; the first training would fail
    for data, message in ((["data.name=fashion_mnist", "data.root=/nonexistent"],
                           "Fashion-MNIST not found at /nonexistent: install Debian's package dataset-fashion-mnist "
                           "or set data.root=DIR holding the four idx .gz files"),
                          (["data.name=folder", f"data.root={no_test}"],
                           f"missing folder {no_test / 'test'} (expected {no_test}/train/<class>/ and {no_test}/test/<class>/)")):
        for executor in ("sequential", "ray"):
            assert main(["ablate", "--preset", "smoke", "--out", str(out), "--executor", executor, *data]) == 2
            assert capsys.readouterr().err == f"nge: error: {message}\n"
            assert not out.exists()
    # with --address the cluster's nodes may see other files: not checked here, Ray is needed first
    assert main(["ablate", "--preset", "smoke", "--out", str(out), "--executor", "ray", "--address", "auto",
                 "data.name=fashion_mnist", "data.root=/nonexistent"]) == 2
    assert capsys.readouterr().err == 'nge: error: --executor ray needs Ray: pip install "nge[ray]"\n'


def test_ray_queue_starts_runs_in_order_as_the_cluster_s_cpus_and_gpus_hold_them():
    ray = object.__new__(_Ray)
    run = lambda threads, device="cpu": (None, None, None, SimpleNamespace(runtime=SimpleNamespace(  # noqa: E731
        threads=threads, device=device)), None, None)
    ray.gpus, ray.capacity, ray.running = False, (2, 0), {}
    ray.specs = {0: run(1), 1: run(1), 2: run(2), 3: run(1)}
    assert ray._fits(0)
    ray.running = {"ref0": 0}
    assert ray._fits(1) and not ray._fits(2)  # 1 + 1 CPUs fit in 2; 1 + 2 do not
    ray.running = {"ref0": 0, "ref1": 1}
    assert not ray._fits(3)
    ray.running = {}
    assert ray._fits(2)
    ray.specs[4] = run(4)
    assert ray._fits(4)  # alone it starts (the cluster was checked for the most threads at the start)
    ray.gpus, ray.capacity = True, (16, 2)  # GPU runs: one GPU each
    ray.specs.update({5: run(1, "cuda"), 6: run(1, "cuda"), 7: run(1, "cuda"), 8: run(1)})
    ray.running = {"ref5": 5, "ref6": 6}
    assert not ray._fits(7) and ray._fits(8)  # a third GPU run waits; a CPU run (runtime.device=cpu) does not


class _RayError(Exception):
    """ray.exceptions.RayError's stand-in: every Ray failure is one."""


class _TaskError(_RayError):
    """ray.exceptions.RayTaskError's: the task's own exception is its cause."""

    def __init__(self, cause):
        self.cause = cause


def test_ray_get_returns_what_finished_beside_a_failure_and_raises_for_the_rest():
    TaskError = _TaskError  # noqa: N806
    finish_order = ["ref:search", "ref:random", "ref:train"]  # the search fails while the random cell still trains
    outcomes = {"ref:random": {"wall_seconds": 1.0, "final_test_acc": 0.5},
                "ref:search": TaskError(NGEError("train/val split too small")),
                "ref:train": TaskError(NGEError("train/val split too small"))}  # Ray fails a task whose argument failed

    def get(ref):
        if isinstance(outcomes[ref], Exception):
            raise outcomes[ref]
        return outcomes[ref]

    ray = object.__new__(_Ray)
    ray.ray = SimpleNamespace(exceptions=SimpleNamespace(RayError=_RayError, RayTaskError=TaskError), get=get,
                              wait=lambda refs: ([next(r for r in finish_order if r in refs)], []))
    ray.task = SimpleNamespace(options=lambda **_: SimpleNamespace(remote=lambda msg, *_: f"ref:{msg}"))
    ray.gpus, ray.capacity, ray.log, logs = False, (2, 0), None, []
    ray.log = logs.append
    ray.queue, ray.specs, ray.refs, ray.running, ray.results, ray.failures = [], {}, {}, {}, {}, {}
    cfg = SimpleNamespace(runtime=SimpleNamespace(threads=1, device="cpu"))
    random = ray.submit("random", None, None, cfg)
    search = ray.submit("search", None, None, cfg)
    train = ray.submit("train", None, None, cfg, after=search)
    later = ray.submit("later", None, None, cfg)
    assert ray.queue == [later]  # two CPUs: two runs at once, and the training waiting for its search holds none
    assert ray.get(random) == outcomes["ref:random"]  # it finished after the failure: still tabulated
    assert ray.queue == [later] and logs == ["search: failed", "random: finished (1 s)"]  # nothing else started
    for handle in (search, train):
        with pytest.raises(NGEError) as e:
            ray.get(handle)
        assert e.value.failed == [("search", "train/val split too small")] and e.value.not_run == ["train", "later"]


class _FakeRay:
    """Ray as `_Ray` uses it, on a simulated cluster of `cpus` CPUs: a task runs once its argument has finished
    and its CPUs are free (in submission order); `wait` finishes the earliest running task. `running_at`
    records, per finish, which tasks were running then."""

    def __init__(self, cpus: int = 2, outcomes: dict | None = None, init_error: Exception | None = None):
        self.cpus, self.outcomes, self.init_error = cpus, outcomes or {}, init_error
        self.exceptions = SimpleNamespace(RayError=_RayError, RayTaskError=_TaskError)
        self.tasks: list[dict] = []  # in submission order: msg, cpus, after (a task), done, result
        self.running_at: list[set[str]] = []
        self.shut = False

    def is_initialized(self) -> bool:
        return False

    def init(self, **_kw) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as Ray does: its own handler
        if self.init_error is not None:
            raise self.init_error

    def cluster_resources(self) -> dict:
        return {"CPU": float(self.cpus)}

    def shutdown(self) -> None:
        self.shut = True

    def remote(self, _fn):
        def options(num_cpus, num_gpus):
            def remote(msg, _path, _run, _log, after, *_rest):
                self.tasks.append({"msg": msg, "cpus": num_cpus, "after": after, "done": False})
                return self.tasks[-1]["msg"]
            return SimpleNamespace(remote=remote)
        return SimpleNamespace(options=options)

    def _task(self, ref: str) -> dict:
        return next(t for t in self.tasks if t["msg"] == ref)

    def _running(self) -> list[dict]:
        free, out = self.cpus, []
        for t in self.tasks:
            ready = t["after"] is None or self._task(t["after"])["done"]
            if not t["done"] and ready and t["cpus"] <= free:
                free -= t["cpus"]
                out.append(t)
        return out

    def wait(self, refs):
        running = self._running()
        self.running_at.append({t["msg"] for t in running})
        t = next(t for t in running if t["msg"] in refs)
        t["done"] = True
        return [t["msg"]], [r for r in refs if r != t["msg"]]

    def get(self, ref):
        t = self._task(ref)
        if t["after"] is not None and isinstance(self.outcomes.get(t["after"]), Exception):
            raise _TaskError(RuntimeError("its argument failed"))
        outcome = self.outcomes.get(ref, {"wall_seconds": 1.0})
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def _cpu_cfg(threads: int = 1):
    return SimpleNamespace(runtime=SimpleNamespace(threads=threads, device="cpu"))


def test_ray_runs_two_searches_at_once_on_two_cpus_while_their_trainings_wait(monkeypatch):
    import nge.ablate as ablate

    fake = _FakeRay(cpus=2)
    monkeypatch.setattr(ablate, "_import_ray", lambda: fake)
    ray = _Ray(None, 1, lambda _msg: None)
    handles = []
    for row in ("a", "b", "c"):  # per row a search and two trainings on its cell, in table order
        search = ray.submit(f"{row} search", None, None, _cpu_cfg())
        handles += [search] + [ray.submit(f"{row} train {t}", None, None, _cpu_cfg(), after=search) for t in (0, 1)]
    assert [fake.tasks[k]["msg"] for k in range(len(fake.tasks))] == ["a search", "a train 0", "a train 1", "b search",
                                                                    "b train 0", "b train 1"]  # c waits for a CPU
    assert all(ray.get(h)["wall_seconds"] == 1.0 for h in handles)
    assert fake.running_at[0] == {"a search", "b search"}  # the search phase: both CPUs busy
    assert max(len(r) for r in fake.running_at) == 2 and len(fake.tasks) == 9
    ray.close()
    assert fake.shut


def test_every_ray_failure_is_caught_and_reported_in_one_short_line(monkeypatch):
    import nge.ablate as ablate

    class WorkerCrashedError(_RayError):
        pass

    class ObjectLostError(_RayError):
        pass

    long = "x" * 1000
    fake = _FakeRay(cpus=4, outcomes={"crash": WorkerCrashedError("The worker died unexpectedly\nwith a long story"),
                                      "lost": ObjectLostError(long),
                                      "mine": _TaskError(NGEError("train/val split\n too small"))})
    monkeypatch.setattr(ablate, "_import_ray", lambda: fake)
    ray = _Ray(None, 1, lambda _msg: None)
    handles = [ray.submit(msg, None, None, _cpu_cfg()) for msg in ("crash", "lost", "mine", "fine")]
    handles.append(ray.submit("its training", None, None, _cpu_cfg(), after=handles[0]))
    with pytest.raises(NGEError) as e:
        ray.get(handles[-1])
    failed = dict(e.value.failed)
    assert failed["crash"] == "WorkerCrashedError: The worker died unexpectedly"
    assert len(failed["lost"]) == 200 and failed["lost"].startswith("ObjectLostError: xxx")
    assert failed["mine"] == "train/val split too small" and "its training" not in failed  # never ran: its search failed
    assert "\n" not in str(e.value) and ray.get(handles[3]) == {"wall_seconds": 1.0}


def test_a_ray_that_does_not_start_is_one_line_restores_sigterm_and_leaves_no_run_directory(tmp_path, monkeypatch):
    import nge.ablate as ablate

    fake = _FakeRay(init_error=ConnectionError("Could not find any running Ray instance.\nPlease specify ..."))
    monkeypatch.setattr(ablate, "_import_ray", lambda: fake)
    mine = lambda *_: None  # noqa: E731
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        acfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AblateConfig), {
            "preset": "smoke", "search_preset": "smoke", "train_presets": ["smoke"], "rows": [{"name": "random"}]}))
        out = tmp_path / "abl"
        with pytest.raises(NGEError) as e:
            run_ablation(acfg, QUIET, out, executor="ray", address="auto")
        assert str(e.value) == ("Ray did not start at auto (ConnectionError: Could not find any running Ray instance.); "
                                "nothing ran")
        assert signal.getsignal(signal.SIGTERM) is mine and not out.exists()
        out.mkdir()  # with --force an earlier table is not replaced either
        (out / "ablation.yaml").write_text("kept\n")
        with pytest.raises(NGEError, match="Ray did not start"):
            run_ablation(acfg, QUIET, out, force=True, executor="ray", address="auto")
        assert (out / "ablation.yaml").read_text() == "kept\n"
        assert main(["ablate", "--preset", "smoke", "--out", str(tmp_path / "cli"), "--executor", "ray",
                     "--address", "auto"]) == 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not (tmp_path / "cli").exists()


def _csv_without_times(path):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in csv.DictReader(path.open())]


@pytest.mark.slow
def test_ray_executor_gives_the_sequential_results(tmp_path, capfd, fmnist_root):
    pytest.importorskip("ray", reason='the Ray executor needs the extra nge[ray]')
    acfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AblateConfig), {
        "preset": "smoke", "search_preset": "smoke", "search_overrides": ["search.epochs=1"], "train_presets": ["smoke"],
        "train_overrides": ["train.epochs=1"], "rows": [{"name": "random"}, {"name": "nge"}]}))
    run_ablation(acfg, ["runtime.progress=false"], tmp_path / "seq", threads_per_run=1)
    logs = []
    mine = lambda *_: None  # noqa: E731
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        rows = run_ablation(acfg, ["runtime.progress=false"], tmp_path / "ray", log=logs.append, executor="ray",
                            threads_per_run=1)
        assert signal.getsignal(signal.SIGTERM) is mine  # the handler from before ray.init is back
        with pytest.raises(NGEError, match="--threads-per-run 4096 but the Ray cluster has"):
            run_ablation(acfg, [], tmp_path / "big", executor="ray", threads_per_run=4096)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [r["row"] for r in rows] == ["random", "nge"]
    assert _csv_without_times(tmp_path / "ray" / "ablation.csv") == _csv_without_times(tmp_path / "seq" / "ablation.csv")
    for run in ("search/probs.jsonl", "search/metrics.jsonl"):
        ray_lines = (tmp_path / "ray" / "nge-seed0" / run).read_text().splitlines()
        seq_lines = (tmp_path / "seq" / "nge-seed0" / run).read_text().splitlines()
        if run.endswith("probs.jsonl"):
            assert ray_lines == seq_lines  # P bitwise, every epoch
        else:
            drop = lambda line: {k: v for k, v in json.loads(line).items() if "seconds" not in k}  # noqa: E731
            assert [drop(x) for x in ray_lines] == [drop(x) for x in seq_lines]
    finished = sorted(line.split(": finished (")[0] for line in logs if ": finished (" in line)  # the driver's lines
    assert finished == ["ablation [1/2] random, seed 0: train (smoke)", "ablation [2/2] nge, seed 0: search",
                        "ablation [2/2] nge, seed 0: train (smoke)"]
    cfg = yaml.safe_load((tmp_path / "ray" / "nge-seed0" / "train-smoke" / "config.yaml").read_text())
    assert cfg["runtime"]["threads"] == 1
    # a search that fails in its task: the running runs end, nothing else starts, its training is "not run"
    bad = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AblateConfig), {
        "preset": "smoke", "search_preset": "smoke", "search_overrides": ["search.epochs=1"], "train_presets": ["smoke"],
        "train_overrides": ["train.epochs=1"],
        "rows": [{"name": "random"}, {"name": "nge", "search": ["data.train_portion=0.999"]}, {"name": "darts"}]}))
    with pytest.raises(NGEError) as e:
        run_ablation(bad, ["runtime.progress=false"], tmp_path / "fail", log=lambda *_: None, executor="ray",
                     threads_per_run=1)
    msg = str(e.value)
    assert msg.startswith("1 run(s) failed: ablation [2/3] nge, seed 0: search: train/val split") and "\n" not in msg
    assert e.value.not_run[0] == "ablation [2/3] nge, seed 0: train (smoke)" and len(e.value.not_run) >= 1
    assert (tmp_path / "fail" / "random-seed0" / "train-smoke" / "summary.json").is_file()  # it ran to its end
    assert [r["row"] for r in csv.DictReader((tmp_path / "fail" / "ablation.csv").open())] == ["random"]  # tabulated
    assert (tmp_path / "fail" / "ablation.png").read_bytes()[:4] == b"\x89PNG"  # and drawn
    assert not (tmp_path / "fail" / "nge-seed0" / "train-smoke").exists()
    # an NGEError inside a task (a file that is there, so the check before Ray passes, but truncated):
    # exit status 2 and one line, as in one process; Ray's own lines and the runs' logs may come
    # before it, but no traceback and no other error, anywhere in this process's stderr
    victim = fmnist_root / "train-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:40])
    capfd.readouterr()
    assert main(["ablate", "--preset", "smoke", "--out", str(tmp_path / "bad"), "--executor", "ray",
                 "data.name=fashion_mnist", f"data.root={fmnist_root}"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Unhandled error" not in err and err.count("nge: error") == 1, err
    assert err.endswith("\n") and err.splitlines()[-1].startswith(
        f"nge: error: 1 run(s) failed: ablation [1/5] random, seed 0: train (smoke): cannot read idx file {victim}: "), err


@pytest.mark.parametrize("name", available_presets("ablate"))
def test_every_shipped_ablation_preset_expands_to_valid_runs(name):
    acfg = load_config(AblateConfig, "ablate", name, [])
    configs = _configs(acfg, [], 1)
    searched = [r for r in acfg.rows if r.name != "random" and r.genotype is None]
    assert {k[:2] for k in configs if k[-1] == "search"} == {(r.name, s) for r in searched for s in seed_range(acfg)}
    rows = {r.name: r for r in acfg.rows}
    assert all(c.runtime.threads == 1 for k, c in configs.items() if not _sets_threads(rows[k[0]].search))


def test_search_time_in_the_table_includes_perturbation_selection(tmp_path, monkeypatch):
    import nge.ablate as ablate

    g, p = random_genotype(0), torch.full((14, 7), 1 / 7).tolist()

    def search(cfg, path, log, force, resume):
        path.mkdir(parents=True)
        (path / "probs.jsonl").write_text(json.dumps({"normal": p, "reduce": p}) + "\n")
        return {"final_val_acc": 0.5, "wall_seconds": 60.0, "select_seconds": 30.0, "genotype": g.to_dict()}

    monkeypatch.setattr(ablate, "run_search", search)
    monkeypatch.setattr(ablate, "run_train", lambda *a, **k: {"final_test_acc": 0.5, "wall_seconds": 6.0})
    acfg = AblateConfig(seeds=1, search_preset="smoke", train_presets=["smoke"],
                        rows=[AblateConfig().rows[-1]])  # one searched row
    rows = run_ablation(acfg, [], tmp_path / "abl", force=False, resume=False, log=lambda _: None)
    assert rows[0]["search_seconds"] == 90.0
    assert "| 1.5 |" in (tmp_path / "abl" / "ablation.md").read_text()  # 90 s of search: 1.5 min
