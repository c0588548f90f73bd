"""Training a genotype from scratch (SPEC section 4, CIFAR part) as an EpochTask for the engine.

Each epoch: cosine learning rate, drop-path probability ramped linearly (DARTS), one pass over the
training set (cross entropy + auxiliary weight * auxiliary cross entropy), then test loss and
accuracy. The test split is only measured and reported, never used to choose anything: the final
weights are those of the last epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nge import viz
from nge.config import TrainRunConfig, to_dict, to_yaml, validate_train
from nge.data import Augment, BatchLoader, Dataset, describe, input_shape, load_dataset
from nge.engine import (
    Meter,
    Phase,
    RunDir,
    autocast,
    check_resume,
    cosine_lr,
    data_parallel,
    evaluate,
    fit,
    is_main,
    linear_lr,
    main_log,
    process_note,
    save_checkpoint,
    set_lr,
    setup_runtime,
    sgd_step,
    to_device,
    world,
)
from nge.errors import NGEError
from nge.evalnet import NetworkCIFAR, NetworkImageNet, count_params_without_aux
from nge.genotypes import BUILTIN_GENOTYPES
from nge.profile import count_mult_adds
from nge.space import Genotype, random_genotype


def resolve_genotype(spec: str) -> Genotype:
    """A built-in name, `random:SEED` (a uniform draw from the search space), a genotype.json file,
    or a search run directory holding one."""
    if spec in BUILTIN_GENOTYPES:
        return BUILTIN_GENOTYPES[spec]
    if spec.startswith("random:"):
        seed = spec[len("random:"):]
        if not seed.isdigit():
            raise NGEError(f"genotype '{spec}': random:SEED needs a non-negative integer seed, e.g. random:0")
        return random_genotype(int(seed))
    path = Path(spec)
    if path.is_dir():
        path = path / "genotype.json"
        if not path.is_file():
            raise NGEError(f"{spec} is a directory without a genotype.json (is it a search run directory?)")
    if path.is_file():
        return Genotype.load(path)
    raise NGEError(f"genotype '{spec}' is not a file, a search run directory, random:SEED or a built-in name "
                   f"({', '.join(BUILTIN_GENOTYPES)})")


def build_network(cfg: TrainRunConfig, genotype: Genotype, in_channels: int, num_classes: int) -> NetworkCIFAR | NetworkImageNet:
    """The DARTS ImageNet network for data.name=imagenet, the CIFAR network otherwise."""
    m = cfg.model
    if cfg.data.name == "imagenet":
        if in_channels != 3:
            raise NGEError(f"the ImageNet network takes RGB images, not {in_channels} channels")
        return NetworkImageNet(genotype, C=m.C, num_classes=num_classes, layers=m.layers, auxiliary=m.auxiliary)
    return NetworkCIFAR(genotype, C=m.C, num_classes=num_classes, layers=m.layers, auxiliary=m.auxiliary,
                        in_channels=in_channels, stem_multiplier=m.stem_multiplier)


@dataclass
class TrainData:
    """Loaders (iterables of (x, y) with `len` and `set_epoch`) and what the network needs to know."""

    train: Any
    test: Any
    in_channels: int
    num_classes: int
    image_size: int
    description: str
    n_train: int


def tensor_data(cfg: TrainRunConfig, data: Dataset, device: torch.device) -> TrainData:
    """CIFAR-size data held on the device, augmented per batch."""
    d = cfg.data
    train = data.train
    if d.limit is not None:
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.runtime.seed))
        train = train.subset(perm[: d.limit])
    common = dict(mean=data.mean, std=data.std, device=device, seed=cfg.runtime.seed,
                  channels_last=cfg.runtime.channels_last, shard=world())
    return TrainData(
        BatchLoader(train, d.batch_size, shuffle=True, drop_last=True, augment=Augment(d.crop_pad, d.flip, d.cutout),
                    **common),
        # test batches of at least 256 images in all, split over the processes
        BatchLoader(data.test, -(-max(d.batch_size, 256) // world()[1]), **common),
        data.in_channels, data.num_classes, data.image_size, describe(data), len(train),
    )


def folder_data(cfg: TrainRunConfig) -> TrainData:
    """ImageNet in its ImageFolder layout, decoded and augmented by DataLoader workers."""
    from nge.imagedata import imagenet_loader

    d, seed = cfg.data, cfg.runtime.seed
    if d.root is None:
        raise NGEError("data.name=imagenet needs data.root=DIR (a folder holding train/<class>/ and val/<class>/)")
    common = dict(batch_size=d.batch_size, workers=d.workers, seed=seed, size=d.image_size, resize=d.resize,
                  shard=world())
    train = imagenet_loader(d.root, "train", train=True, limit=d.limit, **common)
    test = imagenet_loader(d.root, "val", train=False, **common)
    n = len(train.indices)
    desc = (f"imagenet {d.root}: {n} train / {len(test.dataset)} val images, {train.num_classes} classes, "
            f"{d.image_size}x{d.image_size} crops, {d.workers} workers")
    return TrainData(train, test, 3, train.num_classes, d.image_size, desc, n)


def load_train_data(cfg: TrainRunConfig, device: torch.device) -> TrainData:
    d = cfg.data
    if d.name == "imagenet":
        return folder_data(cfg)
    return tensor_data(cfg, load_dataset(d.name, d.root, to_dict(d)["synthetic"]), device)


class TrainTask:
    def __init__(self, cfg: TrainRunConfig, genotype: Genotype, data: TrainData | Dataset, device: torch.device):
        if isinstance(data, Dataset):
            data = tensor_data(cfg, data, device)
        self.cfg = cfg
        self.device = device
        self.net = build_network(cfg, genotype, data.in_channels, data.num_classes).to(device)
        if cfg.runtime.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.train_net = data_parallel(self.net, device)  # under torchrun: gradients averaged over processes
        t = cfg.train
        self.params = list(self.net.parameters())
        self.opt = torch.optim.SGD(self.params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        self.train_loader, self.test_loader = data.train, data.test
        self.top5 = cfg.data.name == "imagenet"
        self.steps = 0  # optimiser steps taken (the linear schedule is per step)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return to_device(x, self.device, self.cfg.runtime.channels_last)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, self.cfg.runtime.amp):
            logits, aux = self.train_net(x)
        smoothing = self.cfg.train.label_smoothing
        loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        if aux is not None:
            loss = loss + self.cfg.model.auxiliary_weight * F.cross_entropy(aux.float(), y, label_smoothing=smoothing)
        return loss, logits

    def train_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter) -> None:
        t = self.cfg.train
        if t.schedule == "linear":
            self.lr = linear_lr(t.lr, self.steps, len(self.train_loader), t.warmup_epochs, t.epochs)
            set_lr(self.opt, self.lr)
        self.steps += 1
        self.net.train()
        x, y = self.to_device(x), y.to(self.device, non_blocking=True)
        loss, logits = self.loss(x, y)
        if sgd_step(loss, self.opt, self.params, t.grad_clip, self.cfg.runtime.nonfinite == "skip"):
            meter.update(loss, logits, y)

    def begin_epoch(self, epoch: int) -> list[Phase]:
        t = self.cfg.train
        if t.schedule == "cosine":
            self.lr = cosine_lr(t.lr, t.lr_min, epoch, t.epochs)
            set_lr(self.opt, self.lr)
        else:
            self.lr = linear_lr(t.lr, self.steps, len(self.train_loader), t.warmup_epochs, t.epochs)
        self.drop = self.cfg.model.drop_path * epoch / t.epochs
        self.net.set_drop_path(self.drop)
        self.train_loader.set_epoch(epoch)
        return [Phase("train", self.train_loader, len(self.train_loader), lambda b, m: self.train_step(*b, m["train"]))]

    def end_epoch(self, epoch: int, meters: dict[str, Meter]) -> dict[str, float]:
        return {**meters["train"].result("train"), **self.test(), "lr": self.lr, "drop_path": self.drop}

    def test(self) -> dict[str, float]:
        self.net.eval()

        def forward(x: torch.Tensor) -> torch.Tensor:
            x = self.to_device(x)
            with autocast(self.device, self.cfg.runtime.amp):
                return self.net(x)[0]

        return evaluate(forward, self.test_loader, len(self.test_loader), "test", self.cfg.runtime.progress, "test",
                        top5=self.top5)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.steps = int(state.get("steps", 0))


def profile_network(net: torch.nn.Module, in_channels: int, size: int) -> dict[str, int]:
    x = torch.zeros(1, in_channels, size, size, device=next(net.parameters()).device)
    return {"params": count_params_without_aux(net), "mult_adds": count_mult_adds(net, lambda: net(x))}


def profile_preset(cfg: TrainRunConfig, genotype: Genotype) -> dict[str, Any]:
    """Params and multiply-adds of the preset's network for one image, built without reading data."""
    channels, size, classes = input_shape(cfg.data.name, to_dict(cfg.data)["synthetic"])
    if cfg.data.name == "imagenet":
        size = cfg.data.image_size
    net = build_network(cfg, genotype, channels, classes)
    return {"input": [channels, size, size], "num_classes": classes, **profile_network(net, channels, size)}


def check_mult_adds(cfg: TrainRunConfig, mult_adds: int, genotype_spec: str) -> None:
    limit = cfg.model.mult_adds_limit
    if limit is not None and mult_adds > limit:
        raise NGEError(f"genotype {genotype_spec} gives {mult_adds:,} multiply-adds per image under preset {cfg.preset}, "
                       f"over its limit of {limit:,} (the mobile setting); lift it with model.mult_adds_limit=null "
                       "or make the network smaller (model.C, model.layers)")


def run_train(cfg: TrainRunConfig, genotype_spec: str, out: Path, force: bool = False, resume: bool = False,
              log=print) -> dict:
    """Validate, read data, train, write the run directory. Returns the summary."""
    validate_train(cfg)
    genotype = resolve_genotype(genotype_spec)
    RunDir.check(out, force, resume)
    if resume:
        check_resume(out, to_dict(cfg), ("train.epochs", "runtime"))
        saved = Genotype.load(Path(out) / "genotype.json")
        if saved != genotype:
            raise NGEError(f"cannot resume {out} with a different genotype than the one it was started with")
    if cfg.model.mult_adds_limit is not None:
        check_mult_adds(cfg, profile_preset(cfg, genotype)["mult_adds"], genotype_spec)
    device = setup_runtime(cfg.runtime.seed, cfg.runtime.threads, cfg.runtime.device)
    data = load_train_data(cfg, device)
    task = TrainTask(cfg, genotype, data, device)
    run = RunDir.open(out, force, resume)
    main, procs = is_main(), world()[1]
    log = main_log(log)
    if main:
        run.write_text("config.yaml", to_yaml(cfg))
        run.write_text("genotype.json", genotype.to_json() + "\n")
    prof = profile_network(task.net, data.in_channels, data.image_size)
    log(f"nge train: {data.description}; training on {data.n_train} images; "
        f"{prof['params']:,} params (without aux), {prof['mult_adds']:,} mult-adds/image; "
        f"device {device}{process_note(cfg.data.batch_size)}; -> {run.path}")
    meta = {"config": to_dict(cfg), "genotype": genotype.to_dict(), "in_channels": data.in_channels,
            "num_classes": data.num_classes}
    metrics = fit(task, cfg.train.epochs, run, resume=resume, log=log, extra=meta, show_progress=cfg.runtime.progress,
                  resume_hint=f"nge train --genotype {genotype_spec} --resume --out {run.path} ...")
    if not main:
        return {"epochs": len(metrics), "final_test_acc": metrics[-1].get("test_acc")}
    save_checkpoint({"epoch": len(metrics), "task": {"net": task.net.state_dict()}, **meta}, run.file("model.pt"))
    viz.plot_curves(metrics, run.file("curves.png"))
    summary = {
        "preset": cfg.preset,
        "genotype": genotype.to_dict(),
        **prof,
        "epochs": len(metrics),
        "final_test_acc": metrics[-1].get("test_acc"),
        **({"final_test_top5": metrics[-1]["test_top5"]} if "test_top5" in metrics[-1] else {}),
        "best_test_acc": max(m["test_acc"] for m in metrics),
        "final_train_acc": metrics[-1].get("train_acc"),
        "wall_seconds": round(sum(m["seconds"] for m in metrics), 2),
        "device": str(device),
        "processes": procs,
        "global_batch": procs * cfg.data.batch_size,
    }
    run.write_json("summary.json", summary)
    log(f"final test acc {summary['final_test_acc']:.4f} (best {summary['best_test_acc']:.4f}); "
        f"weights in {run.file('model.pt')}")
    return summary
