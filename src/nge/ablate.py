"""The paper's Table 4 ablation: search with each parameterisation, train each genotype, tabulate.

Everything but `search.param` (and the seed) is the same for every row, so differences come from
the parameterisation alone. Each (param, seed) search and each training run is an ordinary run
directory; rerunning with `--resume` skips finished runs and resumes an interrupted one from its
checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path

from nge.arch import ARCH_PARAMS
from nge.config import (
    AblateConfig,
    SearchRunConfig,
    TrainRunConfig,
    load_config,
    to_yaml,
    validate_search,
    validate_train,
)
from nge.engine import RunDir, atomic_write_text, single_process
from nge.errors import NGEError
from nge.search import run_search
from nge.train import run_train

LABELS = {"darts": "Baseline (DARTS)", "plain": "Plain", "rnn": "RNN", "nge": "NGE"}


def _configs(acfg: AblateConfig, overrides: list[str]) -> dict:
    """Every search and training config of the ablation, validated before anything runs."""
    if acfg.seeds < 1:
        raise NGEError(f"bad configuration: seeds must be >= 1, got {acfg.seeds}")
    unknown = [p for p in acfg.params if p not in ARCH_PARAMS]
    if unknown or not acfg.params:
        raise NGEError(f"bad configuration: params must name parameterisations among {', '.join(ARCH_PARAMS)}")
    if not acfg.train_presets:
        raise NGEError("bad configuration: train_presets is empty")
    configs = {}
    for param in acfg.params:
        for seed in range(acfg.seeds):
            s = load_config(SearchRunConfig, "search", acfg.search_preset,
                            [*acfg.search_overrides, *overrides, f"search.param={param}", f"runtime.seed={seed}"])
            validate_search(s)
            configs[param, seed, "search"] = s
            for tp in acfg.train_presets:
                t = load_config(TrainRunConfig, "train", tp, [*acfg.train_overrides, *overrides, f"runtime.seed={seed}"])
                validate_train(t)
                configs[param, seed, tp] = t
    return configs


def _run_or_resume(path: Path, run: Callable[..., dict]) -> dict:
    """A finished run is read back; an interrupted one resumed; anything else (re)started."""
    if (path / "summary.json").is_file():
        return json.loads((path / "summary.json").read_text())
    if (path / RunDir.CHECKPOINT).is_file():
        return run(force=False, resume=True)
    return run(force=True, resume=False)


def run_ablation(acfg: AblateConfig, overrides: list[str], out: Path, force: bool = False, resume: bool = False,
                 log=print) -> list[dict]:
    single_process("nge ablate")
    configs = _configs(acfg, overrides)
    out = Path(out)
    if force and resume:
        raise NGEError("--force and --resume exclude each other")
    if resume and not (out / "ablation.yaml").is_file():
        raise NGEError(f"cannot resume: {out} holds no ablation.yaml")
    if not resume:
        RunDir.check(out, force, False)
    run = RunDir.create(out, force, False) if not resume else RunDir(out)
    run.write_text("ablation.yaml", to_yaml(acfg) + f"overrides: {json.dumps(overrides)}\n")
    rows: list[dict] = []
    total = len(acfg.params) * acfg.seeds
    for k, (param, seed) in enumerate(((p, s) for p in acfg.params for s in range(acfg.seeds)), 1):
        base = out / f"{param}-seed{seed}"
        log(f"ablation [{k}/{total}] {param}, seed {seed}: search")
        scfg = configs[param, seed, "search"]
        sdir = base / "search"
        search = _run_or_resume(sdir, partial(run_search, scfg, sdir, log=log))
        row = {"param": param, "seed": seed, "search_val_acc": search["final_val_acc"],
               "search_seconds": search["wall_seconds"], "genotype": json.dumps(search["genotype"])}
        for tp in acfg.train_presets:
            log(f"ablation [{k}/{total}] {param}, seed {seed}: train ({tp})")
            tcfg, tdir = configs[param, seed, tp], base / f"train-{tp}"
            train = _run_or_resume(tdir, partial(run_train, tcfg, str(sdir), tdir, log=log))
            row[f"test_acc[{tp}]"] = train["final_test_acc"]
            row[f"train_seconds[{tp}]"] = train["wall_seconds"]
            row[f"params[{tp}]"] = train["params"]
        rows.append(row)
        write_tables(rows, acfg, run)
    from nge import viz

    viz.plot_ablation(rows, acfg.params, acfg.train_presets, run.file("ablation.png"), LABELS)
    return rows


def _mean_std(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]  # None: a run whose every step was skipped
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def write_tables(rows: list[dict], acfg: AblateConfig, run: RunDir) -> None:
    """ablation.csv: one row per (param, seed); ablation.md: mean ± std per param, like Table 4."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    run.write_text("ablation.csv", buf.getvalue())
    seeds = {r["seed"] for r in rows}
    head = ["Model", "Search val acc (%)"] + [f"Test acc (%), {tp}" for tp in acfg.train_presets]
    head += ["Search time (min)", "Train time (min)", "Seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for param in acfg.params:
        mine = [r for r in rows if r["param"] == param]
        if not mine:
            continue
        cells = [LABELS.get(param, param), _mean_std([r["search_val_acc"] for r in mine])]
        cells += [_mean_std([r[f"test_acc[{tp}]"] for r in mine]) for tp in acfg.train_presets]
        cells.append(f"{statistics.mean(r['search_seconds'] for r in mine) / 60:.1f}")
        train_s = [sum(r[f"train_seconds[{tp}]"] for tp in acfg.train_presets) for r in mine]
        cells += [f"{statistics.mean(train_s) / 60:.1f}", str(len(mine))]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nSearch preset `{acfg.search_preset}`, training presets {', '.join(acfg.train_presets)}; "
            f"mean ± std over {len(seeds)} seed(s) where more than one; accuracies are final-epoch values.\n")
    atomic_write_text(run.file("ablation.md"), "\n".join(lines) + "\n" + note)
