"""Training a genotype from scratch (SPEC section 4, CIFAR part) as an EpochTask for the engine.

Each epoch: cosine learning rate, drop-path probability ramped linearly (DARTS), one pass over the
training set (cross entropy + auxiliary weight * auxiliary cross entropy), then test loss and
accuracy. The test split is only measured and reported, never used to choose anything: the final
weights are those of the last epoch.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from nge import viz
from nge.config import TrainRunConfig, to_dict, to_yaml, validate_train
from nge.data import Augment, BatchLoader, Dataset, describe, load_dataset
from nge.engine import (
    Meter,
    Phase,
    RunDir,
    autocast,
    check_resume,
    cosine_lr,
    evaluate,
    fit,
    resolve_device,
    save_checkpoint,
    set_lr,
    setup_runtime,
    sgd_step,
)
from nge.errors import NGEError
from nge.evalnet import NetworkCIFAR, count_params_without_aux
from nge.genotypes import BUILTIN_GENOTYPES
from nge.profile import count_mult_adds
from nge.space import Genotype


def resolve_genotype(spec: str) -> Genotype:
    """A built-in name, a genotype.json file, or a search run directory holding one."""
    if spec in BUILTIN_GENOTYPES:
        return BUILTIN_GENOTYPES[spec]
    path = Path(spec)
    if path.is_dir():
        path = path / "genotype.json"
        if not path.is_file():
            raise NGEError(f"{spec} is a directory without a genotype.json (is it a search run directory?)")
    if path.is_file():
        return Genotype.load(path)
    raise NGEError(f"genotype '{spec}' is not a file, a search run directory or a built-in name "
                   f"({', '.join(BUILTIN_GENOTYPES)})")


def build_network(cfg: TrainRunConfig, genotype: Genotype, in_channels: int, num_classes: int) -> NetworkCIFAR:
    m = cfg.model
    return NetworkCIFAR(genotype, C=m.C, num_classes=num_classes, layers=m.layers, auxiliary=m.auxiliary,
                        in_channels=in_channels, stem_multiplier=m.stem_multiplier)


class TrainTask:
    def __init__(self, cfg: TrainRunConfig, genotype: Genotype, data: Dataset, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.net = build_network(cfg, genotype, data.in_channels, data.num_classes).to(device)
        if cfg.runtime.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        t = cfg.train
        self.params = list(self.net.parameters())
        self.opt = torch.optim.SGD(self.params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        d = cfg.data
        train = data.train
        if d.limit is not None:
            perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.runtime.seed))
            train = train.subset(perm[: d.limit])
        common = dict(mean=data.mean, std=data.std, device=device, seed=cfg.runtime.seed,
                      channels_last=cfg.runtime.channels_last)
        self.train_loader = BatchLoader(train, d.batch_size, shuffle=True, drop_last=True,
                                        augment=Augment(d.crop_pad, d.flip, d.cutout), **common)
        self.test_loader = BatchLoader(data.test, max(d.batch_size, 256), **common)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, self.cfg.runtime.amp):
            logits, aux = self.net(x)
        smoothing = self.cfg.train.label_smoothing
        loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        if aux is not None:
            loss = loss + self.cfg.model.auxiliary_weight * F.cross_entropy(aux.float(), y, label_smoothing=smoothing)
        return loss, logits

    def train_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter) -> None:
        self.net.train()
        loss, logits = self.loss(x, y)
        if sgd_step(loss, self.opt, self.params, self.cfg.train.grad_clip, self.cfg.runtime.nonfinite == "skip"):
            meter.update(loss, logits, y)

    def begin_epoch(self, epoch: int) -> list[Phase]:
        t = self.cfg.train
        self.lr = cosine_lr(t.lr, t.lr_min, epoch, t.epochs)
        set_lr(self.opt, self.lr)
        self.drop = self.cfg.model.drop_path * epoch / t.epochs
        self.net.set_drop_path(self.drop)
        self.train_loader.set_epoch(epoch)
        return [Phase("train", self.train_loader, len(self.train_loader), lambda b, m: self.train_step(*b, m["train"]))]

    def end_epoch(self, epoch: int, meters: dict[str, Meter]) -> dict[str, float]:
        return {**meters["train"].result("train"), **self.test(), "lr": self.lr, "drop_path": self.drop}

    def test(self) -> dict[str, float]:
        self.net.eval()

        def forward(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.cfg.runtime.amp):
                return self.net(x)[0]

        return evaluate(forward, self.test_loader, len(self.test_loader), "test", self.cfg.runtime.progress, "test")

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])


def profile_network(net: torch.nn.Module, in_channels: int, size: int) -> dict[str, int]:
    x = torch.zeros(1, in_channels, size, size, device=next(net.parameters()).device)
    return {"params": count_params_without_aux(net), "mult_adds": count_mult_adds(net, lambda: net(x))}


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
    device = resolve_device(cfg.runtime.device)
    setup_runtime(cfg.runtime.seed, cfg.runtime.threads)
    d = cfg.data
    data = load_dataset(d.name, d.root, to_dict(d)["synthetic"])
    task = TrainTask(cfg, genotype, data, device)
    run = RunDir.create(out, force, resume)
    run.write_text("config.yaml", to_yaml(cfg))
    run.write_text("genotype.json", genotype.to_json() + "\n")
    prof = profile_network(task.net, data.in_channels, data.image_size)
    log(f"nge train: {describe(data)}; training on {len(task.train_loader.x)} images; "
        f"{prof['params']:,} params (without aux), {prof['mult_adds']:,} mult-adds/image; device {device}; -> {run.path}")
    meta = {"config": to_dict(cfg), "genotype": genotype.to_dict(), "in_channels": data.in_channels,
            "num_classes": data.num_classes}
    metrics = fit(task, cfg.train.epochs, run, resume=resume, log=log, extra=meta, show_progress=cfg.runtime.progress,
                  resume_hint=f"nge train --genotype {genotype_spec} --resume --out {run.path} ...")
    save_checkpoint({"epoch": len(metrics), "task": {"net": task.net.state_dict()}, **meta}, run.file("model.pt"))
    viz.plot_curves(metrics, run.file("curves.png"))
    summary = {
        "preset": cfg.preset,
        "genotype": genotype.to_dict(),
        **prof,
        "epochs": len(metrics),
        "final_test_acc": metrics[-1].get("test_acc"),
        "best_test_acc": max(m["test_acc"] for m in metrics),
        "final_train_acc": metrics[-1].get("train_acc"),
        "wall_seconds": round(sum(m["seconds"] for m in metrics), 2),
        "device": str(device),
    }
    run.write_json("summary.json", summary)
    log(f"final test acc {summary['final_test_acc']:.4f} (best {summary['best_test_acc']:.4f}); "
        f"weights in {run.file('model.pt')}")
    return summary
