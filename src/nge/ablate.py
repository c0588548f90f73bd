"""Comparisons of search methods (the paper's Table 4 and the random-cell baseline).

A comparison is a list of rows; every row runs the same search preset with its own overrides
(e.g. `search.arch.name=darts`), one search per seed, and every derived genotype is trained with each
training preset. The row named `random` searches nothing: seed k trains `random:k`, a cell drawn
uniformly from the search space. Each search and training run is an ordinary run directory;
rerunning with `--resume` skips finished runs and resumes an interrupted one from its checkpoint.
`--reuse` takes finished runs from an earlier table's ablation.csv instead (its run directories may be
gone): a line is reused where its row, seeds, genotype and settings match. A line stores each run's
settings (`settings`, as JSON in its config[...] columns) and they are compared key by key, a key that
one side lacks read as its schema default (so a new key at its default keeps every line); every line not
reused is logged with the first key that differs. Older tables hold a 12-hex fingerprint instead: it is
compared with the hash of today's settings computed as it was then (`fingerprint`: blind to data.root
and runtime.threads, and without the keys added since, nge.config.KEYS_SINCE_FINGERPRINTS, where they
hold their schema default).
The runs go one after another in this process, or (executor="ray") as Ray tasks, all at once.

Tables report, per row, mean ± std over seeds and the relative improvement over the random cells,
RI = 100 x (acc - acc_random) / acc_random (Yang et al., "NAS evaluation is frustratingly hard",
ICLR 2020), with the search telemetry at the end of the search.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import re
import signal
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import yaml

from nge import viz
from nge.config import (
    KEYS_SINCE_FINGERPRINTS,
    RANDOM_ROW,
    RESUME_MAY_CHANGE,
    ROOT_IS_DATA,
    AblateConfig,
    DataConfig,
    SearchRunConfig,
    TrainRunConfig,
    ablate_trainings,
    inert_keys,
    load_config,
    schema_defaults,
    seed_range,
    to_dict,
    to_yaml,
    validate,
)
from nge.data import check_files
from nge.engine import RunDir, atomic_write_text, late_stop, single_process
from nge.engine.rundir import check_resume_config, resume_checked
from nge.errors import NGEError
from nge.genotypes import load_genotype, resolve_genotype
from nge.searching import run_search
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, Genotype
from nge.spaces import genotype_from_dict, get_space, nb201, space_of
from nge.stats import (
    bootstrap,
    bootstrap_pairs,
    corrected_spearman,
    holm,
    icc,
    kendall,
    n_for_power,
    paired_t_p,
    resample,
    smallest_difference,
    spearman,
    t_interval_90,
)
from nge.telemetry import RANDOM_AGREEMENT, agreement, mean_agreement, probs_telemetry, random_cells_agreement
from nge.training import run_train


def train_seed(seed: int, t: int) -> int:
    """runtime.seed of the t-th training of the cell of `seed` (t = 0: the cell's own seed, as before train_seeds)."""
    return seed + 1000 * t


def _configs(acfg: AblateConfig, overrides: list[str], threads: int | None) -> dict:
    """Every search and training config of the comparison, validated before anything runs.
    `threads` (--threads-per-run): every run's runtime.threads; None: each config's own."""
    validate(acfg)
    configs = {}
    for row in acfg.rows:
        for seed in seed_range(acfg):
            if row.name != RANDOM_ROW and row.genotype is None:
                s = load_config(SearchRunConfig, "search", row.search_preset or acfg.search_preset,
                                [*acfg.search_overrides, *overrides, *row.search, f"runtime.seed={seed}"])
                configs[row.name, seed, "search"] = s
            for tr in ablate_trainings(acfg):
                n = tr.row_seeds.get(row.name, tr.seeds)
                if n is not None and seed - acfg.first_seed >= n:
                    continue
                for t in range(acfg.train_seeds):
                    configs[row.name, seed, tr.name, t] = load_config(
                        TrainRunConfig, "train", tr.preset, [*tr.overrides, *overrides, f"runtime.seed={train_seed(seed, t)}"])
    spaces = {str(c.search.space) for k, c in configs.items() if k[-1] == "search"}
    if len(spaces) > 1:
        raise NGEError(f"bad configuration: the rows search different spaces ({', '.join(sorted(spaces))}); compare one space")
    if not ablate_trainings(acfg) and not get_space(_space(configs)).has_ground_truth:
        raise NGEError(f"bad configuration: train_presets is empty; the {_space(configs)} space has no table of trained "
                       "cells, so its cells must be trained")
    own = _own_threads(acfg)
    if threads is not None:
        for key, cfg in configs.items():
            if key not in own:  # a row's own runtime.threads (a numerical perturbation) is kept
                cfg.runtime.threads = threads
    return configs


def _space(configs: dict) -> str:
    """The space the comparison searches (darts where no row searches)."""
    return next((str(c.search.space) for k, c in configs.items() if k[-1] == "search"), "darts")


def _sets_threads(overrides: list[str]) -> bool:
    return any(o.split("=", 1)[0].strip() == "runtime.threads" for o in overrides)


def _own_threads(acfg: AblateConfig) -> set[tuple]:
    """The searches whose row sets runtime.threads itself: a numerical perturbation, so it counts in their settings."""
    return {(r.name, seed, "search") for r in acfg.rows for seed in seed_range(acfg) if _sets_threads(r.search)}


def _thread_twins(acfg: AblateConfig, configs: dict) -> list[tuple[str, str]]:
    """Pairs of searched rows whose searches differ in runtime.threads only: the same search under a
    numerical perturbation (float rounding changes with the thread count)."""
    def without_threads(cfg) -> dict:
        d = to_dict(cfg)
        return {**d, "runtime": {k: v for k, v in d["runtime"].items() if k != "threads"}, "preset": None}

    searched = [r.name for r in acfg.rows if (r.name, acfg.first_seed, "search") in configs]
    twins = []
    for a, b in itertools.combinations(searched, 2):
        pairs = [(configs[a, s, "search"], configs[b, s, "search"]) for s in seed_range(acfg)]
        if all(x.runtime.threads != y.runtime.threads and without_threads(x) == without_threads(y) for x, y in pairs):
            twins.append((a, b))
    return twins


def _check_finished(path: Path, cfg, genotype_spec: str | None) -> None:
    """A finished run is reused only if it ran the configuration (and genotype) the comparison now asks for."""
    saved = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else None
    if saved is None:
        raise NGEError(f"{path} is finished but has no config.yaml to check; delete it or use --force")
    try:
        check_resume_config(saved, to_dict(cfg), (*RESUME_MAY_CHANGE, *inert_keys(cfg)), schema_defaults(type(cfg)))
    except NGEError as e:
        raise NGEError(f"{path}: {str(e).removeprefix('cannot resume: ')}; the finished run was made with other "
                       "settings (delete it to run it again)") from None
    if genotype_spec is not None:
        want, saved_g = resolve_genotype(genotype_spec), path / "genotype.json"
        if not saved_g.is_file() or load_genotype(saved_g) != want:
            raise NGEError(f"{path}: trained another genotype than {genotype_spec} now gives (delete it to run it again)")


def _check_data(configs: dict) -> None:
    """Every run's data folders and files are there (not read), or one run's would-be NGEError now."""
    seen = set()
    for k, cfg in configs.items():
        key = str(cfg.data.name), cfg.data.root, k[2] != "search"  # only training reads the test split
        if key not in seen:
            seen.add(key)
            check_files(*key)


def settings(cfg, threads: bool = False) -> dict:
    """What a --reuse line must match, as {dotted key: value}: a run's settings, blind to what a resume may
    change, to the preset's name or path (its values count) and to data.root where it only says where a
    standard data set lies (it counts where it is the data set: `ROOT_IS_DATA`, so two folders of images
    are never mixed). runtime.threads counts where `threads` (a row's own: a numerical perturbation)."""
    blind = {*RESUME_MAY_CHANGE, *inert_keys(cfg), "preset"}
    data = getattr(cfg, "data", None)
    if isinstance(data, DataConfig) and data.name not in ROOT_IS_DATA:
        blind.add("data.root")
    if threads:
        blind.discard("runtime.threads")
    return resume_checked(to_dict(cfg), tuple(blind))


def _settings_cell(cfg, threads: bool = False) -> str:
    """A line's config[...] column: the run's `settings` as JSON."""
    return json.dumps(settings(cfg, threads), sort_keys=True)


_FINGERPRINT = re.compile(r"[0-9a-f]{12}")  # an older table's config[...] column
_ABSENT = object()  # a key without a schema default that one side lacks


def _old_hash(values: dict, schema: type) -> str:
    """`values` (settings) hashed as the tables before stored settings did: blind to data.root and runtime.threads,
    without the keys added since (KEYS_SINCE_FINGERPRINTS) where they hold their schema default."""
    defaults = schema_defaults(schema)

    def added_at_default(k: str, v) -> bool:
        return any(k == m or k.startswith(m + ".") for m in KEYS_SINCE_FINGERPRINTS) and defaults.get(k, _ABSENT) == v

    kept = {k: v for k, v in values.items() if k not in ("data.root", "runtime.threads") and not added_at_default(k, v)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def fingerprint(cfg) -> str:
    """A run's settings in 12 hex digits, as the older tables recorded them (what their lines are checked with)."""
    return _old_hash(settings(cfg), type(cfg))


def _parsed(cell: str) -> dict | None:
    """A config[...] column's stored settings, or None where it holds none."""
    try:
        values = json.loads(cell)
    except ValueError:
        return None
    return values if isinstance(values, dict) else None


def _disagreement(cell: str, now: dict, schema: type) -> str | None:
    """Why a line's config[...] column is not the settings `now`; None where they agree. Stored settings are
    compared key by key, a key that one side lacks read as its schema default there (the first differing key
    named, keys both sides have first); a 12-hex fingerprint (an older table's) with `_old_hash`."""
    if _FINGERPRINT.fullmatch(cell):
        return None if cell == _old_hash(now, schema) else f"its settings fingerprint {cell} (an older table's) is not today's"
    table = _parsed(cell)
    if table is None:
        return "its settings column holds neither settings nor a fingerprint"
    defaults = schema_defaults(schema)
    for k in sorted(set(table) | set(now), key=lambda k: (k not in table or k not in now, k)):
        was, want = table.get(k, defaults.get(k, _ABSENT)), now.get(k, defaults.get(k, _ABSENT))
        if was != want:
            shown = ["not a setting" if v is _ABSENT else json.dumps(v) for v in (was, want)]
            return f"{k} differs (table: {shown[0]}, now: {shown[1]})"
    return None


def _same_settings(a: str, b: str, schema: type) -> bool:
    """Whether two config[...] columns (settings or fingerprints) record the same settings."""
    if a == b:
        return True
    if _FINGERPRINT.fullmatch(a) and _FINGERPRINT.fullmatch(b):
        return False
    if _FINGERPRINT.fullmatch(b):
        a, b = b, a
    values = _parsed(b)
    return values is not None and _disagreement(a, values, schema) is None


def _schema(column: str) -> type:
    """The schema of a config[...] column's run: config[search] a search's, every other a training's."""
    return SearchRunConfig if column == "config[search]" else TrainRunConfig


def _value(column: str, text: str):
    """A CSV cell as the table had it: None if empty; names, genotypes and settings as text, else numbers."""
    if text == "":
        return None
    if column in ("row", "genotype") or column.startswith("config["):
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


_NUMBERS = re.compile(r"(search_val_acc|search_seconds|(test_acc|val_acc|tse|train_seconds|cpu_seconds|params)\[.+\])")


def _checked_line(where: str, line: dict[str, str]) -> dict:
    """A CSV line as `_value`s, its row, seeds, genotype and result columns checked (`where`: file and line,
    for the one-line error)."""
    out = {k: _value(k, v) for k, v in line.items()}
    if not out["row"]:
        raise NGEError(f"{where}: the row is empty")
    for k in ("seed", "train_seed"):
        if not isinstance(out[k], int) or out[k] < 0:
            raise NGEError(f"{where}: {k} must be a whole number >= 0, got {line[k]!r}")
    if not line["genotype"].strip():
        raise NGEError(f"{where}: the genotype is empty")
    try:
        genotype_from_dict(json.loads(line["genotype"]))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, NGEError) as e:
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise NGEError(f"{where}: genotype is not a cell's JSON ({detail})") from None
    for k, v in out.items():
        if v is None or not _NUMBERS.fullmatch(k):
            continue
        if not isinstance(v, int | float) or (not math.isfinite(v) and not k.startswith("tse[")):
            raise NGEError(f"{where}: {k} must be a finite number or empty, got {line[k]!r}")
        if ("seconds" in k or k.startswith("params[")) and v < 0:
            raise NGEError(f"{where}: {k} must be >= 0, got {line[k]!r}")
    return out


class _Ledger:
    """Finished runs of earlier tables (--reuse): their ablation.csv lines by (row, seed, training seed).

    A training is reused where a line has the training's results, the same genotype and (where the line
    records them) the same settings (`_disagreement`). A search is reused with its cell, never rerun beside its
    reused trainings (its cell may come out differently on another machine); the trainings the tables
    lack run on that cell. A line without settings (an older table) is matched on row, seeds and (a training)
    genotype alone. Lines of one run in several files are merged where their settings agree, each adding its
    columns (a value two of them give differently is refused); lines with other settings are kept apart, and
    the first whose settings match is taken. Every line refused is logged (`log`) with the reason."""

    def __init__(self, paths: list[Path], flag: str = "--reuse", log: Callable[[str], None] | None = None):
        self.lines: dict[tuple, list[dict]] = {}  # per run, its lines of distinct settings
        self.flag = flag
        self.log = log or (lambda _msg: None)
        self._said: set[str] = set()
        for path in paths:
            try:
                with open(path, newline="") as f:
                    reader = csv.DictReader(f)
                    missing = {"row", "seed", "train_seed", "genotype"} - set(reader.fieldnames or ())
                    if missing:
                        raise NGEError(f"{flag} {path}: not an ablation.csv (no {', '.join(sorted(missing))} column)")
                    for line in reader:
                        if None in line or None in line.values():
                            raise NGEError(f"{flag} {path}: line {reader.line_num} has {'more' if None in line else 'fewer'} "
                                           "fields than the header")
                        self._add(path, _checked_line(f"{flag} {path}: line {reader.line_num}", line))
            except OSError as e:
                raise NGEError(f"{flag} {path}: {e.strerror or e}") from None
            except (csv.Error, UnicodeDecodeError) as e:
                raise NGEError(f"{flag} {path}: not a readable CSV file ({e})") from None
        self.unchecked: set[tuple] = set()  # reused lines that record no settings for what was taken

    def rows(self) -> list[dict]:
        return [line for group in self.lines.values() for line in group]

    def _add(self, path: Path, line: dict) -> None:
        """A line joins the line of the same run whose settings agree (adding its columns), else stands apart."""
        key = line["row"], line["seed"], line["train_seed"]
        group = self.lines.setdefault(key, [])
        old = next((o for o in group if all(_same_settings(o[k], v, _schema(k)) for k, v in line.items()
                                            if k.startswith("config[") and v is not None and o.get(k) is not None)), None)
        if old is None:
            group.append({k: v for k, v in line.items() if v is not None})
            return
        for k, v in line.items():
            if v is None:
                continue
            if k.startswith("config[") and old.get(k) is not None:  # the same settings: stored ones win over a fingerprint
                old[k] = v if _FINGERPRINT.fullmatch(old[k]) else old[k]
                continue
            if old.get(k) is not None and old[k] != v and not (v != v and old[k] != old[k]):  # nan equals nan here
                raise NGEError(f"{self.flag} {path}: {key[0]}, seed {key[1]}, training seed {key[2]} has {k} = {v}, "
                               f"another file {old[k]}; reuse one of them")
            old[k] = v

    def _say(self, msg: str) -> None:
        if msg not in self._said:
            self._said.add(msg)
            self.log(msg)

    def _line(self, row: str, seed: int, t: int, column: str, cfg, what: str, refuse: Callable[[dict], str | None],
              threads: bool = False) -> dict | None:
        """The first line of the run that `refuse` lets through ("": not this run's kind of line, silently) and
        whose settings in config[column] are cfg's (where it records them). Where none is, each line refused is
        logged with the reason."""
        now, refused = None, []
        for line in self.lines.get((row, seed, train_seed(seed, t)), ()):
            why = refuse(line)
            saved = line.get(f"config[{column}]")
            if why is None and saved is not None:
                now = settings(cfg, threads) if now is None else now
                why = _disagreement(saved, now, type(cfg))
            if why is None:
                return line
            refused += [why] if why else []
        for why in refused:
            self._say(f"nge ablate: {row}, seed {seed}: {what} not reused: {why}")
        return None

    def training(self, row: str, seed: int, t: int, tp: str, cfg, genotype: Genotype) -> dict | None:
        """The training's result as its summary.json gives it, or None."""
        def refuse(line: dict) -> str | None:
            if line.get(f"test_acc[{tp}]") is None:
                return ""
            return None if genotype_from_dict(json.loads(line["genotype"])) == genotype else "it trained another cell"

        what = f"training {tp}" + (f" (training seed {train_seed(seed, t)})" if t else "")
        line = self._line(row, seed, t, tp, cfg, what, refuse)
        if line is None:
            return None
        keys = {"final_test_acc": "test_acc", "final_val_acc": "val_acc", "train_loss_sum": "tse",
                "wall_seconds": "train_seconds", "cpu_seconds": "cpu_seconds", "params": "params"}
        found = {k: line[f"{c}[{tp}]"] for k, c in keys.items() if line.get(f"{c}[{tp}]") is not None}
        return {**found, "wall_seconds": found.get("wall_seconds"), "config": line.get(f"config[{tp}]")}

    def search(self, row: str, seed: int, cfg, threads: bool = False) -> dict | None:
        """A search's columns of its line (genotype, search accuracy, time, telemetry), or None. A line
        without search settings (an older table) is matched on row and seed only. `threads`: see `settings`."""
        def refuse(line: dict) -> str | None:  # "": not a search's line (a genotype row's, or a table without them)
            return "" if line.get("search_val_acc") is None or line.get("search_seconds") is None else None

        line = self._line(row, seed, 0, "search", cfg, "search", refuse, threads)
        if line is None:
            return None
        found = {k: v for k, v in line.items() if k not in ("row", "seed", "train_seed") and not k.endswith("]")}
        return {**found, "config[search]": line.get("config[search]")}


def _run_or_resume(path: Path, run: Callable[..., dict], cfg=None, genotype_spec: str | None = None) -> dict:
    """A finished run is checked and read back; an interrupted one resumed; anything else (re)started."""
    if (path / "summary.json").is_file():
        if cfg is not None:
            _check_finished(path, cfg, genotype_spec)
        return json.loads((path / "summary.json").read_text())
    if (path / RunDir.CHECKPOINT).is_file():
        return run(force=False, resume=True)
    return run(force=True, resume=False)


def _final_telemetry(search_dir: Path) -> dict:
    """Telemetry of the final P, read from the run's probs.jsonl (its last row)."""
    last = json.loads((search_dir / "probs.jsonl").read_text().splitlines()[-1])
    names = tuple(k for k in last if k != "epoch")  # the space's cell types
    return probs_telemetry(*(last[c] for c in names), names=names)


def _distinct_ops(genotype) -> dict:
    return {f"{c}_ops": len(n) for c, n in space_of(genotype).op_counts(genotype).items()}


def _ground_truth(genotype, prefix: str = "") -> dict:
    """A NAS-Bench-201 cell's table accuracies as columns gt_cifar10, gt_cifar100, gt_imagenet16 (prefixed)."""
    from nge.spaces.nb201_table import lookup

    g = lookup(genotype)
    return {f"{prefix}gt_{k.split('-')[0]}": g[k]["accuracy"] for k in ("cifar10", "cifar100", "imagenet16-120")}


def _task(msg: str, path: Path, run: Callable[..., dict], log=None, after: dict | None = None, cfg=None,
          genotype_spec: str | None = None) -> dict:
    """One search or training run, in this process or as a Ray task (log None: to stderr, which Ray
    forwards to the driver). `after`: the result of the search it trains (unused; a Ray task waits for it)."""
    log = log or partial(print, file=sys.stderr, flush=True)
    log(msg)
    return _run_or_resume(path, partial(run, log=log), cfg, genotype_spec)


class _Sequential:
    """Runs each task at once, in this process."""

    parallel = False

    def __init__(self, log):
        self.log = log

    def submit(self, msg: str, path: Path, run: Callable[..., dict], cfg, after=None, genotype_spec=None) -> dict:
        late_stop()  # one from before this run is not this run's
        result = _task(msg, path, run, self.log, after, cfg, genotype_spec)
        if sig := late_stop():  # it came as the run finished: stop before the next
            raise NGEError(f"stopped by {sig} after {msg}; the finished runs in {path.parent.parent} are kept, "
                           "run the same command with --resume to continue")
        return result

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


CAUSE_LIMIT = 200  # characters of a failed run's cause in the one-line report


def _ray_cause(e: Exception) -> str:
    """Why a Ray task failed, in one line of at most CAUSE_LIMIT characters: the run's own NGEError, else the
    exception's type and first line (a task's exception, a crashed worker, a dead node, a lost object, ...)."""
    cause = getattr(e, "cause", None) or e  # RayTaskError: the task's own exception
    if isinstance(cause, NGEError):
        text = " ".join(str(cause).split())
    else:
        line = next((x.strip() for x in str(cause).splitlines() if x.strip()), "")
        text = f"{type(cause).__name__}: {line}" if line else type(cause).__name__
    return text if len(text) <= CAUSE_LIMIT else text[:CAUSE_LIMIT - 3] + "..."


class _Ray:
    """Each run a Ray task holding one GPU (where the cluster has GPUs and the run may use one) or as many
    CPUs as it has threads. Tasks start in table order, as many at once as the cluster holds (a training
    that waits for its search holds nothing until the search has finished). After a failure (any Ray error:
    the run's exception, a crashed worker, a dead node, a lost object, a cancelled task) no further task
    starts, the running ones finish, and every failure is reported at once (`_Failed`)."""

    parallel = True

    def __init__(self, address: str | None, threads: int, log):
        self.ray, self.threads, self.log = _import_ray(), threads, log
        self.started = not self.ray.is_initialized()
        self.previous_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            if self.started:  # else: the caller's connection, left open; address None starts a local instance
                self.ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
                signal.signal(signal.SIGTERM, _interrupt)  # in place of Ray's handler, which dumps a stack
            resources = self.ray.cluster_resources()
        except Exception as e:  # noqa: BLE001 - no cluster at that address, a local instance that did not start, ...
            with contextlib.suppress(Exception):
                self.close()
            where = f" at {address}" if address else ""
            raise NGEError(f"Ray did not start{where} ({_ray_cause(e)}); nothing ran") from None
        self.gpus = resources.get("GPU", 0) > 0
        if resources.get("CPU", 0) < threads:
            self.close()
            raise NGEError(f"--threads-per-run {threads} but the Ray cluster has {resources.get('CPU', 0):g} CPUs")
        self.capacity = resources.get("CPU", 0), resources.get("GPU", 0)
        self.task = self.ray.remote(_task)
        self.queue: list[int] = []  # handles not started yet, in table order
        self.specs: dict[int, tuple] = {}  # handle -> (msg, path, run, cfg, after handle, genotype spec)
        self.refs: dict[int, object] = {}  # started handle -> ObjectRef
        self.running: dict[object, int] = {}  # ObjectRef -> handle, until its line is logged
        self.results: dict[int, dict] = {}
        self.failures: dict[int, str] = {}

    def submit(self, msg: str, path: Path, run: Callable[..., dict], cfg, after=None, genotype_spec=None) -> int:
        handle = len(self.specs)
        self.specs[handle] = (msg, path, run, cfg, after, genotype_spec)
        self.queue.append(handle)
        self._start()
        return handle

    def _needs(self, handle: int) -> tuple[int, int]:
        """The CPUs (its torch threads) and GPUs a run's task holds."""
        cfg = self.specs[handle][3]
        return cfg.runtime.threads, int(self.gpus and cfg.runtime.device != "cpu")

    def _holds(self, handle: int) -> tuple[int, int]:
        """What a started run holds: its needs once it can run, nothing while it waits for its search."""
        after = self.specs[handle][4]
        return self._needs(handle) if after is None or after in self.results or after in self.failures else (0, 0)

    def _fits(self, handle: int) -> bool:
        """In table order, as many runs at once as the cluster's CPUs and GPUs hold (runs of several threads
        beside runs of one), counting only the runs that can start."""
        held = [self._holds(h) for h in self.running.values()]
        held = [n for n in held if n != (0, 0)] + [self._holds(handle)]
        return len(held) == 1 or all(sum(n[i] for n in held) <= self.capacity[i] for i in (0, 1))

    def _start(self) -> None:
        while self.queue and self._fits(self.queue[0]) and not self.failures:
            handle = self.queue.pop(0)
            msg, path, run, cfg, after, genotype_spec = self.specs[handle]
            (threads, gpu) = self._needs(handle)
            ref = self.task.options(num_cpus=threads, num_gpus=gpu).remote(
                msg, path, run, None, None if after is None else self.refs[after], cfg, genotype_spec)
            self.refs[handle] = ref
            self.running[ref] = handle

    def _wait_one(self) -> None:
        [done], _ = self.ray.wait(list(self.running))
        handle = self.running.pop(done)
        msg, after = self.specs[handle][0], self.specs[handle][4]
        try:
            self.results[handle] = self.ray.get(done)
            self.log(f"{msg}: finished ({self.results[handle]['wall_seconds']:.0f} s)")
        except self.ray.exceptions.RayError as e:
            if after is None or not self._failed(after):  # else: its search failed and it never ran
                self.failures[handle] = _ray_cause(e)
                self.log(f"{msg}: failed")
        self._start()

    def _failed(self, handle: int) -> bool:
        if handle in self.failures:
            return True
        try:
            self.ray.get(self.refs[handle])  # it has ended: its dependent task ended after it
        except self.ray.exceptions.RayError:
            return True
        return False

    def get(self, handle: int | None):
        """`handle`'s result; meanwhile a line per run that finishes, in the order they finish."""
        if handle is None:
            return None
        while handle not in self.results and not self.failures:
            self._wait_one()
        if self.failures:
            while self.running:  # let the running ones end
                self._wait_one()
            if handle in self.results:  # finished: its line is tabulated; a later handle raises
                return self.results[handle]
            raise _Failed([(self.specs[h][0], err) for h, err in sorted(self.failures.items())],
                          [self.specs[h][0] for h in self.specs if h not in self.results and h not in self.failures])
        return self.results[handle]

    def close(self) -> None:
        try:
            if self.started:
                self.ray.shutdown()
        finally:
            signal.signal(signal.SIGTERM, self.previous_sigterm)


class _Failed(NGEError):
    """Runs of a Ray ablation failed: every failure, and how many runs did not run."""

    def __init__(self, failed: list[tuple[str, str]], not_run: list[str]):
        self.failed, self.not_run = failed, not_run
        lines = "; ".join(f"{msg}: {err}" for msg, err in failed)
        super().__init__(f"{len(failed)} run(s) failed: {lines}; {len(not_run)} not run; the finished runs are kept "
                         "(fix the cause and run the same command with --resume)")


REUSED_CELL = "reused-search-genotype.json"  # a row's searched cell taken from --reuse


def _started(path: Path) -> bool:
    return (path / "summary.json").is_file() or (path / RunDir.CHECKPOINT).is_file()


def _submit(acfg: AblateConfig, configs: dict, out: Path, ex, ledger: _Ledger | None = None, log=print):
    """Per (row, seed), in table order: its search (None if it searches nothing), the search columns of a
    reused line (or None), its trainings by (training, t): a handle, or a reused result."""
    total, own, space = len(acfg.rows) * acfg.seeds, _own_threads(acfg), _space(configs)
    for k, (spec, seed) in enumerate(((r, s) for r in acfg.rows for s in seed_range(acfg)), 1):
        name, base, what = spec.name, out / f"{spec.name}-seed{seed}", f"ablation [{k}/{total}] {spec.name}, seed {seed}"
        sdir, search, found = base / "search", None, None
        wanted = [(tr.name, t) for tr in ablate_trainings(acfg) for t in range(acfg.train_seeds)
                  if (name, seed, tr.name, t) in configs]
        tdirs = {(tp, t): base / (f"train-{tp}" + (f"-t{t}" if t else "")) for tp, t in wanted}
        if name == RANDOM_ROW:
            # a NAS-Bench-201 cell as its string, which names its space (random:K is the darts space's)
            genotype_spec = f"random:{seed}" if space == "darts" else str(get_space(space).random_genotype(seed))
        elif spec.genotype is not None:
            genotype_spec = spec.genotype
        else:
            cfg, reused_cell = configs[name, seed, "search"], base / REUSED_CELL
            started = _started(sdir) or (not reused_cell.is_file() and any(_started(d) for d in tdirs.values()))
            found = ledger.search(name, seed, cfg, (name, seed, "search") in own) if ledger and not started else None
            if found is not None:
                genotype = genotype_from_dict(json.loads(found["genotype"]))
                trains = {(tp, t): ledger.training(name, seed, t, tp, configs[name, seed, tp, t], genotype)
                          for tp, t in wanted}
                if found["config[search]"] is None:
                    ledger.unchecked.add((name, seed, None))
                if all(v is not None for v in trains.values()):
                    log(f"{what}: search and trainings reused from --reuse")
                    ledger.unchecked.update((name, seed, train_seed(seed, t)) for (tp, t), v in trains.items()
                                            if v["config"] is None)
                    yield name, seed, sdir, None, None, found, trains
                    continue
                if reused_cell.is_file() and load_genotype(reused_cell) != genotype:
                    raise NGEError(f"{reused_cell} holds another cell than --reuse gives for {name}, seed {seed}; "
                                   "reuse the table it came from, or start without --resume")
                base.mkdir(parents=True, exist_ok=True)
                reused_cell.write_text(json.dumps(genotype.to_dict()) + "\n")
                log(f"{what}: search reused from --reuse; its other trainings run on its cell")
                genotype_spec = str(reused_cell)
            elif reused_cell.is_file() and not _started(sdir):
                raise NGEError(f"{name}, seed {seed}: its search came from --reuse ({reused_cell}); resume with "
                               "the same --reuse, or start without --resume")
            else:
                search = ex.submit(f"{what}: search", sdir, partial(run_search, cfg, sdir), cfg)
                genotype_spec = str(sdir)
        trains = {}
        for tp, t in wanted:
            cfg, tdir, msg = configs[name, seed, tp, t], tdirs[tp, t], f"{what}: train ({tp}{f', t{t}' if t else ''})"
            if search is None and ledger and not _started(tdir):
                trains[tp, t] = ledger.training(name, seed, t, tp, cfg, resolve_genotype(genotype_spec, space))
                if trains[tp, t] is not None:
                    log(f"{msg}: reused from --reuse")
                    if trains[tp, t]["config"] is None:
                        ledger.unchecked.add((name, seed, train_seed(seed, t)))
                    continue
            trains[tp, t] = ex.submit(msg, tdir, partial(run_train, cfg, genotype_spec, tdir), cfg, search, genotype_spec)
        yield name, seed, sdir, genotype_spec, search, found, trains


def _keep_previous(run: RunDir, text: str, log) -> None:
    """On a resume with other comparison settings, the previous ablation.yaml is kept beside the new one."""
    old = run.file("ablation.yaml")
    if old.is_file() and old.read_text() != text:
        n = next(i for i in itertools.count(1) if not run.file(f"ablation.yaml.{i}").exists())
        old.rename(run.file(f"ablation.yaml.{n}"))
        log(f"nge ablate: the comparison's settings changed; the previous ones are in {run.file(f'ablation.yaml.{n}')} "
            "(every finished run is checked against the new ones)")
    run.write_text("ablation.yaml", text)


def run_ablation(acfg: AblateConfig, overrides: list[str], out: Path, force: bool = False, resume: bool = False,
                 log=print, executor: str = "sequential", address: str | None = None,
                 threads_per_run: int | None = None, reuse: list[Path] = ()) -> list[dict]:
    """executor="ray": every run a Ray task on the cluster at `address` (None: a new local instance).
    `reuse`: earlier ablation.csv files whose finished runs are taken instead of running them (`_Ledger`).
    `threads_per_run`: every run's runtime.threads (and, with Ray, its CPUs); None: each preset's own,
    and under Ray 1 where a preset leaves it unset. With equal threads the executors give the same table."""
    single_process("nge ablate")
    if executor not in ("sequential", "ray"):
        raise NGEError(f"unknown executor {executor!r} (sequential or ray)")
    if executor == "sequential" and address is not None:
        raise NGEError("--address needs --executor ray")
    if threads_per_run is not None and threads_per_run < 1:
        raise NGEError(f"--threads-per-run must be >= 1, got {threads_per_run}")
    if threads_per_run is not None and _sets_threads(overrides):
        raise NGEError("give --threads-per-run or runtime.threads, not both")
    configs = _configs(acfg, overrides, threads_per_run)
    space = _space(configs)
    trainings = [tr.name for tr in ablate_trainings(acfg)]
    ledger = _Ledger([Path(p) for p in reuse], log=log) if reuse else None
    if executor == "sequential" or address is None:  # the runs read this machine's files
        _check_data(configs)  # before Ray starts, so a missing data set is one line and nothing else
    if executor == "ray":
        _import_ray()  # before any work
        for cfg in configs.values():  # a Ray task holds as many CPUs as its run has torch threads
            cfg.runtime.threads = cfg.runtime.threads or 1
    # the executor first: a Ray that does not start leaves no run directory behind (nor replaces one with --force)
    ex = _Ray(address, max(c.runtime.threads for c in configs.values()), log) if executor == "ray" else _Sequential(log)
    try:
        out = Path(out)
        run = RunDir.open(out, force, resume, resumes_from="ablation.yaml")
        _keep_previous(run, to_yaml(acfg) + f"overrides: {json.dumps(overrides)}\n"
                       + (f"threads_per_run: {threads_per_run}\n" if threads_per_run is not None else ""), log)
        for cell in sorted(out.glob(f"*/{REUSED_CELL}")) if ledger is None else ():
            if not _started(cell.parent / "search"):  # before anything runs
                raise NGEError(f"{cell.parent.name}: its search came from --reuse ({cell}); resume with the same --reuse, "
                               "or start without --resume")
    except BaseException:
        ex.close()
        raise
    twins, own = _thread_twins(acfg, configs), _own_threads(acfg)
    rows: list[dict] = []
    try:
        plan = _submit(acfg, configs, out.resolve() if ex.parallel else out, ex, ledger, log)
        if ex.parallel:
            plan = list(plan)  # submit everything now; sequentially each row runs when the loop reaches it
        for name, seed, sdir, genotype_spec, search_ref, found, trains in plan:
            search = ex.get(search_ref)
            base = {"row": name, "seed": seed, "search_val_acc": None, "search_seconds": 0.0}
            if found is not None:
                base.update(found)
                genotype = genotype_from_dict(json.loads(found["genotype"]))
            elif search is not None:
                base.update(search_val_acc=search["final_val_acc"],
                            search_seconds=search["wall_seconds"] + search.get("select_seconds", 0.0),  # + selection
                            **_final_telemetry(sdir),
                            **{"config[search]": _settings_cell(configs[name, seed, "search"], (name, seed, "search") in own)})
                genotype = genotype_from_dict(search["genotype"])
                if "argmax_genotype" in search and get_space(space).has_ground_truth:  # perturbation selection's search
                    base["argmax_genotype"] = json.dumps(search["argmax_genotype"])
            else:
                genotype = resolve_genotype(genotype_spec, space)
            base.update({"genotype": json.dumps(genotype.to_dict()), **_distinct_ops(genotype)})
            if get_space(space).has_ground_truth:  # the table's values, looked up again (never stored as given)
                base.update(_ground_truth(genotype))
                if base.get("argmax_genotype"):
                    base.update(_ground_truth(genotype_from_dict(json.loads(base["argmax_genotype"])), "argmax_"))
            for t in range(acfg.train_seeds):
                row = {**base, "train_seed": train_seed(seed, t)}
                for tr in trainings:
                    if (tr, t) not in trains:
                        continue
                    train = trains[tr, t] if isinstance(trains[tr, t], dict) else ex.get(trains[tr, t])
                    row[f"test_acc[{tr}]"] = train["final_test_acc"]
                    if "final_val_acc" in train:
                        row[f"val_acc[{tr}]"] = train["final_val_acc"]
                    if "train_loss_sum" in train:
                        row[f"tse[{tr}]"] = train["train_loss_sum"]
                    row[f"train_seconds[{tr}]"] = train.get("wall_seconds")  # None: a reused line without it
                    if "cpu_seconds" in train:
                        row[f"cpu_seconds[{tr}]"] = train["cpu_seconds"]
                    row[f"params[{tr}]"] = train.get("params")
                    row[f"config[{tr}]"] = train["config"] if "config" in train else _settings_cell(configs[name, seed, tr, t])
                rows.append(row)
            write_tables(rows, acfg, run, twins)  # and the picture: an interrupted table has both
            try:
                _plot(rows, acfg, run)
            except Exception as e:  # noqa: BLE001 - a picture is never worth the runs still going
                log(f"nge ablate: ablation.png not drawn ({type(e).__name__}: {e})")
        if ledger is not None and ledger.unchecked:
            log(f"nge ablate: {len(ledger.unchecked)} reused result(s) record no settings fingerprint (an older table); "
                "they were matched on row and seeds (and a training on its genotype) only")
    except KeyboardInterrupt:
        if not ex.parallel:
            raise
        raise NGEError(f"interrupted; the finished runs in {out} are kept and the others continue from their last "
                       "finished epoch when the same command runs again with --resume") from None
    finally:
        ex.close()
    return rows


def _plot(rows: list[dict], acfg: AblateConfig, run: RunDir) -> None:
    labels = {r.name: r.label or r.name for r in acfg.rows}
    if any("gt_cifar10" in r for r in rows):
        from nge.spaces.nb201_table import optimum, uniform_mean

        groups = [(label, _values(mine, f"{pre}gt_cifar10")) for name, label, mine, pre in _selections(rows, acfg)
                  if name != RANDOM_ROW]
        path = run.file("ablation.png" if not ablate_trainings(acfg) else "ground-truth.png")
        viz.plot_ground_truth(groups, uniform_mean("cifar10"), optimum("cifar10")["accuracy"], path)
        if not ablate_trainings(acfg):
            return
    viz.plot_ablation(rows, list(labels), [tr.name for tr in ablate_trainings(acfg)], run.file("ablation.png"), labels)


def tabulate(acfg: AblateConfig, table: Path, out: Path | None = None, overrides: list[str] = (),
             threads_per_run: int | None = None) -> Path:
    """ablation.md and ablation.png from an ablation.csv and the comparison it came from, running nothing:
    a committed or interrupted table redrawn, e.g. after the tables gained a column. In `out` (with a copy
    of the CSV), else beside the CSV, which is left as it is. Returns the directory."""
    table = Path(table)
    rows = _Ledger([table], "--tabulate").rows()
    unknown = sorted({r["row"] for r in rows} - {r.name for r in acfg.rows})
    if unknown:
        raise NGEError(f"--tabulate {table}: rows {', '.join(unknown)} are not in ablation preset {acfg.preset!r}; "
                       "give the --preset the table came from")
    run = RunDir(Path(out) if out is not None else table.parent)
    run.path.mkdir(parents=True, exist_ok=True)
    twins = _thread_twins(acfg, _configs(acfg, list(overrides), threads_per_run))
    if out is not None and run.file("ablation.csv").resolve() != table.resolve():
        write_tables(rows, acfg, run, twins)
    else:
        _write_md(rows, acfg, run, twins)
    _plot(rows, acfg, run)
    return run.path


def _known(v) -> bool:
    """A measured value: not None (not searched, or every step skipped) and not NaN or infinite (diverged)."""
    return v is not None and not (isinstance(v, float) and not math.isfinite(v))


def _values(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if _known(r.get(key))]


def _mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{scale * values[0]:.{digits}f}"
    return f"{scale * statistics.mean(values):.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def write_tables(rows: list[dict], acfg: AblateConfig, run: RunDir, twins: list[tuple[str, str]] = ()) -> None:
    """ablation.csv: one line per (row, seed, training seed); ablation.md: mean ± std per row, RI against
    random, search consistency, and (with several seeds per cell) each evaluator's reliability."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    run.write_text("ablation.csv", buf.getvalue())
    _write_md(rows, acfg, run, twins)


def _selections(rows: list[dict], acfg: AblateConfig) -> list[tuple[str, str, list[dict], str]]:
    """(row name, label, lines, column prefix) per row and cell choice: a search with perturbation selection
    gives two, its argmax-P cell (columns argmax_*) and its selected cell; other rows one."""
    out = []
    for spec in acfg.rows:
        mine = [r for r in rows if r["row"] == spec.name and r.get("train_seed", r["seed"]) == r["seed"]]
        if not mine:
            continue
        label = spec.label or spec.name
        if any(r.get("argmax_gt_cifar10") is not None for r in mine):
            out += [(spec.name, f"{label}, argmax P", mine, "argmax_"), (spec.name, f"{label}, perturbation", mine, "")]
        else:
            out.append((spec.name, label, mine, ""))
    return out


def ground_truth_tables(rows: list[dict], acfg: AblateConfig) -> str:
    """The NAS-Bench-201 tables: each row's cells judged by the benchmark's table (200-epoch test accuracy),
    against the exact mean of a uniformly random cell (all 15,625) and the optimum."""
    from nge.spaces.nb201_table import optimum, uniform_mean, uniform_std

    mu, opt = uniform_mean("cifar10"), optimum("cifar10")["accuracy"]
    head = ["Model", "CIFAR-10 (%)", "− random cell (points) [90%]", "Gap to optimum", "CIFAR-100 (%)",
            "ImageNet16-120 (%)", "Distinct ops", "P entropy", "Agreement across seeds", "Search time (min)", "Seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, label, mine, pre in _selections(rows, acfg):
        if name == RANDOM_ROW:
            lines.append(f"| {label} (exact, all 15,625) | {mu:.2f} ± {uniform_std('cifar10'):.2f} | 0 | {opt - mu:.2f} | "
                         f"{uniform_mean('cifar100'):.2f} | {uniform_mean('imagenet16-120'):.2f} | n/a | n/a | "
                         f"{100 / len(nb201.PRIMITIVES):.1f}% | 0 | exact |")
            continue
        c10 = _values(mine, f"{pre}gt_cifar10")
        diff = "n/a"
        if len(c10) >= 2:
            m, lo, hi = t_interval_90([x - mu for x in c10])
            diff = f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        searched = any(r.get("search_seconds") for r in mine)
        lines.append(" | ".join([
            f"| {label}", _mean_std(c10, 1), diff, f"{opt - statistics.mean(c10):.2f}" if c10 else "n/a",
            _mean_std(_values(mine, f"{pre}gt_cifar100"), 1), _mean_std(_values(mine, f"{pre}gt_imagenet16"), 1),
            _mean_std(_values(mine, "cell_ops"), 1, 1) if not pre else "n/a", _mean_std(_values(mine, "cell_entropy"), 1, 3),
            _agreement_cell(mine, f"{pre}genotype"),
            f"{statistics.mean(r['search_seconds'] for r in mine) / 60:.1f}" if searched else "n/a", f"{len(c10)} |"]))
    note = (f"\nEvery cell judged by the NAS-Bench-201 table (test accuracy after the benchmark's 200-epoch training, "
            f"mean over its seeds): no training here. Random cell: the exact mean ± std over all 15,625 cells. − random "
            f"cell: the mean over seeds of (cell − {mu:.2f}) with a 90% t interval over seeds. Gap to optimum: "
            f"{opt:.2f} − the mean. A row with perturbation selection gives two cells from one search: argmax P "
            "(the paper's rule) and the perturbation-selected one. Distinct ops: of the 5 in the selected cell's 6 edges; "
            "P entropy: mean normalised entropy of P's rows at the end of the search (1 = uniform). Agreement: the share "
            "of edges two seeds' cells give the same op, averaged over pairs of seeds (uniformly random cells: 20%).\n")
    return "\n".join(lines) + "\n" + note + _ground_truth_pairs(rows, acfg)


def _ground_truth_pairs(rows: list[dict], acfg: AblateConfig) -> str:
    """CIFAR-10 ground truth paired by seed: each row's perturbation-selected cell against its argmax-P cell,
    and every row against the first searched row (the baseline, e.g. DARTS) at the same cell choice."""
    sel = [x for x in _selections(rows, acfg) if x[0] != RANDOM_ROW]
    names = list(dict.fromkeys(x[0] for x in sel))
    base = "darts" if "darts" in names else (names[0] if names else None)
    pairs = [(b, a) for b in sel for a in sel if a[0] == b[0] and a[3] == "argmax_" and b[3] == ""]
    pairs += [(b, a) for b in sel for a in sel if a[0] == base and b[0] != base and a[3] == b[3]]
    out = []
    for (_, lb, mb, pb), (_, la, ma, pa) in pairs:
        va = {r["seed"]: r.get(f"{pa}gt_cifar10") for r in ma}
        d = [r[f"{pb}gt_cifar10"] - va[r["seed"]] for r in mb
             if r.get(f"{pb}gt_cifar10") is not None and va.get(r["seed"]) is not None]
        if len(d) >= 2:
            m, lo, hi = t_interval_90(d)
            out.append(f"| {lb} | {la} | {len(d)} | {m:+.2f} [{lo:+.2f}, {hi:+.2f}] |")
    if not out:
        return ""
    return "\n".join(["", "### Paired differences (CIFAR-10 ground truth)", "",
                      "| Cells | minus cells | Seeds | Difference (points) [90%] |", "|---|---|---|---|", *out, "",
                      f"Paired by search seed: each row's two cell choices, and each row against {base} at the same "
                      f"choice; {len(out)} comparisons, each 90% interval on its own (not adjusted for their number).",
                      ""]) + "\n"


def _write_md(rows: list[dict], acfg: AblateConfig, run: RunDir, twins: list[tuple[str, str]] = ()) -> None:
    seeds = {r["seed"] for r in rows}
    tps = [tr.name for tr in ablate_trainings(acfg)]
    truth = ground_truth_tables(rows, acfg) if any("gt_cifar10" in r for r in rows) else ""
    if not tps:
        atomic_write_text(run.file("ablation.md"), truth)
        return
    vals = [tp for tp in tps if any(f"val_acc[{tp}]" in r for r in rows)]
    head = ["Model", "Search val acc (%)"] + [f"Val acc (%), {tp}" for tp in vals]
    head += [f"Test acc (%), {tp}" for tp in tps] + [f"RI (%), {tp}" for tp in tps]
    random = [r for r in rows if r["row"] == RANDOM_ROW]
    paired = vals if random else []
    head += [f"Val acc − random (points), {tp} [90%]" for tp in paired]
    two_types = any("normal_ops" in r for r in rows)  # the darts space: a normal and a reduction cell
    head += ["Distinct ops (normal / reduce)", "P entropy (normal / reduce)"]
    head += ["Normal/reduce agreement (%)"] if two_types else []
    head += ["Agreement across seeds", "Search time (min)", "Train time (min)", "Seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec in acfg.rows:
        mine = [r for r in rows if r["row"] == spec.name]
        if not mine:
            continue
        cells = [spec.label or spec.name, _mean_std(_values(mine, "search_val_acc"))]
        cells += [_mean_std(_values(mine, f"val_acc[{tp}]")) for tp in vals]
        cells += [_mean_std(_values(mine, f"test_acc[{tp}]")) for tp in tps]
        for tp in tps:
            ref, acc = _values(random, f"test_acc[{tp}]"), _values(mine, f"test_acc[{tp}]")
            ri = 100 * (statistics.mean(acc) - statistics.mean(ref)) / statistics.mean(ref) if ref and acc else None
            cells.append("n/a" if ri is None else f"{ri:+.2f}")
        cells += [_paired_cell(mine, random, f"val_acc[{tp}]") if spec.name != RANDOM_ROW else "n/a" for tp in paired]
        cells.append(" / ".join(_mean_std(_values(mine, f"{c}_ops"), 1, 1) for c in ("normal", "reduce")))
        cells.append(" / ".join(_mean_std(_values(mine, f"{c}_entropy"), 1, 3) for c in ("normal", "reduce")))
        if two_types:  # one value per search: a seed's first training line
            cells.append(_mean_std(_values([r for r in mine if r.get("train_seed", r["seed"]) == r["seed"]],
                                           "cells_agreement"), 100, 1))
        searched = spec.name != RANDOM_ROW and spec.genotype is None
        cells.append(_agreement_cell(mine) if searched or spec.name == RANDOM_ROW else "n/a")
        cells.append(f"{statistics.mean(r['search_seconds'] for r in mine) / 60:.1f}" if searched else "n/a")
        # a reused line may not know a training's time (None: n/a); a training not run for a line has no key
        train_s = [sum(r.get(f"train_seconds[{tp}]") or 0.0 for tp in tps) for r in mine]
        known = all(r.get(f"train_seconds[{tp}]", 0.0) is not None for r in mine for tp in tps)
        cells += [f"{statistics.mean(train_s) / 60:.1f}" if known else "n/a", str(len({r['seed'] for r in mine}))]
        lines.append("| " + " | ".join(cells) + " |")
    presets = sorted({r.search_preset for r in acfg.rows if r.search_preset and r.name != RANDOM_ROW} - {acfg.search_preset})
    others = f" (rows may name another: {', '.join(presets)})" if presets else ""
    note = (f"\nSearch preset `{acfg.search_preset}`{others}, trainings {', '.join(tps)}; mean ± std over "
            f"{len(seeds)} seed(s) where more than one; accuracies are final-epoch values. RI: relative improvement "
            "of the mean test accuracy over the random cells'. Distinct ops: in the derived cells (8 edges each); "
            "P entropy: mean normalised entropy of P's rows at the end of the search (1 = uniform). Agreement: the "
            "share of (node, input, op) choices two seeds' cells share, averaged over pairs of seeds, against "
            f"{100 * RANDOM_AGREEMENT:.1f}% for uniformly random cells (exact)."
            + (f" Normal/reduce agreement: the share of the {DEFAULT_TOPOLOGY.n_edges} edges whose argmax op in the "
               "search's final P is the same in the normal and the reduction cell (every edge, before the derivation "
               f"keeps 8), against 1/{len(PRIMITIVES)} = {100 * random_cells_agreement():.1f}% for independent "
               "uniformly random cells; n/a where no line of the row records its final P (no search, or a line "
               "written before the column existed)." if two_types else "")
            + (" Val acc − random: the mean over seeds of the row's and the random cells' difference at equal "
               "training seeds, with a 90% t interval over seeds (a seed's cell is one sample)." if paired else "")
            + "\n")
    text = ("\n".join(lines) + "\n" + note + _pairs_table(rows, acfg, vals) + _twin_table(rows, acfg, twins)
            + evaluator_tables(rows, acfg) + (f"\n### Ground truth\n\n{truth}" if truth else ""))
    atomic_write_text(run.file("ablation.md"), text)


def paired_differences(mine: list[dict], random: list[dict], key: str) -> list[float]:
    """Per seed both rows have: the mean over their common training seeds of mine - random, in points."""
    ref = {(r["seed"], r["train_seed"]): r[key] for r in random if _known(r.get(key))}
    by_seed: dict[int, list[float]] = {}
    for r in mine:
        if _known(r.get(key)) and (r["seed"], r["train_seed"]) in ref:
            by_seed.setdefault(r["seed"], []).append(100 * (r[key] - ref[r["seed"], r["train_seed"]]))
    return [statistics.mean(d) for _, d in sorted(by_seed.items())]


def _paired_cell(mine: list[dict], random: list[dict], key: str) -> str:
    d = paired_differences(mine, random, key)
    if len(d) < 2:
        return "n/a"
    mean, lo, hi = t_interval_90(d)
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"


PROJECTION_LIMIT = 1000  # seeds


def _pairs_table(rows: list[dict], acfg: AblateConfig, vals: list[str]) -> str:
    """Every later row against every earlier one (random cells included), paired by seed and training seed:
    the comparisons the main table's random-cell column leaves out, e.g. a lever against the default. With
    a paired t test's p-value, raw and Holm-adjusted over all the table's comparisons."""
    labels = {r.name: r.label or r.name for r in acfg.rows}
    names = [r.name for r in acfg.rows if any(x["row"] == r.name for x in rows)]
    found = []
    for tp in vals:
        key = f"val_acc[{tp}]"
        for j, b in enumerate(names):
            for a in names[:j]:
                d = paired_differences([r for r in rows if r["row"] == b], [r for r in rows if r["row"] == a], key)
                if len(d) >= 2:
                    found.append((tp, b, a, d))
    if not found:
        return ""
    adjusted = holm([paired_t_p(d) for *_, d in found])
    out = []
    for (tp, b, a, d), p_holm in zip(found, adjusted, strict=True):
        mean, lo, hi = t_interval_90(d)
        need = n_for_power(mean, statistics.stdev(d), limit=PROJECTION_LIMIT)
        out.append(f"| {tp} | {labels[b]} | {labels[a]} | {len(d)} | {mean:+.2f} [{lo:+.2f}, {hi:+.2f}] | "
                   f"{statistics.stdev(d):.2f} | {_p(paired_t_p(d))} | {_p(p_holm)} | "
                   f"{need or ('never' if mean == 0 else f'> {PROJECTION_LIMIT}')} |")
    return "\n".join(["", "### Paired differences between rows", "",
                      "| Training | Row | minus row | Seeds | Val acc difference (points) [90%] | Std over seeds | p | p, Holm "
                      "| Seeds for 80% power |", "|---|---|---|---|---|---|---|---|---|", *out, "",
                      f"{len(out)} comparison(s), paired at equal seeds and training seeds, as the main table's random-cell "
                      "column. Each interval is at 90% on its own; p: two-sided paired t test of a difference of 0; p, Holm: "
                      f"adjusted (Holm) over all {len(out)} comparisons of this table, which bounds the chance of any false "
                      "finding among them. Seeds for 80% power: the fewest seeds at which the 90% interval would exclude 0 "
                      "in 80% of repetitions if the true mean and spread were those measured (a projection: both are "
                      "estimates; where the mean just clears 0 it does so half the time, at about half these seeds).",
                      ""]) + "\n"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def _agreement_cell(mine: list[dict], column: str = "genotype") -> str:
    cells = {r["seed"]: genotype_from_dict(json.loads(r[column])) for r in mine if r.get(column)}
    if len(cells) < 2:
        return "n/a"
    return f"{100 * mean_agreement(list(cells.values())):.1f}%"


def _twin_table(rows: list[dict], acfg: AblateConfig, twins: list[tuple[str, str]]) -> str:
    """Agreement of two rows' cells at equal seeds, for rows whose searches differ in threads only."""
    out = []
    labels = {r.name: r.label or r.name for r in acfg.rows}
    for a, b in twins:
        cell = {(r["row"], r["seed"]): genotype_from_dict(json.loads(r["genotype"])) for r in rows if r["row"] in (a, b)}
        shared = [agreement(cell[a, s], cell[b, s]) for s in seed_range(acfg) if (a, s) in cell and (b, s) in cell]
        if shared:
            out.append(f"| {labels[a]} | {labels[b]} | {len(shared)} | {100 * statistics.mean(shared):.1f}% | "
                       f"{sum(x == 1.0 for x in shared)} |")
    if not out:
        return ""
    return "\n".join(["", "### The same search at another thread count", "",
                      "| Row | Row | Seeds | Agreement at equal seeds | Identical cells |", "|---|---|---|---|---|", *out,
                      "", f"Uniformly random cells agree in {100 * RANDOM_AGREEMENT:.1f}% of their choices.", ""]) + "\n"


def _cells(rows: list[dict], acfg: AblateConfig) -> dict[tuple, list[dict]]:
    """The table's lines grouped by cell: a genotype row is one cell; a searched or random row's seeds are
    cells of their own, each trained train_seeds times."""
    fixed = {r.name for r in acfg.rows if r.genotype is not None}
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault((r["row"],) if r["row"] in fixed else (r["row"], r["seed"]), []).append(r)
    return out


def _metric(tp: str, rows: list[dict]) -> tuple[str, str]:
    """What an evaluator's score is: validation accuracy where measured, else test accuracy."""
    return (f"val_acc[{tp}]", "val acc") if any(f"val_acc[{tp}]" in r for r in rows) else (f"test_acc[{tp}]", "test acc")


def _scores(tp: str, rows: list[dict]) -> list[tuple[str, str, float]]:
    """A training's two scores of a cell, as (column, name, scale): its accuracy in points, and -TSE."""
    key, what = _metric(tp, rows)
    return [(key, what, 100.0), (f"tse[{tp}]", "-TSE", -1.0)]


def _num(x: float, fmt: str = ".2f") -> str:
    return "n/a" if math.isnan(x) else f"{x:{fmt}}"


def evaluator_tables(rows: list[dict], acfg: AblateConfig) -> str:
    """Each training as an evaluator of cells: its ICC over the cells trained more than once (with a 90%
    bootstrap interval over cells) and, against the reference training, rank correlations. A non-finite
    score (a diverged training's TSE) is left out, and counted in the note."""
    cells = _cells(rows, acfg)
    tps = [tr.name for tr in ablate_trainings(acfg)]
    if not any(len(v) > 1 for v in cells.values()):
        return ""
    left_out = sum(isinstance(r.get(k), float) and not _known(r[k]) for r in rows for tp in tps
                   for k, _, _ in _scores(tp, rows))

    def scores(v: list[dict], key: str, scale: float) -> list[float]:
        return [scale * r[key] for r in v if _known(r.get(key))]

    out = ["", "### Evaluators", "",
           "| Evaluator | Score | Cells | Cells with 2+ seeds | ICC [90% CI] | Within-cell std "
           "| Smallest difference, 1 / 2 / 5 seeds | CPU min per cell-training |", "|---|---|---|---|---|---|---|---|"]
    for tp in tps:
        for key, what, scale in _scores(tp, rows):
            groups = [g for g in (scores(v, key, scale) for v in cells.values()) if g]
            replicated = sum(len(g) > 1 for g in groups)
            if replicated < 2:
                continue
            est = icc(groups)
            sd = math.sqrt(est.within)
            mdd = " / ".join(f"{smallest_difference(sd, n, est.df_within):.2f}" for n in (1, 2, 5))
            cpu = _values(rows, f"cpu_seconds[{tp}]")
            cpu_min = f"{statistics.mean(cpu) / 60:.1f}" if cpu else "n/a"
            out.append(f"| {tp} | {what} | {len(groups)} | {replicated} | {_num(est.icc)} {bootstrap(groups).show()} | "
                       f"{sd:.3g} | {mdd} | {cpu_min} |")
    out += ["", "ICC = σ²_between / (σ²_between + σ²_within) of one-way ANOVA over cells (training seeds the "
            "replicates; a cell with one seed adds to σ²_between only); 1 = seeds never reorder cells; n/a without any "
            "variance. Smallest difference: between two cells' means of n seeds each, detected at α = 0.05 (two-sided) "
            "with power 0.8 by a t test on the pooled within-cell std (its degrees of freedom: the seeds beyond one per "
            "cell), in the score's unit (accuracy points; TSE: loss). TSE: the sum of the training losses over the "
            "epochs, negated so that higher is better. Intervals: 2000 bootstrap resamples of the cells; where some "
            "were dropped (no replicated cell, or a constant score: the statistic undefined), (kept/2000) follows."
            + (f" {left_out} non-finite score(s) (a diverged training) left out." if left_out else ""), ""]
    if acfg.reference:
        ref_key, ref_what = _metric(acfg.reference, rows)
        drawn = {r.name for r in acfg.rows if r.name == RANDOM_ROW or (r.genotype or "").startswith("random:")}
        out += [f"Rank correlation of each evaluator's cell means with the reference `{acfg.reference}`, 90% bootstrap "
                "over cells. Noise-corrected: Spearman divided by the square root of both evaluators' reliabilities of "
                "a cell mean (Spearman-Brown of each one's ICC over these cells), clipped to [-1, 1], its interval "
                "bootstrapped with both ICCs (a resample where either ICC is 0 or undefined is dropped): a rough "
                "bound on the agreement the evaluators' seed noise hides, no sharper than the reference's own ICC. "
                "Random cells: over the uniformly drawn cells alone (named and searched cells left out), the cells an "
                "evaluator must rank for a search to be judged against them.", "",
                "| Evaluator | Score | Cells | Spearman [90% CI] | Kendall [90% CI] | Spearman, noise-corrected [90% CI] "
                "| Random cells | Spearman, random cells [90% CI] |", "|---|---|---|---|---|---|---|---|"]
        for tp in tps:
            if tp == acfg.reference:
                continue
            for key, what, scale in _scores(tp, rows):
                pairs = []  # per cell: the evaluator's and the reference's replicates, and whether it was drawn
                for cell, v in cells.items():
                    a, b = scores(v, key, scale), scores(v, ref_key, 1.0)
                    if a and b:
                        pairs.append((a, b, cell[0] in drawn))
                if len(pairs) < 4:
                    continue
                xs, ys = [statistics.mean(p[0]) for p in pairs], [statistics.mean(p[1]) for p in pairs]
                rho, tau = spearman(xs, ys), kendall(xs, ys)

                def corrected(sample: list[tuple]) -> float:
                    return corrected_spearman([p[0] for p in sample], [p[1] for p in sample])

                corr = f"{_num(corrected(pairs))} {resample(pairs, corrected).show()}"
                rx, ry = [x for x, p in zip(xs, pairs, strict=True) if p[2]], [y for y, p in zip(ys, pairs, strict=True) if p[2]]
                among = f"{_num(spearman(rx, ry))} {bootstrap_pairs(rx, ry, spearman).show()}" if len(rx) >= 4 else "n/a"
                out.append(f"| {tp} | {what} | {len(pairs)} | {_num(rho)} {bootstrap_pairs(xs, ys, spearman).show()} | "
                           f"{_num(tau)} {bootstrap_pairs(xs, ys, kendall).show()} | {corr} | {len(rx)} | {among} |")
        out.append("")
    return "\n".join(out) + "\n"
