"""Training a genotype from scratch (docs/paper.md section 4, CIFAR part) as an EpochTask for the engine.

Each epoch: cosine learning rate, drop-path probability ramped linearly (DARTS), one pass over the
training set (cross entropy + auxiliary weight * auxiliary cross entropy), then test loss and
accuracy (after every `train.test_every`-th epoch and the last). The test split is only measured
and reported, never used to choose anything: the final weights are those of the last epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nge import viz
from nge.config import TrainRunConfig, to_dict
from nge.data import (
    Augment,
    BatchLoader,
    Dataset,
    describe,
    folder_loader,
    imagenet_loader,
    load_dataset,
    load_folder,
    scan_folder,
)
from nge.data.folder import MEMORY_LIMIT, STREAM_NORM, ImageFolder
from nge.data.preprocess import Preprocess
from nge.data.sets import IMAGENET_SIZE, ImageSet, class_names, default_classes, limit_indices
from nge.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from nge.engine import (
    Meter,
    Phase,
    RunDir,
    autocast,
    cosine_lr,
    data_parallel,
    evaluate,
    linear_lr,
    optimizer_step,
    set_lr,
    to_device,
    world,
)
from nge.engine.job import Job, run_job
from nge.errors import NGEError
from nge.evalnet import build_network
from nge.genotypes import load_genotype, resolve_genotype
from nge.profile import check_mult_adds, profile_eval_preset, profile_network
from nge.space import Genotype


@dataclass
class TrainData:
    """Loaders (`engine.Batches` of (x, y) with `set_epoch`) and what the network needs to know."""

    train: Any
    test: Any
    in_channels: int
    num_classes: int
    image_size: int
    description: str
    n_train: int
    classes: tuple[str, ...]  # class names in label order
    preprocess: Preprocess  # the test split's preprocessing, for any image (model.pt carries it)
    val: Any = None  # the held-out validation split (data.val), or None


def tensor_data(cfg: TrainRunConfig, data: Dataset, device: torch.device) -> TrainData:
    """CIFAR-size data held on the device, augmented per batch."""
    d = cfg.data
    train, val = held_out(data.train, d.val)
    if d.limit is not None:
        if d.val and d.limit > len(train):
            raise NGEError(f"data.limit={d.limit} with data.val={d.val} needs {d.limit + d.val} training images; "
                           f"the set has {len(data.train)}: lower one of them")
        # the images a search of this seed keeps, passing over the held-out ones (`limit_indices`)
        skip = held_out_indices(len(data.train), d.val) if d.val else None
        train = data.train.subset(limit_indices(len(data.train), d.limit, cfg.runtime.seed, skip))
    common = dict(mean=data.mean, std=data.std, device=device, seed=cfg.runtime.seed,
                  channels_last=cfg.runtime.channels_last, shard=world())
    eval_batch = -(-max(d.batch_size, 256) // world()[1])  # at least 256 images in all, split over the processes
    return TrainData(
        BatchLoader(train, d.batch_size, shuffle=True, drop_last=True, augment=Augment(d.crop_pad, d.flip, d.cutout),
                    **common),
        BatchLoader(data.test, eval_batch, **common),
        data.in_channels, data.num_classes, data.image_size, describe(data), len(train),
        data.classes or default_classes(data.name, data.num_classes),
        Preprocess("square", data.image_size, data.in_channels, tuple(data.mean), tuple(data.std)),
        val=BatchLoader(val, eval_batch, **common) if val is not None else None,
    )


VAL_SEED = 20_260_101  # fixes the validation split (data.val): the same images whatever runtime.seed


def held_out(train: ImageSet, n: int) -> tuple[ImageSet, ImageSet | None]:
    """(the rest, `n` images held out): a fixed random subset, independent of the run's seed."""
    if n == 0:
        return train, None
    if n >= len(train):
        raise NGEError(f"data.val={n} leaves no training images (the set has {len(train)})")
    held = held_out_indices(len(train), n)
    rest = torch.ones(len(train), dtype=torch.bool)
    rest[held] = False
    return train.subset(rest.nonzero().flatten()), train.subset(held)


def held_out_indices(n: int, k: int) -> torch.Tensor:
    """The sorted indices of the `k` of `n` training images data.val holds out: fixed by VAL_SEED."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))[:k].sort().values


def imagenet_data(cfg: TrainRunConfig) -> TrainData:
    """ImageNet in its ImageFolder layout, decoded and augmented by DataLoader workers."""
    d, seed = cfg.data, cfg.runtime.seed
    if d.root is None:
        raise NGEError("data.name=imagenet needs data.root=DIR (a folder holding train/<class>/ and val/<class>/)")
    size = d.image_size or IMAGENET_SIZE
    common = dict(batch_size=d.batch_size, workers=d.workers, seed=seed, size=size, resize=d.resize, shard=world())
    train = imagenet_loader(d.root, "train", train=True, limit=d.limit, **common)
    test = imagenet_loader(d.root, "val", train=False, **common)
    n = len(train.indices)
    desc = (f"imagenet {d.root}: {n} train / {len(test.dataset)} val images, {train.num_classes} classes, "
            f"{size}x{size} crops, {d.workers} workers")
    return TrainData(train, test, 3, train.num_classes, size, desc, n, tuple(train.classes),
                     Preprocess("crop", size, 3, IMAGENET_MEAN, IMAGENET_STD, d.resize))


def stream_data(cfg: TrainRunConfig, f: ImageFolder) -> TrainData:
    """A folder set too large for memory, decoded and augmented (as tensor_data's) by DataLoader workers."""
    d = cfg.data
    common = dict(batch_size=d.batch_size, workers=d.workers, seed=cfg.runtime.seed, shard=world())
    train = folder_loader(f, "train", Augment(d.crop_pad, d.flip, d.cutout), limit=d.limit, **common)
    test = folder_loader(f, "test", Augment(), **common)
    n = len(train.indices)
    desc = (f"folder {f.root}: {n} train / {len(f.test)} test images, {f.channels}x{f.size}x{f.size}, "
            f"{len(f.classes)} classes ({class_names(f.classes)}); over {MEMORY_LIMIT // 2**20} MB decoded, "
            f"so streamed by {d.workers} workers")
    return TrainData(train, test, f.channels, len(f.classes), f.size, desc, n, tuple(f.classes),
                     Preprocess("square", f.size, f.channels, *STREAM_NORM[f.channels]))


def load_train_data(cfg: TrainRunConfig, device: torch.device) -> TrainData:
    d, seed = cfg.data, cfg.runtime.seed
    if d.name == "imagenet":
        return imagenet_data(cfg)
    if d.name == "folder":
        f = scan_folder(d.root, test=True, image_size=d.image_size, channels=d.channels)
        return tensor_data(cfg, load_folder(f, d.limit, seed), device) if f.fits(d.limit) else stream_data(cfg, f)
    return tensor_data(cfg, load_dataset(d.name, d.root, to_dict(d)["synthetic"]), device)


class TrainTask:
    def __init__(self, cfg: TrainRunConfig, genotype: Genotype, data: TrainData | Dataset, device: torch.device):
        if isinstance(data, Dataset):
            data = tensor_data(cfg, data, device)
        self.cfg = cfg
        self.device = device
        self.net = build_network(cfg.model, genotype, data.in_channels, data.num_classes,
                                 imagenet=cfg.data.name == "imagenet").to(device)
        if cfg.runtime.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.train_net = data_parallel(self.net, device)  # under torchrun: gradients averaged over processes
        t = cfg.train
        self.params = list(self.net.parameters())
        self.opt = torch.optim.SGD(self.params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        self.train_loader, self.test_loader, self.val_loader = data.train, data.test, data.val
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
        if optimizer_step(loss, self.opt, self.params, t.grad_clip, self.cfg.runtime.nonfinite == "skip"):
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
        return [Phase("train", self.train_loader, lambda b, m: self.train_step(*b, m["train"]))]

    def end_epoch(self, epoch: int, meters: dict[str, Meter]) -> dict[str, float]:
        val = self.test(self.val_loader, "val") if self.val_loader is not None else {}
        t = self.cfg.train
        test = self.test() if (epoch + 1) % t.test_every == 0 or epoch + 1 == t.epochs else {}
        return {**meters["train"].result("train"), **val, **test, "lr": self.lr, "drop_path": self.drop}

    def test(self, loader=None, split: str = "test") -> dict[str, float]:
        self.net.eval()
        loader = self.test_loader if loader is None else loader

        def forward(x: torch.Tensor) -> torch.Tensor:
            x = self.to_device(x)
            with autocast(self.device, self.cfg.runtime.amp):
                return self.net(x)[0]

        return evaluate(forward, loader, len(loader), split, self.cfg.runtime.progress, split, top5=self.top5)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.steps = int(state.get("steps", 0))


class TrainJob(Job):
    command, epochs_key = "train", "train.epochs"
    cfg: TrainRunConfig

    def __init__(self, cfg: TrainRunConfig, genotype_spec: str | Genotype):
        super().__init__(cfg)
        self.genotype_spec = genotype_spec

    def prepare(self, out: Path, resume: bool) -> None:
        self.genotype = resolve_genotype(self.genotype_spec)
        saved = Path(out) / "genotype.json"
        if resume and (not saved.is_file() or load_genotype(saved) != self.genotype):
            raise NGEError(f"cannot resume {out} with a different genotype than the one it was started with "
                           "(or without its genotype.json)")
        if self.cfg.model.mult_adds_limit is not None:
            check_mult_adds(self.cfg, profile_eval_preset(self.cfg, self.genotype)["mult_adds"], self.genotype_spec)

    def build(self, device: torch.device) -> TrainTask:
        self.data = load_train_data(self.cfg, device)
        return TrainTask(self.cfg, self.genotype, self.data, device)

    def start(self, task: TrainTask, run: RunDir) -> str:
        run.write_text("genotype.json", self.genotype.to_json() + "\n")
        self.profile = profile_network(task.net, self.data.in_channels, self.data.image_size)
        return (f"{self.data.description}; training on {self.data.n_train} images; "
                f"{self.profile['params']:,} params (without aux), {self.profile['mult_adds']:,} mult-adds/image")

    def meta(self, task: TrainTask) -> dict:
        return {"genotype": self.genotype.to_dict(), "in_channels": self.data.in_channels,
                "num_classes": self.data.num_classes, "classes": list(self.data.classes),
                "preprocess": self.data.preprocess.to_dict()}

    def finish(self, task: TrainTask, metrics: list[dict], run: RunDir, log) -> dict:
        self.save_weights(task, run, len(metrics))
        viz.plot_curves(metrics, run.file("curves.png"))
        last = metrics[-1]
        summary = {
            "genotype": self.genotype.to_dict(),
            **self.profile,
            "final_test_acc": last.get("test_acc"),
            **({"final_test_top5": last["test_top5"]} if "test_top5" in last else {}),
            "best_test_acc": max(m["test_acc"] for m in metrics if "test_acc" in m),
            "final_train_acc": last.get("train_acc"),
            **({"final_val_acc": last["val_acc"], "val_images": self.cfg.data.val} if "val_acc" in last else {}),
            # the sum over epochs of the training loss (TSE, Ru et al. 2021), a ranking signal of its own
            "train_loss_sum": sum(m["train_loss"] for m in metrics if m.get("train_loss") is not None),
            **({"classes": list(self.data.classes)} if self.cfg.data.name == "folder" else {}),
        }
        log(f"final test acc {summary['final_test_acc']:.4f} (best {summary['best_test_acc']:.4f}); "
            f"weights in {run.file('model.pt')}")
        return summary

    def resume_hint(self, run: RunDir) -> str:
        spec = self.genotype_spec if isinstance(self.genotype_spec, str) else run.file("genotype.json")
        return f"nge train --genotype {spec} --resume --out {run.path} ..."


def run_train(cfg: TrainRunConfig, genotype_spec: str | Genotype, out: Path, force: bool = False, resume: bool = False,
              log=print) -> dict | None:
    """Train `genotype_spec` (see `resolve_genotype`) from scratch and write the run directory.
    Returns the summary (None in all but the first process under torchrun)."""
    return run_job(TrainJob(cfg, genotype_spec), out, force, resume, log)
