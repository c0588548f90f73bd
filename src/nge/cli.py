"""The `nge` command line: parse, load config, call the library, turn errors into one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nge.errors import NGEError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_search(args: argparse.Namespace) -> int:
    from nge.config import SearchRunConfig, load_config, preset_name
    from nge.engine import default_run_dir
    from nge.searching import run_search

    cfg = load_config(SearchRunConfig, "search", args.preset, args.overrides)
    out = Path(args.out) if args.out else default_run_dir("search", preset_name(args.preset))
    summary = run_search(cfg, out, force=args.force, resume=args.resume, log=_log)
    if summary is not None:  # None in all but the first process under torchrun
        print(json.dumps(summary["genotype"]))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nge.config import TrainRunConfig, load_config, preset_name
    from nge.engine import default_run_dir
    from nge.training import run_train

    cfg = load_config(TrainRunConfig, "train", args.preset, args.overrides)
    out = Path(args.out) if args.out else default_run_dir("train", preset_name(args.preset))
    summary = run_train(cfg, args.genotype, out, force=args.force, resume=args.resume, log=_log)
    if summary is not None:
        print(json.dumps({k: summary[k] for k in ("final_test_acc", "best_test_acc", "params", "mult_adds")}))
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from nge.config import SegmentRunConfig, load_config, preset_name
    from nge.engine import default_run_dir
    from nge.segment import run_segment

    cfg = load_config(SegmentRunConfig, "segment", args.preset, args.overrides)
    if args.backbone:  # the checkpoint's network is used as it is
        for item in args.overrides:
            key = item.split("=", 1)[0].strip()
            if key in ("model.C", "model.layers"):
                raise NGEError(f"bad configuration: {key} has no effect with --backbone (the checkpoint's network is "
                               "used); drop it")
    out = Path(args.out) if args.out else default_run_dir("segment", preset_name(args.preset))
    summary = run_segment(cfg, out, backbone=args.backbone, genotype=args.genotype, force=args.force,
                          resume=args.resume, log=_log)
    print(json.dumps({k: summary[k] for k in ("final_val_miou", "final_val_acc", "params")}))
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from nge.fitting import run_fit

    out = run_fit(args.data, args.time, Path(args.out) if args.out else None, space=args.space, preset=args.preset,
                  search_share=args.search_share, overrides=args.overrides, force=args.force, resume=args.resume,
                  log=_log)
    state = json.loads((out / "fit.json").read_text())
    print(json.dumps({"test_acc": state["test_acc"], "model": str(out / "model.pt"), "onnx": str(out / "model.onnx"),
                      "report": str(out / "report.md")}))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Writes a tiny synthetic data set in a real on-disk layout (for the smoke presets)."""
    from nge.data import write_synthetic_folder, write_synthetic_imagefolder, write_synthetic_voc

    out = Path(args.dir)
    if not 0 <= args.seed < 2**31:
        raise NGEError(f"--seed must be in [0, 2^31), got {args.seed}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NGEError(f"{out} already exists and is not empty; choose a new folder")
    if args.gray and args.layout != "folder":
        raise NGEError("--gray is for nge synth folder only")
    if args.layout == "imagenet":
        write_synthetic_imagefolder(out, seed=args.seed)
    elif args.layout == "folder":
        write_synthetic_folder(out, seed=args.seed, gray=args.gray)
    else:
        write_synthetic_voc(out, seed=args.seed, aug=True)
    _log(f"wrote a synthetic {args.layout} layout to {out}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from nge.ablate import run_ablation
    from nge.config import AblateConfig, load_config, preset_name
    from nge.engine import default_run_dir

    extra = [f"{k}={v}" for k, v in (("seeds", args.seeds), ("first_seed", args.first_seed)) if v is not None]
    acfg = load_config(AblateConfig, "ablate", args.preset, extra)
    if args.tabulate:
        given = [f for f, v in (("--force", args.force), ("--resume", args.resume), ("--reuse", args.reuse)) if v]
        if given:
            raise NGEError(f"--tabulate runs nothing: give it without {', '.join(given)}")
        from nge.ablate import tabulate

        out = tabulate(acfg, Path(args.tabulate), Path(args.out) if args.out else None, args.overrides,
                       args.threads_per_run)
        print((out / "ablation.md").read_text(), end="")
        return 0
    out = Path(args.out) if args.out else default_run_dir("ablate", preset_name(args.preset))
    run_ablation(acfg, args.overrides, out, force=args.force, resume=args.resume, log=_log, executor=args.executor,
                 address=args.address, threads_per_run=args.threads_per_run, reuse=args.reuse or [])
    print((out / "ablation.md").read_text(), end="")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """A search preset's supernet, or (with --genotype) a training preset's evaluation network."""
    from nge.profile import format_profile, profile

    result, over_limit = profile(args.preset, args.overrides, args.genotype)
    print(json.dumps(result) if args.json else format_profile(result))
    if over_limit:
        raise NGEError(f"{over_limit}; nge train refuses this network")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nge.export import export

    export(args.run, args.format, args.out, force=args.force, log=_log)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from nge.predict import format_line, open_model, predict

    if args.top < 1:
        raise NGEError(f"--top must be >= 1, got {args.top}")
    model = open_model(args.model)
    try:
        for row in predict(model, args.inputs, args.top):
            print(json.dumps(row) if args.json else format_line(row), flush=True)
    except BrokenPipeError:  # the reader stopped (nge predict ... | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _run_arguments(p: argparse.ArgumentParser, kind: str, overrides_help: str) -> None:
    """--out, --force, --resume and KEY=VALUE overrides: every command that writes a run directory."""
    p.add_argument("--out", help=f"run directory (default: runs/{kind}-PRESET-TIME)")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=overrides_help)


def build_parser() -> argparse.ArgumentParser:
    from nge import __version__

    p = _Parser(prog="nge", description="Neural architecture search with Neural Graph Embedding.")
    p.add_argument("--version", action="version", version=f"nge {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("search", help="search a cell and write a run directory")
    s.add_argument("--preset", default="quick", help="search preset: a name or a FILE.yaml (default: quick)")
    _run_arguments(s, "search", "config overrides, e.g. search.epochs=10")
    s.set_defaults(func=cmd_search)

    t = sub.add_parser("train", help="train a genotype from scratch and report test accuracy")
    t.add_argument("--genotype", required=True, metavar="FILE_OR_NAME",
                   help="genotype.json, a search run directory, or a built-in name (DARTS_V1, DARTS_V2)")
    t.add_argument("--preset", default="quick", help="training preset: a name or a FILE.yaml (default: quick)")
    _run_arguments(t, "train", "config overrides, e.g. train.epochs=10")
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("fit", help="from images and a time budget to a checked, exported model with a report")
    i.add_argument("data", metavar="DATA", help="an image folder (DATA/train/<class>/ and DATA/test/<class>/) or a "
                   "data set name (fashion_mnist, cifar10, cifar100)")
    i.add_argument("--time", metavar="DURATION", help="the budget, e.g. 30m, 1h30m or 90s (with --resume: the run's)")
    i.add_argument("--space", choices=["darts", "nb201"], help="the search space (default darts; the fit preset of "
                   "that name)")
    i.add_argument("--search-share", type=float, metavar="F", help="the budget's share for the search (default: the "
                   "preset's, 0.25); 0 trains the preset's fallback cell")
    i.add_argument("--preset", help="fit preset: darts, nb201 or a FILE.yaml")
    _run_arguments(i, "fit", "overrides of the search and the training (each goes to every phase whose "
                   "configuration has the key), e.g. model.C=16")
    i.set_defaults(func=cmd_fit)

    g = sub.add_parser("segment", help="DeepLabv3 with a searched-cell backbone on PASCAL VOC 2012")
    g.add_argument("--preset", default="paper-voc", help="segmentation preset: a name or a FILE.yaml (default: paper-voc)")
    g.add_argument("--backbone", metavar="CHECKPOINT", help="model.pt of an nge train ImageNet run (its genotype is used)")
    g.add_argument("--genotype", metavar="FILE_OR_NAME",
                   help="without --backbone: a randomly initialised backbone of this genotype")
    _run_arguments(g, "segment", "config overrides, e.g. data.root=DIR")
    g.set_defaults(func=cmd_segment)

    y = sub.add_parser("synth", help="write a tiny synthetic data set in the ImageNet, folder or VOC on-disk layout")
    y.add_argument("layout", choices=["imagenet", "folder", "voc"])
    y.add_argument("dir", help="a new folder")
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--gray", action="store_true", help="grayscale images (folder only)")
    y.set_defaults(func=cmd_synth)

    a = sub.add_parser("ablate", help="the paper's Table 4: search and train with every parameterisation")
    a.add_argument("--preset", default="quick", help="ablation preset: a name or a FILE.yaml (default: quick)")
    a.add_argument("--seeds", type=int, help="seeds per parameterisation (default: the preset's)")
    a.add_argument("--first-seed", type=int, help="the first seed (default: the preset's, else 0); fresh seeds "
                   "confirm what a screening on other seeds chose")
    a.add_argument("--out", help="ablation directory (default: runs/ablate-PRESET-TIME)")
    a.add_argument("--force", action="store_true", help="replace an existing ablation directory")
    a.add_argument("--resume", action="store_true", help="continue: skip finished runs, resume an interrupted one")
    a.add_argument("--reuse", action="append", metavar="CSV",
                   help="take finished runs from an earlier ablation.csv (its run folders may be gone) where row, "
                        "seeds, genotype and settings match; repeatable")
    a.add_argument("--tabulate", metavar="CSV",
                   help="run nothing: write ablation.md and ablation.png from an ablation.csv of this preset, beside "
                        "it (or in --out)")
    a.add_argument("--executor", choices=["sequential", "ray"], default="sequential",
                   help="sequential: one run after another in this process (default); ray: every run a Ray task")
    a.add_argument("--address", help="with --executor ray: the cluster to use, e.g. auto (default: a new local instance)")
    a.add_argument("--threads-per-run", type=int, metavar="T",
                   help="torch threads (with --executor ray also Ray CPUs) of every run; default: each preset's "
                        "runtime.threads, under Ray 1 where unset")
    a.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides for every search and training run, e.g. data.root=DIR")
    a.set_defaults(func=cmd_ablate)

    f = sub.add_parser("profile", help="parameter and multiply-add counts of a preset's network")
    f.add_argument("--preset", required=True,
                   help="a search preset, or with --genotype a training preset (a name or a FILE.yaml)")
    f.add_argument("--genotype", metavar="FILE_OR_NAME", help="profile the evaluation network of this genotype")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    f.set_defaults(func=cmd_profile)

    e = sub.add_parser("export", help="export a trained network to ONNX or torch.export, checked against PyTorch")
    e.add_argument("run", metavar="RUN", help="an nge train run directory or its model.pt")
    e.add_argument("--format", choices=["onnx", "pt2"], default="onnx", help="onnx (needs nge[onnx]) or pt2 (default: onnx)")
    e.add_argument("--out", metavar="FILE", help="the file to write, ending in .onnx or .pt2 as --format says "
                   "(default: RUN/model.onnx or RUN/model.pt2)")
    e.add_argument("--force", action="store_true", help="replace an existing file")
    e.set_defaults(func=cmd_export)

    r = sub.add_parser("predict", help="class names and probabilities for images")
    r.add_argument("model", metavar="MODEL", help="an nge train run directory, its model.pt, or an exported .onnx or .pt2")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (.jpeg, .jpg, .png) or folders of them")
    r.add_argument("--top", type=int, default=5, metavar="K", help="the K most probable classes (default 5)")
    r.add_argument("--json", action="store_true", help="one JSON object per image")
    r.set_defaults(func=cmd_predict)

    from nge import bench, lookup

    lookup.add_parser(sub)
    bench.add_parser(sub)
    return p


def module_main(prog: str, description: str, add_arguments, command, argv: list[str] | None = None) -> int:
    """`python -m nge.MODULE`: one command without the `nge` front end; an NGEError is one line, exit 2."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return command(args)
    except NGEError as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides after options that follow another positional (nge fit DATA --time 5m KEY=VALUE)
    if extra and isinstance(getattr(args, "overrides", None), list) and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except NGEError as e:
        print(f"nge: error: {' '.join(str(e).split())}", file=sys.stderr)  # always one line
        return 2
    except OSError as e:  # unwritable output, disk full, ...
        print(f"nge: error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nge: interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch" in sys.modules:
            from nge.engine import shutdown

            shutdown()


if __name__ == "__main__":
    sys.exit(main())
