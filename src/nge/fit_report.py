"""The report of an `nge fit`: OUT/report.md, plain Markdown readable without nge, its pictures in
OUT/report/ and the phases' own pictures linked where they lie (OUT/search/, OUT/train/).

The test set is run once through the PyTorch model (OUT/model.pt) and once through the exported ONNX
model (OUT/model.onnx): accuracy, per-class accuracy and the confusion matrix are PyTorch's; the ONNX
model's agreement with it is counted image by image.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import numpy as np
import torch

from nge import viz
from nge.config import TrainRunConfig, load_config
from nge.engine import atomic_write_text
from nge.errors import NGEError
from nge.export import onnx_runner
from nge.inference import load
from nge.spaces import space_of

GRID = 16  # test images shown with their predictions, evenly spaced over the test set
MISTAKES = 8  # the most confident wrong predictions shown


def _uint8(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """A normalised (C, H, W) image back to (H, W, 3) uint8."""
    m, s = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    img = ((x.float() * s + m) * 255).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]


def predict_test(out: Path, n_test: int) -> dict:
    """The `n_test` test images through model.pt and model.onnx: labels, PyTorch's argmax and its
    probability, ONNX agreement, and the images the report shows."""
    from nge.training import load_train_data

    model = load(out / "model.pt")
    cfg = load_config(TrainRunConfig, "train", str(out / "train" / "config.yaml"), [])
    test = load_train_data(cfg, torch.device("cpu")).test
    run_onnx = onnx_runner(out / "model.onnx")
    fmt = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format  # as trained: faster on a CPU
    model.net.to(memory_format=fmt)
    labels, preds, probs, agree, worst, kept = [], [], [], 0, 0.0, {}
    show = set(np.linspace(0, n_test - 1, min(GRID, n_test)).round().astype(int).tolist())
    seen = 0
    with torch.no_grad():
        for x, y in test.batches_from(0):
            x = x.float().contiguous()
            logits = model(x.contiguous(memory_format=fmt)).float()
            onnx = np.asarray(run_onnx(x.numpy()))
            worst = max(worst, float(np.abs(onnx - logits.numpy()).max()))
            agree += int((onnx.argmax(1) == logits.argmax(1).numpy()).sum())
            p = logits.softmax(1)
            labels.append(y)
            preds.append(p.argmax(1))
            probs.append(p.max(1).values)
            for i in range(len(y)):
                if seen + i in show or (int(p[i].argmax()) != int(y[i])):
                    kept[seen + i] = _uint8(x[i], model.preprocess.mean, model.preprocess.std)
            # keep memory bounded: only the shown images and the most confident mistakes so far
            if len(kept) > GRID + 4 * MISTAKES:
                conf = torch.cat(probs)
                wrong = [j for j in kept if j not in show]
                wrong.sort(key=lambda j: -float(conf[j]))
                for j in wrong[MISTAKES:]:
                    del kept[j]
            seen += len(y)
    if seen != n_test:
        raise NGEError(f"{out}: the test split holds {seen} images, the fit planned with {n_test}; the data changed")
    y, pred, conf = torch.cat(labels), torch.cat(preds), torch.cat(probs)
    return {"model": model, "y": y.numpy(), "pred": pred.numpy(), "conf": conf.numpy(), "onnx_agree": agree,
            "onnx_max_diff": worst, "images": kept, "show": sorted(show)}


def _cmd(args: list[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


def write_report(out: Path, state: dict, log, started: float | None = None) -> float:
    """Writes OUT/report.md and OUT/report/*.png; returns the test accuracy."""
    started = time.perf_counter() if started is None else started
    folder = out / "report"
    folder.mkdir(exist_ok=True)
    r = predict_test(out, state["data"]["n_test"])
    model, y, pred = r["model"], r["y"], r["pred"]
    classes = list(model.classes)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    acc = float((y == pred).mean())
    viz.plot_confusion(confusion, classes, folder / "confusion.png")

    def titles(idx: list[int]) -> list[str]:
        return [f"{classes[y[i]][:12]}\n-> {classes[pred[i]][:12]} {r['conf'][i]:.0%}" for i in idx]

    shown = r["show"]
    viz.plot_predictions([r["images"][i] for i in shown], titles(shown), [y[i] != pred[i] for i in shown],
                         folder / "predictions.png")
    mistakes = sorted((i for i in r["images"] if y[i] != pred[i]), key=lambda i: -r["conf"][i])[:MISTAKES]
    if mistakes:
        viz.plot_predictions([r["images"][i] for i in mistakes], titles(mistakes), [True] * len(mistakes),
                             folder / "mistakes.png")
    space = space_of(model.genotype)
    cells = viz.plot_cells(space, model.genotype, folder)
    n = len(y)
    plan, spent, request = state["plan"], dict(state["spent"]), state["request"]
    spent["report"] = spent.get("report", 0.0) + time.perf_counter() - started
    total = sum(spent.values())
    searched = plan["cell"] == "searched"
    how = "searched by NGE" if searched else f"{plan['cell']} (the budget left too little time to search)"

    lines = [f"# nge fit: {Path(request['data']).name if Path(request['data']).is_dir() else request['data']}", ""]
    lines += [f"**Test accuracy {100 * acc:.2f}%** on {n:,} test images ({int((y == pred).sum()):,} right), measured "
              "once, after the training: the test split chose nothing.", ""]
    lines += [f"Time: {clock(total)} of a {clock(request['budget_seconds'])} budget "
              f"({100 * total / request['budget_seconds']:.0f}%) on {_machine(state['machine'])}.", ""]
    lines += ["## The model", "",
              "- `model.pt`: the PyTorch weights (`nge predict OUT IMAGE`, or `nge.load(\"OUT\")` in Python).",
              f"- `model.onnx`: the same network for onnxruntime, with the class names and preprocessing in its "
              f"metadata; its prediction equals PyTorch's on **{r['onnx_agree']:,} of {n:,}** test images (largest "
              f"logit difference {r['onnx_max_diff']:.2g}).",
              f"- `genotype.json`: the cell, {how}.",
              f"- Input: {model.preprocess.describe()}; {len(classes)} classes.", ""]
    if searched:
        s = plan["search"]
        lines += [f"The cell was searched for {s['epochs']} epochs on {s['images']:,} training images (half to train "
                  "the supernet's weights, half to train the graph embedding), then trained from scratch:", ""]
    lines += [f"![{c} cell](report/{path.name})" for c, path in cells.items()] + [""]
    lines += ["## Accuracy per class", "", "| class | test images | accuracy | most often taken for |", "|---|---:|---:|---|"]
    for i, name in enumerate(classes):
        row = confusion[i]
        others = row.copy()
        others[i] = 0
        confused = f"{classes[int(others.argmax())]} ({int(others.max())})" if others.max() else "-"
        lines.append(f"| {name} | {int(row.sum())} | {100 * row[i] / max(row.sum(), 1):.1f}% | {confused} |")
    lines += ["", "![confusion matrix](report/confusion.png)", "", "## Predictions", "",
              f"{len(shown)} test images, evenly spaced over the test set: true class, then the prediction and its "
              "probability (red: wrong).", "", "![predictions](report/predictions.png)", ""]
    if mistakes:
        lines += ["The most confident mistakes:", "", "![mistakes](report/mistakes.png)", ""]
    t = plan["train"]
    lines += ["## Learning curves", "", f"Training from scratch: {t['epochs']} epochs on {t['images']:,} images, batch "
              f"{t['batch']}: training loss and accuracy per epoch, the test split once, after the last:", "",
              "![training curves](train/curves.png)", ""]
    if searched:
        lines += ["The search (supernet on its train half, the embedding on its val half), and P over the epochs:", "",
                  "![search curves](search/curves.png)", "", "![P over epochs](search/probs.png)", ""]
    lines += ["## Time per phase", "", "| phase | planned | spent | what |", "|---|---:|---:|---|"]
    what = {"calibrate": "step times measured on this machine",
            "search": f"{plan['search']['epochs']} epochs, {plan['search']['images']:,} images" if searched else "skipped",
            "train": f"{t['epochs']} epochs, {t['images']:,} images",
            "export": "model.pt, model.onnx (checked against PyTorch)", "report": "this page"}
    planned = {"search": plan["search"]["seconds"] if searched else None, "train": t["seconds"],
               "export": None, "report": None}
    for phase in ("calibrate", "search", "train", "export", "report"):
        p = planned.get(phase)
        lines.append(f"| {phase} | {clock(p) if p else ''} | {clock(spent.get(phase, 0))} | {what[phase]} |")
    lines += [f"| all | {clock(request['budget_seconds'])} | {clock(total)} | |", "",
              f"The export and the report had {clock(state['reserve_seconds'])} kept for them. Planned times count the "
              "steps and test passes only.", ""]
    lines += ["## Reproduce", "", "Each phase from its own configuration (the same results on this machine at the same "
              "thread count; NEW is a new folder):", "", "```sh"]
    if searched:
        lines.append(_cmd(["nge", "search", "--preset", out / "search" / "config.yaml", "--out", "NEW/search"]))
    cell = "NEW/search" if searched else plan["cell"]
    lines += [_cmd(["nge", "train", "--genotype", cell, "--preset", out / "train" / "config.yaml", "--out", "NEW/train"]),
              _cmd(["nge", "export", "NEW/train"]), "```", "", "The whole fit again (step times, so the plan, differ "
              "from machine to machine):", "", "```sh",
              _cmd(["nge", "fit", request["data"], "--time", clock(request["budget_seconds"]), "--preset",
                    request["preset"], *_fit_options(request["overrides"]), "--out", "NEW"]), "```", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    log(f"report: test accuracy {acc:.4f}; ONNX agrees with PyTorch on {r['onnx_agree']} of {n} test images; "
        f"{out / 'report.md'}")
    return acc


def clock(seconds: float) -> str:
    """'1h02m', '12m05s', '42s'."""
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _fit_options(overrides: list[str]) -> list[str]:
    """The request's overrides as nge fit's arguments (search_share is --search-share)."""
    out = []
    for o in overrides:
        out += ["--search-share", o.split("=", 1)[1]] if o.startswith("search_share=") else [o]
    return out


def _machine(m: dict) -> str:
    gpu = f", {m['gpu']}" if m.get("gpu") else ""
    return f"{m['cpu']} ({m['cores']} cores, {m['threads']} torch threads{gpu})"
