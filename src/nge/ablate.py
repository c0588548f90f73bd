"""Comparisons of search methods (the paper's Table 4 and the random-cell baseline).

A comparison is a list of rows; every row runs the same search preset with its own overrides
(e.g. `search.arch.name=darts`), one search per seed, and every derived genotype is trained with each
training preset. The row named `random` searches nothing: seed k trains `random:k`, a cell drawn
uniformly from the search space. Each search and training run is an ordinary run directory;
rerunning with `--resume` skips finished runs and resumes an interrupted one from its checkpoint.
The runs go one after another in this process, or (executor="ray") as Ray tasks, all at once.

Tables report, per row, mean ± std over seeds and the relative improvement over the random cells,
RI = 100 x (acc - acc_random) / acc_random (Yang et al., "NAS evaluation is frustratingly hard",
ICLR 2020), with the search telemetry at the end of the search.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import signal
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from nge.config import RANDOM_ROW, AblateConfig, SearchRunConfig, TrainRunConfig, load_config, preset_name, to_yaml, validate
from nge.engine import RunDir, atomic_write_text, single_process
from nge.errors import NGEError
from nge.genotypes import resolve_genotype
from nge.searching import run_search
from nge.space import Genotype
from nge.telemetry import op_counts, probs_telemetry
from nge.training import run_train


def _configs(acfg: AblateConfig, overrides: list[str]) -> dict:
    """Every search and training config of the comparison, validated before anything runs."""
    validate(acfg)
    configs = {}
    for row in acfg.rows:
        for seed in range(acfg.seeds):
            if row.name != RANDOM_ROW:
                s = load_config(SearchRunConfig, "search", row.search_preset or acfg.search_preset,
                                [*acfg.search_overrides, *overrides, *row.search, f"runtime.seed={seed}"])
                configs[row.name, seed, "search"] = s
            for tp in acfg.train_presets:
                t = load_config(TrainRunConfig, "train", tp, [*acfg.train_overrides, *overrides, f"runtime.seed={seed}"])
                configs[row.name, seed, tp] = t
    return configs


def _run_or_resume(path: Path, run: Callable[..., dict]) -> dict:
    """A finished run is read back; an interrupted one resumed; anything else (re)started."""
    if (path / "summary.json").is_file():
        return json.loads((path / "summary.json").read_text())
    if (path / RunDir.CHECKPOINT).is_file():
        return run(force=False, resume=True)
    return run(force=True, resume=False)


def _final_telemetry(search_dir: Path) -> dict:
    """Telemetry of the final P, read from the run's probs.jsonl (its last row)."""
    last = json.loads((search_dir / "probs.jsonl").read_text().splitlines()[-1])
    return probs_telemetry(last["normal"], last["reduce"])


def _distinct_ops(genotype: Genotype) -> dict:
    return {f"{c}_ops": len(op_counts(getattr(genotype, c))) for c in ("normal", "reduce")}


def _task(msg: str, path: Path, run: Callable[..., dict], log=None, after: dict | None = None) -> dict:
    """One search or training run, in this process or as a Ray task (log None: to stderr, which Ray
    forwards to the driver). `after`: the result of the search it trains (unused; a Ray task waits for it)."""
    log = log or partial(print, file=sys.stderr, flush=True)
    log(msg)
    return _run_or_resume(path, partial(run, log=log))


class _Sequential:
    """Runs each task at once, in this process."""

    parallel = False

    def __init__(self, log):
        self.log = log

    def submit(self, msg: str, path: Path, run: Callable[..., dict], cfg, after=None) -> dict:
        return _task(msg, path, run, self.log, after)

    def get(self, result: dict | None) -> dict | None:
        return result

    def close(self) -> None:
        pass


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _import_ray():
    try:
        import ray
    except ImportError:
        raise NGEError('--executor ray needs Ray: pip install "nge[ray]"') from None
    return ray


class _Ray:
    """Each run a Ray task holding one GPU (where the cluster has GPUs and the run may use one) or
    `threads` CPUs; every run is submitted at once, trainings wait for their search."""

    parallel = True

    def __init__(self, address: str | None, threads: int, log):
        self.ray, self.threads, self.log = _import_ray(), threads, log
        self.started = not self.ray.is_initialized()
        if self.started:  # else: the caller's connection, left open; address None starts a local instance
            self.ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
            signal.signal(signal.SIGTERM, _interrupt)  # in place of Ray's handler, which dumps a stack
        resources = self.ray.cluster_resources()
        self.gpus = resources.get("GPU", 0) > 0
        if resources.get("CPU", 0) < threads:
            self.close()
            raise NGEError(f"--threads-per-run {threads} but the Ray cluster has {resources.get('CPU', 0):g} CPUs")
        self.task = self.ray.remote(_task)
        self.pending: dict = {}  # ObjectRef -> message, until its line is logged

    def submit(self, msg: str, path: Path, run: Callable[..., dict], cfg, after=None):
        gpu = int(self.gpus and cfg.runtime.device != "cpu")
        ref = self.task.options(num_cpus=self.threads, num_gpus=gpu).remote(msg, path, run, None, after)
        self.pending[ref] = msg
        return ref

    def _result(self, ref) -> dict:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, NGEError):
                raise e.cause from None  # one line, as in this process
            raise

    def get(self, ref):
        """`ref`'s result; meanwhile a line per run that finishes, in the order they finish."""
        if ref is None:
            return None
        while ref in self.pending:
            [done], _ = self.ray.wait(list(self.pending))
            self.log(f"{self.pending.pop(done)}: finished ({self._result(done)['wall_seconds']:.0f} s)")
        return self._result(ref)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def _submit(acfg: AblateConfig, configs: dict, out: Path, ex):
    """Per (row, seed), in table order: its search (None for random cells), its trainings by preset."""
    total = len(acfg.rows) * acfg.seeds
    for k, (spec, seed) in enumerate(((r, s) for r in acfg.rows for s in range(acfg.seeds)), 1):
        name, base, what = spec.name, out / f"{spec.name}-seed{seed}", f"ablation [{k}/{total}] {spec.name}, seed {seed}"
        sdir, search = base / "search", None
        if name == RANDOM_ROW:
            genotype_spec = f"random:{seed}"
        else:
            cfg = configs[name, seed, "search"]
            search, genotype_spec = ex.submit(f"{what}: search", sdir, partial(run_search, cfg, sdir), cfg), str(sdir)
        trains = {}
        for tp in acfg.train_presets:
            cfg, tdir = configs[name, seed, tp], base / f"train-{preset_name(tp)}"
            trains[tp] = ex.submit(f"{what}: train ({tp})", tdir, partial(run_train, cfg, genotype_spec, tdir), cfg, search)
        yield name, seed, sdir, genotype_spec, search, trains


def run_ablation(acfg: AblateConfig, overrides: list[str], out: Path, force: bool = False, resume: bool = False,
                 log=print, executor: str = "sequential", address: str | None = None,
                 threads_per_run: int | None = None) -> list[dict]:
    """executor="ray": every run a Ray task on the cluster at `address` (None: a new local instance),
    each with `threads_per_run` CPUs and as many torch threads (runtime.threads; default 1)."""
    single_process("nge ablate")
    if executor not in ("sequential", "ray"):
        raise NGEError(f"unknown executor {executor!r} (sequential or ray)")
    if executor == "sequential" and (address is not None or threads_per_run is not None):
        raise NGEError("--address and --threads-per-run need --executor ray")
    threads = 1 if threads_per_run is None else threads_per_run
    if threads < 1:
        raise NGEError(f"--threads-per-run must be >= 1, got {threads}")
    if executor == "ray" and any(o.split("=", 1)[0].strip() == "runtime.threads" for o in overrides):
        raise NGEError("with --executor ray give --threads-per-run instead of runtime.threads")
    configs = _configs(acfg, overrides)
    if executor == "ray":
        _import_ray()  # before any work
        for cfg in configs.values():  # as many torch threads as the task holds CPUs
            cfg.runtime.threads = threads
    out = Path(out)
    run = RunDir.open(out, force, resume, resumes_from="ablation.yaml")
    run.write_text("ablation.yaml", to_yaml(acfg) + f"overrides: {json.dumps(overrides)}\n")
    ex = _Ray(address, threads, log) if executor == "ray" else _Sequential(log)
    rows: list[dict] = []
    try:
        plan = _submit(acfg, configs, out.resolve() if ex.parallel else out, ex)
        if ex.parallel:
            plan = list(plan)  # submit everything now; sequentially each row runs when the loop reaches it
        for name, seed, sdir, genotype_spec, search_ref, trains in plan:
            search = ex.get(search_ref)
            genotype = resolve_genotype(genotype_spec) if search is None else Genotype.from_dict(search["genotype"])
            row = {"row": name, "seed": seed, "search_val_acc": None, "search_seconds": 0.0}
            if search is not None:
                row.update(search_val_acc=search["final_val_acc"], search_seconds=search["wall_seconds"],
                           **_final_telemetry(sdir))
            row.update({"genotype": json.dumps(genotype.to_dict()), **_distinct_ops(genotype)})
            for tp, ref in trains.items():
                train = ex.get(ref)
                row[f"test_acc[{tp}]"] = train["final_test_acc"]
                row[f"train_seconds[{tp}]"] = train["wall_seconds"]
                row[f"params[{tp}]"] = train["params"]
            rows.append(row)
            write_tables(rows, acfg, run)
    except KeyboardInterrupt:
        if not ex.parallel:
            raise
        raise NGEError(f"interrupted; the finished runs in {out} are kept and the others continue from their last "
                       "finished epoch when the same command runs again with --resume") from None
    finally:
        ex.close()
    from nge import viz

    labels = {r.name: r.label or r.name for r in acfg.rows}
    viz.plot_ablation(rows, list(labels), acfg.train_presets, run.file("ablation.png"), labels)
    return rows


def _values(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None]  # None: not searched, or every step skipped


def _mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f}"
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def write_tables(rows: list[dict], acfg: AblateConfig, run: RunDir) -> None:
    """ablation.csv: one line per (row, seed); ablation.md: mean ± std per row, RI against random."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    run.write_text("ablation.csv", buf.getvalue())
    seeds = {r["seed"] for r in rows}
    tps = acfg.train_presets
    head = ["Model", "Search val acc (%)"] + [f"Test acc (%), {tp}" for tp in tps] + [f"RI (%), {tp}" for tp in tps]
    head += ["Distinct ops (normal / reduce)", "P entropy (normal / reduce)", "Search time (min)",
             "Train time (min)", "Seeds"]
    random = [r for r in rows if r["row"] == RANDOM_ROW]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec in acfg.rows:
        mine = [r for r in rows if r["row"] == spec.name]
        if not mine:
            continue
        cells = [spec.label or spec.name, _mean_std(_values(mine, "search_val_acc"))]
        cells += [_mean_std(_values(mine, f"test_acc[{tp}]")) for tp in tps]
        for tp in tps:
            ref, acc = _values(random, f"test_acc[{tp}]"), _values(mine, f"test_acc[{tp}]")
            ri = 100 * (statistics.mean(acc) - statistics.mean(ref)) / statistics.mean(ref) if ref and acc else None
            cells.append("n/a" if ri is None else f"{ri:+.2f}")
        cells.append(" / ".join(_mean_std(_values(mine, f"{c}_ops"), 1, 1) for c in ("normal", "reduce")))
        cells.append(" / ".join(_mean_std(_values(mine, f"{c}_entropy"), 1, 3) for c in ("normal", "reduce")))
        cells.append("n/a" if spec.name == RANDOM_ROW else f"{statistics.mean(r['search_seconds'] for r in mine) / 60:.1f}")
        train_s = [sum(r[f"train_seconds[{tp}]"] for tp in tps) for r in mine]
        cells += [f"{statistics.mean(train_s) / 60:.1f}", str(len(mine))]
        lines.append("| " + " | ".join(cells) + " |")
    presets = sorted({r.search_preset for r in acfg.rows if r.search_preset and r.name != RANDOM_ROW} - {acfg.search_preset})
    others = f" (rows may name another: {', '.join(presets)})" if presets else ""
    note = (f"\nSearch preset `{acfg.search_preset}`{others}, training presets {', '.join(tps)}; mean ± std over "
            f"{len(seeds)} seed(s) where more than one; accuracies are final-epoch values. RI: relative improvement "
            "of the mean test accuracy over the random cells'. Distinct ops: in the derived cells (8 edges each); "
            "P entropy: mean normalised entropy of P's rows at the end of the search (1 = uniform).\n")
    atomic_write_text(run.file("ablation.md"), "\n".join(lines) + "\n" + note)
