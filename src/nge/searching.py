"""The search (docs/paper.md section 3, Algorithm 1) as an EpochTask for the shared engine.

`SearchTask` holds the supernet, the architecture parameterisation ("arch", what produces P), their
optimisers and the train/val split; a strategy from `STRATEGIES` decides each epoch's phases and
the final genotype: `gd` (the paper's gradient search), `rl` or `ea` (`nge.strategies`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nge import viz
from nge.arch import ArchParam, build_arch
from nge.config import RESUME_MAY_CHANGE, SearchRunConfig, inert_keys, schema_defaults, to_dict
from nge.data import Augment, BatchLoader, Dataset, describe, load_dataset, load_folder, scan_folder, split_train_val
from nge.engine import (
    Meter,
    Phase,
    RunDir,
    autocast,
    check_resume_config,
    check_same_everywhere,
    cosine_lr,
    data_parallel,
    frozen,
    load_checkpoint,
    optimizer_step,
    set_lr,
    world,
)
from nge.engine.job import Job, run_job
from nge.errors import NGEError
from nge.profile import count_params
from nge.space import CellProbs, Genotype
from nge.spaces import get_space
from nge.strategies import STRATEGIES
from nge.telemetry import probs_telemetry


class SearchTask:
    def __init__(self, cfg: SearchRunConfig, data: Dataset, device: torch.device):
        if cfg.search.strategy != "gd" and world()[1] > 1:
            raise NGEError(f"search.strategy={cfg.search.strategy} runs in one process; start it without torchrun")
        self.cfg = cfg
        self.device = device
        self.space = sp = get_space(cfg.search.space)
        self.net = sp.build_supernet(cfg.model, data.in_channels, data.num_classes, device).to(device)
        w, a = cfg.search.weights, cfg.search.arch
        self.arch: ArchParam = build_arch(a.name, sp.topology, len(sp.primitives), init=a.init, shared_offset=a.shared_offset,
                                          op_bias=a.op_bias, cell_types=sp.cell_types, cells=a.cells).to(device)
        if cfg.runtime.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.weight_params = list(self.net.parameters())
        self.arch_params = list(self.arch.parameters())
        self.skip_nonfinite = cfg.runtime.nonfinite == "skip"
        self.weight_opt = torch.optim.SGD(self.weight_params, lr=w.lr, momentum=w.momentum, weight_decay=w.weight_decay)
        self.arch_opt = torch.optim.Adam(self.arch_params, lr=a.lr, betas=(a.beta1, a.beta2), weight_decay=a.weight_decay)
        # under torchrun: gradients of both averaged over the processes; P is then the same on all
        self.train_net = data_parallel(self.net, device)
        self.train_arch = data_parallel(self.arch, device)
        train, val = split_train_val(data.train, cfg.data.train_portion, cfg.runtime.seed, cfg.data.limit)
        d = cfg.data
        common = dict(batch_size=d.batch_size, mean=data.mean, std=data.std, device=device, shuffle=True,
                      seed=cfg.runtime.seed, channels_last=cfg.runtime.channels_last, shard=world())
        self.train_loader = BatchLoader(train, augment=Augment(d.crop_pad, d.flip), drop_last=True, **common)
        self.val_loader = BatchLoader(val, drop_last=True, **common)
        self.p_history: list[CellProbs] = [self.probs()]
        self.strategy = STRATEGIES[cfg.search.strategy](self)

    @torch.no_grad()
    def probs(self) -> CellProbs:
        return CellProbs(*(p.float().cpu() for p in self.arch()))

    def _forward(self, net: torch.nn.Module, x: torch.Tensor, probs: CellProbs) -> torch.Tensor:
        with autocast(self.device, self.cfg.runtime.amp):
            return net(x, probs)

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, probs: CellProbs, meter: Meter) -> None:
        """Update w on a training batch; P is detached, so no gradient reaches the parameterisation."""
        self.net.train()
        logits = self._forward(self.train_net, x, probs.detach())
        loss = F.cross_entropy(logits.float(), y)
        if optimizer_step(loss, self.weight_opt, self.weight_params, self.cfg.search.weights.grad_clip, self.skip_nonfinite):
            meter.update(loss, logits, y)

    def arch_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter) -> None:
        """Update the parameterisation on a validation batch; w is frozen (first order)."""
        self.net.train()
        with frozen(self.net):
            logits = self._forward(self.net, x, self.train_arch())
            loss = F.cross_entropy(logits.float(), y)
            if optimizer_step(loss, self.arch_opt, self.arch_params, 0.0, self.skip_nonfinite):
                meter.update(loss, logits, y)

    def begin_epoch(self, epoch: int) -> list[Phase]:
        s = self.cfg.search
        self.lr = cosine_lr(s.weights.lr, s.weights.lr_min, epoch, s.epochs)
        set_lr(self.weight_opt, self.lr)
        self.train_loader.set_epoch(epoch)
        self.val_loader.set_epoch(epoch)
        return self.strategy.phases(epoch)

    def end_epoch(self, epoch: int, meters: dict[str, Meter]) -> dict[str, float]:
        self.p_history.append(self.probs())
        check_same_everywhere(torch.cat([p.flatten() for p in self.p_history[-1]]), "P")
        return {**meters["train"].result("train"), **meters["val"].result("val"), "lr": self.lr,
                **self.telemetry(self.p_history[-1]), **self.strategy.end_epoch()}

    def telemetry(self, probs: CellProbs) -> dict:
        return probs_telemetry(*probs, names=self.space.cell_types)

    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "arch": self.arch.state_dict(),
            "weight_opt": self.weight_opt.state_dict(),
            "arch_opt": self.arch_opt.state_dict(),
            "p_history": [list(p) for p in self.p_history],
            "strategy": self.strategy.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.arch.load_state_dict(state["arch"])
        self.weight_opt.load_state_dict(state["weight_opt"])
        self.arch_opt.load_state_dict(state["arch_opt"])
        self.p_history = [CellProbs(*p) for p in state["p_history"]]
        self.strategy.load_state_dict(state["strategy"])

    def genotype(self) -> Genotype:
        return self.strategy.genotype()

    # ------------------------------------------------------------------ single-path steps (rl, ea)

    def path_weight_step(self, x: torch.Tensor, y: torch.Tensor, genotype: Genotype, meter: Meter) -> None:
        """Update w on a training batch through the one cell `genotype` (the other weights get no gradient)."""
        self.net.train()
        with autocast(self.device, self.cfg.runtime.amp):
            logits = self.net.forward_path(x, genotype)
        loss = F.cross_entropy(logits.float(), y)
        if optimizer_step(loss, self.weight_opt, self.weight_params, self.cfg.search.weights.grad_clip, self.skip_nonfinite):
            meter.update(loss, logits, y)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, genotype: Genotype, meter: Meter | None = None) -> float:
        """The accuracy of `genotype` on a batch with the shared weights (batch statistics, as in training)."""
        self.net.train()
        with autocast(self.device, self.cfg.runtime.amp):
            logits = self.net.forward_path(x, genotype).float()
        if meter is not None:
            meter.update(F.cross_entropy(logits, y), logits, y)
        return float((logits.argmax(1) == y).float().mean())

    @torch.no_grad()
    def loss(self, batches: list, probs: CellProbs) -> float:
        """The supernet's mean cross-entropy under P over `batches` (batch statistics, as in training)."""
        self.net.train()
        total, n = 0.0, 0
        for x, y in batches:
            logits = self._forward(self.net, x, probs).float()
            total += float(F.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
        return total / n

    def arch_update(self, loss: torch.Tensor) -> None:
        optimizer_step(loss, self.arch_opt, self.arch_params, 0.0, self.skip_nonfinite)


SELECT_KEYS = ("search.select", "search.select_batches", "search.select_from")


def load_finished_search(cfg: SearchRunConfig, out: Path) -> dict:
    """The checkpoint of `search.select_from`, checked like a resume: a search that finished its
    `search.epochs` with `cfg`'s settings but the SELECT_KEYS, in as many processes."""
    src = Path(cfg.search.select_from).expanduser()
    if src.resolve() == Path(out).expanduser().resolve():
        raise NGEError(f"search.select_from={src} is the output directory; give another --out")
    path = src / RunDir.CHECKPOINT
    if not path.is_file():
        raise NGEError(f"search.select_from={src}: no {RunDir.CHECKPOINT} there; give a search run directory")
    ckpt = load_checkpoint(path)
    if "search" not in ckpt.get("config", {}):
        raise NGEError(f"search.select_from={src}: {path} is not a search's checkpoint")
    may_differ = (*SELECT_KEYS, *RESUME_MAY_CHANGE, *inert_keys(cfg))
    check_resume_config(ckpt["config"], to_dict(cfg), may_differ, schema_defaults(SearchRunConfig), f"select from {src}")
    epochs = cfg.search.epochs
    if int(ckpt["epoch"]) != epochs or ckpt.get("cursor"):
        raise NGEError(f"search.select_from={src}: the search has finished {ckpt['epoch']} of its {epochs} epochs; "
                       f"finish it first (nge search --resume --out {src} ...)")
    if int(ckpt.get("processes", 1)) != world()[1]:  # the validation batches depend on it
        raise NGEError(f"search.select_from={src}: the search ran in {ckpt.get('processes', 1)} process(es), "
                       f"this is {world()[1]}; select with the same number")
    return ckpt


class SearchJob(Job):
    """A search; with `search.select_from` only the selection, on a finished search's supernet and P
    (no epoch runs: the summary's wall_seconds is 0 and select_seconds the whole cost)."""

    command, epochs_key = "search", "search.epochs"
    cfg: SearchRunConfig
    source: dict | None = None  # search.select_from's checkpoint

    @property
    def epochs(self) -> int:
        return 0 if self.cfg.search.select_from else super().epochs

    def prepare(self, out: Path, resume: bool) -> None:
        if self.cfg.search.select_from:
            if resume:
                raise NGEError("search.select_from runs no epochs, so there is nothing to --resume; run it again")
            self.source = load_finished_search(self.cfg, out)

    def build(self, device: torch.device) -> SearchTask:
        d = self.cfg.data
        if d.name == "folder":  # train/ only, decoded into memory
            folder = scan_folder(d.root, test=False, image_size=d.image_size, channels=d.channels)
            self.data = load_folder(folder, d.limit, self.cfg.runtime.seed)
        else:
            self.data = load_dataset(d.name, d.root, to_dict(d)["synthetic"])
        task = SearchTask(self.cfg, self.data, device)
        if self.source is not None:  # the finished search's state, its loaders where its last epoch left them
            task.load_state_dict(self.source["task"])
            for loader in (task.train_loader, task.val_loader):
                loader.set_epoch(self.cfg.search.epochs - 1)
        return task

    def start(self, task: SearchTask, run: RunDir) -> str:
        source = f"; selecting on the supernet of {self.cfg.search.select_from}, no search" if self.source else ""
        return (f"{describe(self.data)}; train {len(task.train_loader.x)} / val {len(task.val_loader.x)}; "
                f"supernet {count_params(task.net):,} params, {self.cfg.search.arch.name} {count_params(task.arch):,} params"
                f"{source}")

    def finish(self, task: SearchTask, metrics: list[dict], run: RunDir, log) -> dict:
        if self.source is not None:  # the search's epochs, for the curves and final accuracies
            metrics = list(self.source.get("metrics", []))
        genotype, sp = task.genotype(), task.space
        run.write_text("genotype.json", genotype.to_json() + "\n")
        run.write_jsonl("probs.jsonl", [{"epoch": e, **dict(zip(sp.cell_types, p, strict=True))}
                                        for e, p in enumerate(task.p_history)])
        viz.plot_cells(sp, genotype, run.path)
        viz.plot_probs_over_epochs(task.p_history, run.file("probs.png"), primitives=sp.primitives,
                                   cell_types=sp.cell_types, topology=sp.topology)
        viz.plot_curves(metrics, run.file("curves.png"))
        viz.plot_telemetry([task.telemetry(p) for p in task.p_history], run.file("telemetry.png"), sp.cell_types,
                           len(sp.primitives))
        last = metrics[-1] if metrics else {}
        counts = sp.op_counts(genotype)
        line = "; ".join(f"{c}: " + ", ".join(f"{n} {op}" for op, n in counts[c].items()) for c in counts)
        truth = {}
        if sp.has_ground_truth:
            from nge.spaces.nb201_table import lookup

            truth = {"ground_truth": lookup(genotype)}
        log(f"genotype written to {run.file('genotype.json')} ({line}); final val acc {last.get('val_acc')}")
        if truth:
            g = truth["ground_truth"]
            log(f"ground truth (NAS-Bench-201, 200 epochs) of {g['cell']}: CIFAR-10 {g['cifar10']['accuracy']:.2f} "
                f"(rank {g['cifar10']['rank']} of 15,625), CIFAR-100 {g['cifar100']['accuracy']:.2f}, "
                f"ImageNet16-120 {g['imagenet16-120']['accuracy']:.2f}")
        return {
            "space": sp.name,
            "arch": str(self.cfg.search.arch.name),
            "strategy": str(self.cfg.search.strategy),
            "params": count_params(task.net),
            "arch_params": count_params(task.arch),
            "genotype": genotype.to_dict(),
            "op_counts": counts,
            "telemetry": task.telemetry(task.p_history[-1]),
            "final_val_acc": last.get("val_acc"),
            "final_train_acc": last.get("train_acc"),
            **({"classes": list(self.data.classes)} if self.data.classes else {}),
            **({"select_from": str(self.cfg.search.select_from)} if self.source is not None else {}),
            **task.strategy.finish(run, log),
            **truth,
        }


    def tensorboard_epoch(self, writer, task: SearchTask, epoch: int) -> None:
        sp = task.space
        writer.add_figure("P", viz.probs_figure(task.p_history[-1:], 1, sp.primitives, epoch, sp.cell_types, sp.topology), epoch)

    def tensorboard_end(self, writer, task: SearchTask, run: RunDir, epochs: int) -> None:
        from PIL import Image

        for cell in task.space.cell_types:  # the derived cells, as drawn in the run directory
            image = np.asarray(Image.open(run.file(f"{cell}.png")).convert("RGB"))
            writer.add_image(f"cells/{cell}", image, epochs, dataformats="HWC")
        writer.add_text("genotype", task.genotype().to_json().replace("\n", "  \n"), epochs)


def run_search(cfg: SearchRunConfig, out: Path, force: bool = False, resume: bool = False, log=print) -> dict | None:
    """Search, derive, write the run directory. Returns the summary (None in all but the first
    process under torchrun)."""
    return run_job(SearchJob(cfg), out, force, resume, log)
