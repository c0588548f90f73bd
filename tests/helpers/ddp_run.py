"""Run under torchrun by tests/test_ddp.py: a search or a training run; every process then writes
what it ended with (P history, genotype, metrics) to RESULT.rank<R>.json. Only the first process has
a summary; the others report from their own task and metrics."""

import json
import sys
from pathlib import Path

import nge.engine.job as job
from nge.config import SearchRunConfig, TrainRunConfig, load_config
from nge.engine import shutdown, world


def main() -> None:
    kind, out, result, *overrides = sys.argv[1:]
    seen = {}
    real_fit = job.fit

    def fit(task, *a, **k):  # keep the task and the metrics of this process
        seen["task"] = task
        seen["metrics"] = real_fit(task, *a, **k)
        return seen["metrics"]

    job.fit = fit
    if kind == "search":
        from nge.searching import run_search

        summary = run_search(load_config(SearchRunConfig, "search", "smoke", overrides), Path(out), log=lambda m: None)
        task = seen.pop("task")
        mine = {"p_history": [[p.normal.tolist(), p.reduce.tolist()] for p in task.p_history],
                "genotype": task.genotype().to_dict()}
    else:
        from nge.training import run_train

        summary = run_train(load_config(TrainRunConfig, "train", "smoke", overrides), "DARTS_V2", Path(out),
                            log=lambda m: None)
        seen.pop("task")
        mine = {"final_test_acc": seen["metrics"][-1]["test_acc"]}
    rank, size = world()
    Path(f"{result}.rank{rank}.json").write_text(json.dumps({"world": size, **(summary or {}), **mine}))
    shutdown()


if __name__ == "__main__":
    main()
