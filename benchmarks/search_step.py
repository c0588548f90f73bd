"""Times the supernet weight step and the embedding step of a search preset on synthetic data.

    python benchmarks/search_step.py [--preset paper] [--batch 32] [--steps 5] [--channels-last]

Prints images/s (median over timed steps, after one warm-up step) and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from nge.config import SearchRunConfig, load_config, to_dict
from nge.data import input_shape, make_synthetic
from nge.engine import Meter
from nge.search import SearchTask


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    cfg = load_config(SearchRunConfig, "search", args.preset,
                      [f"data.batch_size={args.batch}", f"runtime.channels_last={args.channels_last}"])
    shape = input_shape(cfg.data.name, to_dict(cfg.data)["synthetic"])
    data = make_synthetic(n_train=args.batch * (args.steps + 1) * 2, n_test=1, num_classes=shape[2],
                          channels=shape[0], size=shape[1])
    torch.manual_seed(0)
    task = SearchTask(cfg, data, torch.device("cpu"))
    batches = list(task.train_loader)
    probs = task.arch().detach()
    results = {}
    for what, step in (("weight step", lambda x, y: task.weight_step(x, y, probs, Meter())),
                       ("embedding step", lambda x, y: task.arch_step(x, y, Meter()))):
        times = []
        for i, (x, y) in enumerate(batches[: args.steps + 1]):
            t = time.perf_counter()
            step(x, y)
            if i:
                times.append(time.perf_counter() - t)
        results[what] = args.batch / statistics.median(times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"preset {args.preset}, batch {args.batch}, {shape[0]}x{shape[1]}x{shape[1]}, "
          f"channels_last={args.channels_last}, threads={torch.get_num_threads()}")
    for what, ips in results.items():
        print(f"  {what:<15} {ips:8.1f} images/s")
    print(f"  peak RSS        {peak_mb:8.0f} MB")


if __name__ == "__main__":
    main()
