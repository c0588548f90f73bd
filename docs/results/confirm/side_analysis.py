"""Side analyses of the confirm and screen tables (run from the repository root): -TSE pairs and test
accuracy pairs of the confirm rows; the default and perturbation selection against random cells pooled
over the screen's seeds 0-2 and the confirmation's seeds 3-7."""
import csv
import statistics

from nge.ablate import paired_differences
from nge.stats import n_for_power, t_interval_90

KEYS = ("val_acc[proxy]", "tse[proxy]", "test_acc[proxy]")


def load(path):
    with open(path, newline="") as f:
        return [{"row": r["row"], "seed": int(r["seed"]), "train_seed": int(r["train_seed"]),
                 **{k: float(r[k]) if r.get(k) else None for k in KEYS}} for r in csv.DictReader(f)]


def pairs(rows, a, b, key, scale):
    """Per seed, scale * (b - a) averaged over equal training seeds, as the table's pairs are."""
    return [scale / 100 * d for d in paired_differences([r for r in rows if r["row"] == b],
                                                        [r for r in rows if r["row"] == a], key)]


def show(rows, a, b, key, scale, tag=""):
    d = pairs(rows, a, b, key, scale)
    if len(d) < 2:
        print(f"{tag}{b} - {a} [{key}]: {len(d)} seeds")
        return
    m, lo, hi = t_interval_90(d)
    sd = statistics.stdev(d)
    print(f"{tag}{b} - {a} [{key}]: n={len(d)} {m:+.3f} [{lo:+.3f}, {hi:+.3f}] sd {sd:.3f} "
          f"seeds-for-80%-power {n_for_power(m, sd)} per-seed {[round(x, 2) for x in d]}")


conf = load("docs/results/confirm/ablation.csv")
names = list(dict.fromkeys(r["row"] for r in conf))
print("== confirm, -TSE (loss units; negative = higher TSE than the other row)")
for i, a in enumerate(names):
    for b in names[i + 1:]:
        show(conf, a, b, "tse[proxy]", -1)
print("== confirm, test acc (points; reported, chose nothing)")
for b in names[1:]:
    show(conf, "random", b, "test_acc[proxy]", 100)
print("== pooled screen seeds 0-2 + confirm seeds 3-7, val acc")
both = load("docs/results/screen/ablation.csv") + conf
for b in ("nge", "pt"):
    show(both, "random", b, "val_acc[proxy]", 100, "pooled ")
show(both, "nge", "pt", "val_acc[proxy]", 100, "pooled ")
