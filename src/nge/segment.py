"""Semantic segmentation (docs/paper.md section 4): DeepLabv3 with a searched-cell backbone on PASCAL VOC 2012,
as an EpochTask for the shared engine.

Each epoch: one pass over the training split (random scale, crop, flip in the DataLoader workers;
cross entropy ignoring label 255; poly learning rate per step), then, every `train.eval_every`
epochs and after the last, mIoU over the 21 classes on val at a single scale without flips. Val is
only measured and reported: the final weights are those of the last epoch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nge import viz
from nge.config import EvalNetConfig, SegmentRunConfig, to_dict
from nge.data import voc_loader
from nge.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from nge.data.voc import IGNORE_INDEX, VOC_CLASSES, VOC_NUM_CLASSES, colorize
from nge.deeplab import DeepLabV3, backbone_state, confusion_matrix, iou_per_class, mean_iou
from nge.engine import (
    Meter,
    Phase,
    RunDir,
    autocast,
    load_checkpoint,
    optimizer_step,
    poly_lr,
    progress,
    set_lr,
    single_process,
    to_device,
)
from nge.engine.job import Job, run_job
from nge.errors import NGEError
from nge.evalnet import NetworkImageNet
from nge.genotypes import resolve_genotype
from nge.profile import count_params
from nge.space import Genotype


def load_backbone(path: Path) -> tuple[NetworkImageNet, Genotype]:
    """The ImageNet network of an `nge train` model.pt (or checkpoint.pt), with its weights.

    Strict: every backbone weight must be in the file and fit the network its config describes."""
    ckpt = load_checkpoint(Path(path))
    cfg = ckpt.get("config", {})
    if cfg.get("data", {}).get("name") != "imagenet" or "genotype" not in ckpt:
        raise NGEError(f"{path} is not an ImageNet network from nge train (its config has data.name="
                       f"{cfg.get('data', {}).get('name')}); train one with --preset paper-imagenet")
    genotype = Genotype.from_dict(ckpt["genotype"])
    m = {**to_dict(EvalNetConfig()), **cfg.get("model", {})}
    net = NetworkImageNet(genotype, C=m["C"], num_classes=int(ckpt.get("num_classes", 1000)), layers=m["layers"],
                          auxiliary=False)
    try:
        state = backbone_state(ckpt["task"]["net"])
        missing, unexpected = net.load_state_dict(state, strict=False)
    except (KeyError, TypeError, RuntimeError) as e:  # no weights, or weights of another shape
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise NGEError(f"backbone checkpoint {path} does not fit its own network ({first})") from None
    missing = [k for k in missing if not k.startswith("classifier.")]
    if missing or unexpected:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
        raise NGEError(f"backbone checkpoint {path} does not fit its own network ({what}"
                       f"{' ...' if len(missing or unexpected) > 3 else ''})")
    return net, genotype


def build_segmenter(cfg: SegmentRunConfig, backbone: NetworkImageNet) -> DeepLabV3:
    m = cfg.model
    return DeepLabV3(backbone, VOC_NUM_CLASSES, output_stride=m.output_stride, aspp_channels=m.aspp_channels,
                     rates=tuple(m.rates))


class SegmentTask:
    def __init__(self, cfg: SegmentRunConfig, model: DeepLabV3, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.net = model.to(device)
        if cfg.runtime.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        d, t, seed = cfg.data, cfg.train, cfg.runtime.seed
        self.params = list(self.net.parameters())
        self.opt = torch.optim.SGD(self.params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        common = dict(batch_size=d.batch_size, workers=d.workers, seed=seed, crop=d.crop)
        self.train_loader = voc_loader(d.root, "train", train=True, aug=d.aug, scale=(d.scale_min, d.scale_max),
                                       limit=d.limit, **common)
        self.val_loader = voc_loader(d.root, "val", train=False, **common)
        self.steps = 0
        self.ious: torch.Tensor | None = None

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return to_device(x, self.device, self.cfg.runtime.channels_last)

    def poly_lr(self) -> float:
        t = self.cfg.train
        return poly_lr(t.lr, self.steps, t.epochs * len(self.train_loader), t.power)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter) -> None:
        t = self.cfg.train
        self.lr = self.poly_lr()
        set_lr(self.opt, self.lr)
        self.steps += 1
        self.net.train()
        x, y = self.to_device(x), y.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.runtime.amp):
            logits = self.net(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX)
        if optimizer_step(loss, self.opt, self.params, t.grad_clip, self.cfg.runtime.nonfinite == "skip"):
            keep = y != IGNORE_INDEX  # pixel accuracy over labelled pixels
            meter.add(loss, ((logits.detach().argmax(1) == y) & keep).sum(), keep.sum())

    def begin_epoch(self, epoch: int) -> list[Phase]:
        self.lr = self.poly_lr()
        self.train_loader.set_epoch(epoch)
        return [Phase("train", self.train_loader, lambda b, m: self.train_step(*b, m["train"]))]

    def end_epoch(self, epoch: int, meters: dict[str, Meter]) -> dict[str, float]:
        row = {**meters["train"].result("train"), "lr": self.lr}
        t = self.cfg.train
        if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
            row.update(self.validate())
        return row

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        with autocast(self.device, self.cfg.runtime.amp):
            return self.net(self.to_device(x)).argmax(1)

    def validate(self) -> dict[str, float]:
        """mIoU and pixel accuracy on val (single scale, no flip); per-class IoU kept in `self.ious`."""
        conf = torch.zeros(VOC_NUM_CLASSES, VOC_NUM_CLASSES, dtype=torch.int64, device=self.device)
        for x, y in progress(self.val_loader, len(self.val_loader), "val", self.cfg.runtime.progress):
            conf += confusion_matrix(self.predict(x), y.to(self.device), VOC_NUM_CLASSES, IGNORE_INDEX)
        conf = conf.cpu()
        self.ious = iou_per_class(conf)
        return {"val_miou": mean_iou(conf), "val_acc": float(conf.diag().sum() / conf.sum().clamp(min=1))}

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.steps = int(state["steps"])


def iou_table(ious: torch.Tensor) -> str:
    rows = ["| class | IoU (%) |", "|---|---|"]
    rows += [f"| {name} | {'n/a' if np.isnan(v) else f'{100 * v:.2f}'} |" for name, v in zip(VOC_CLASSES, ious.tolist(),
                                                                                         strict=True)]
    rows.append(f"| **mean** | **{100 * float(ious.nanmean()):.2f}** |")
    return "\n".join(rows) + "\n"


def _labelled_extent(mask: np.ndarray) -> tuple[int, int]:
    """Height and width up to the last labelled row and column (cuts the val padding away)."""
    rows = np.flatnonzero(np.any(mask != IGNORE_INDEX, axis=1))
    cols = np.flatnonzero(np.any(mask != IGNORE_INDEX, axis=0))
    return (int(rows[-1]) + 1 if rows.size else mask.shape[0]), (int(cols[-1]) + 1 if cols.size else mask.shape[1])


def plot_predictions(task: SegmentTask, path: Path, count: int = 4) -> None:
    """The first `count` val images: image, ground truth, prediction (VOC colours; padding cut away)."""
    rows = []
    mean = np.array(IMAGENET_MEAN)[:, None, None]
    std = np.array(IMAGENET_STD)[:, None, None]
    for x, y in task.val_loader:
        pred = task.predict(x).cpu().numpy()
        for i in range(x.shape[0]):
            if len(rows) == count:
                break
            image = np.clip((x[i].numpy() * std + mean) * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)
            truth = y[i].numpy()
            h, w = _labelled_extent(truth)
            rows.append([image[:h, :w], colorize(truth[:h, :w]), colorize(pred[i][:h, :w])])
        if len(rows) == count:
            break
    viz.plot_image_grid(rows, ["image", "ground truth", "prediction"], path)


def resolve_backbone(cfg: SegmentRunConfig, backbone: str | None, genotype_spec: str | None) -> tuple[NetworkImageNet, str]:
    """From a checkpoint (its genotype and size win), or a fresh network of `genotype_spec`."""
    if backbone:
        net, genotype = load_backbone(Path(backbone))
        if genotype_spec and resolve_genotype(genotype_spec) != genotype:
            raise NGEError(f"--genotype {genotype_spec} is not the genotype of the backbone {backbone}; drop --genotype")
        return net, f"backbone {backbone} (ImageNet weights)"
    if not genotype_spec:
        raise NGEError("nge segment needs --backbone CHECKPOINT (an nge train ImageNet model.pt) or --genotype G "
                       "(a randomly initialised backbone)")
    m = cfg.model
    net = NetworkImageNet(resolve_genotype(genotype_spec), C=m.C, num_classes=1000, layers=m.layers, auxiliary=False)
    return net, f"genotype {genotype_spec}, randomly initialised backbone"


class SegmentJob(Job):
    command, epochs_key = "segment", "train.epochs"
    cfg: SegmentRunConfig

    def __init__(self, cfg: SegmentRunConfig, backbone: str | None, genotype_spec: str | None):
        super().__init__(cfg)
        self.backbone, self.genotype_spec = backbone, genotype_spec

    def prepare(self, out: Path, resume: bool) -> None:
        single_process("nge segment")

    def build(self, device: torch.device) -> SegmentTask:
        # after seeding: a fresh backbone follows runtime.seed
        net, self.origin = resolve_backbone(self.cfg, self.backbone, self.genotype_spec)
        return SegmentTask(self.cfg, build_segmenter(self.cfg, net), device)

    def start(self, task: SegmentTask, run: RunDir) -> str:
        d = self.cfg.data
        return (f"VOC {d.root}: {len(task.train_loader.indices)} train / {len(task.val_loader.indices)} val images, "
                f"crop {d.crop}; DeepLabv3 {count_params(task.net):,} params, {self.origin}, "
                f"output stride {self.cfg.model.output_stride}")

    def meta(self, task: SegmentTask) -> dict:
        return {"backbone": self.backbone}

    def finish(self, task: SegmentTask, metrics: list[dict], run: RunDir, log) -> dict:
        if task.ious is None:  # resumed after the last epoch's validation was checkpointed
            task.validate()
        self.save_weights(task, run, len(metrics))
        run.write_text("iou.md", iou_table(task.ious))
        plot_predictions(task, run.file("predictions.png"))
        viz.plot_curves(metrics, run.file("curves.png"))
        last = metrics[-1]
        log(f"final val mIoU {last['val_miou']:.4f}; per-class IoU in {run.file('iou.md')}")
        return {
            "backbone": self.origin,
            "params": count_params(task.net),
            "final_val_miou": last["val_miou"],
            "final_val_acc": last["val_acc"],
            "iou": {name: (None if np.isnan(v) else v) for name, v in zip(VOC_CLASSES, task.ious.tolist(), strict=True)},
        }


def run_segment(cfg: SegmentRunConfig, out: Path, backbone: str | None = None, genotype: str | None = None,
                force: bool = False, resume: bool = False, log=print) -> dict | None:
    """DeepLabv3 on VOC with the backbone of `backbone` (an nge train ImageNet model.pt) or a fresh
    one of `genotype`; writes the run directory and returns the summary."""
    return run_job(SegmentJob(cfg, backbone, genotype), out, force, resume, log)
