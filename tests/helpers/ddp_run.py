"""Run under torchrun by tests/test_ddp.py: a search or a training run; every process then writes
what it ended with (P history, genotype, metrics) to RESULT.rank<R>.json."""

import json
import sys
from pathlib import Path

from nge.config import SearchRunConfig, TrainRunConfig, load_config
from nge.engine import shutdown, world


def main() -> None:
    kind, out, result, *overrides = sys.argv[1:]
    if kind == "search":
        from nge.search import SearchTask, run_search

        captured = {}
        real_init = SearchTask.__init__

        def init(self, *a, **k):  # keep a handle on the task to read its P history afterwards
            real_init(self, *a, **k)
            captured["task"] = self

        SearchTask.__init__ = init
        summary = run_search(load_config(SearchRunConfig, "search", "smoke", overrides), Path(out), log=lambda m: None)
        extra = {"p_history": [[p.normal.tolist(), p.reduce.tolist()] for p in captured.pop("task").p_history]}
    else:
        from nge.train import run_train

        summary = run_train(load_config(TrainRunConfig, "train", "smoke", overrides), "DARTS_V2", Path(out),
                            log=lambda m: None)
        extra = {}
    rank, size = world()
    Path(f"{result}.rank{rank}.json").write_text(json.dumps({"world": size, **extra, **summary}))
    shutdown()


if __name__ == "__main__":
    main()
