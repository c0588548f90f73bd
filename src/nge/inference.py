"""The trained network of an `nge train` run, ready for inference: `load` rebuilds it from
`model.pt` in eval mode, without its auxiliary head or drop-path, as a module returning logits only,
with its class names and its test-time `Preprocess`. `nge export` and `nge predict` start here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nge.config import EvalNetConfig, to_dict
from nge.data.preprocess import ImageInput, Preprocess
from nge.engine import load_checkpoint
from nge.errors import NGEError
from nge.evalnet import build_network
from nge.space import Genotype
from nge.spaces import genotype_from_dict
from nge.spaces.nb201 import Nb201Genotype

MODEL_FILE = "model.pt"


class Classifier(nn.Module):
    """A trained evaluation network: images in (a batch from `preprocess`), logits out.

    Attributes: `classes` (names in label order), `preprocess` (path or PIL image -> batch),
    `genotype`, `config` (the training run's configuration), `path` (its model.pt)."""

    def __init__(self, net: nn.Module, classes: tuple[str, ...], preprocess: Preprocess, genotype: Genotype | Nb201Genotype,
                 config: dict, path: Path):
        super().__init__()
        self.net = net
        self.classes, self.preprocess, self.genotype, self.config, self.path = classes, preprocess, genotype, config, path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]

    @torch.no_grad()
    def predict(self, images: ImageInput | list[ImageInput], top: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, the `top` most probable (class name, probability), most probable first."""
        probs = self(self.preprocess(images)).float().softmax(1)
        p, k = probs.topk(min(top, len(self.classes)), dim=1)
        return [[(self.classes[j], float(q)) for q, j in zip(pi, ki, strict=True)] for pi, ki in zip(p, k, strict=True)]

    def metadata(self) -> dict[str, Any]:
        """What exported files carry: class names, preprocessing, genotype."""
        return {"classes": list(self.classes), "preprocess": self.preprocess.to_dict(), "genotype": self.genotype.to_dict()}


def model_file(run: str | Path) -> Path:
    """`run`'s model.pt: a training run directory or the file itself; anything else is a one-line error."""
    path = Path(run).expanduser()
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        config = path / "config.yaml"
        if (path / "probs.jsonl").is_file() or (config.is_file() and "\nsearch:" in "\n" + config.read_text()):
            raise NGEError(f"{path} is a search run: no trained weights; train it first: nge train --genotype {path}")
        if (path / "checkpoint.pt").is_file():
            raise NGEError(f"{path} has no {MODEL_FILE}: its training has not finished (continue it with nge train "
                           f"--resume --out {path} ...)")
        raise NGEError(f"{path} holds no {MODEL_FILE}; give an nge train run directory or its {MODEL_FILE}")
    if not path.is_file():
        raise NGEError(f"{path} does not exist; give an nge train run directory or its {MODEL_FILE}")
    return path


def read_model(run: str | Path) -> tuple[dict, Path]:
    """The checkpoint of `run` (see `model_file`), refused in one line unless it is a classification
    network with what inference needs (written by nge 0.1 or later)."""
    path = model_file(run)
    ckpt = load_checkpoint(path)
    if "backbone" in ckpt or "genotype" not in ckpt:
        raise NGEError(f"{path} is not an nge train model (a segmentation or search checkpoint?)")
    if "preprocess" not in ckpt or "classes" not in ckpt:
        raise NGEError(f"{path} was written by an older nge and lacks what inference needs (class names, input size, "
                       "normalisation); train it again with this version")
    return ckpt, path


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _keys(keys: list[str], shown: int = 4) -> str:
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _misfit(want: dict, got: dict) -> str:
    """Why the state dict `got` does not load into a network whose own is `want`: its missing and unexpected
    keys and its tensors of another shape (a few of each, in one line); "" where it fits."""
    missing, unexpected = [k for k in want if k not in got], [k for k in got if k not in want]
    shapes = [f"{k} {tuple(got[k].shape)} for {tuple(want[k].shape)}" for k in want
              if k in got and hasattr(got[k], "shape") and got[k].shape != want[k].shape]
    parts = [f"missing {_keys(missing)}" if missing else "", f"unexpected {_keys(unexpected)}" if unexpected else "",
             f"other shapes: {_keys(shapes, 2)}" if shapes else ""]
    return _shorten("; ".join(p for p in parts if p))


def load(run: str | Path) -> Classifier:
    """The trained network of a training run directory or its model.pt, on the CPU in eval mode."""
    ckpt, path = read_model(run)
    cfg = ckpt.get("config", {})
    genotype = genotype_from_dict(ckpt["genotype"])
    pre = Preprocess.from_dict(ckpt["preprocess"])
    classes = tuple(str(c) for c in ckpt["classes"])
    if len(classes) != int(ckpt["num_classes"]) or pre.channels != int(ckpt["in_channels"]):
        raise NGEError(f"{path} is inconsistent: {len(classes)} class names for {ckpt['num_classes']} classes, "
                       f"preprocessing for {pre.channels} channels and a network for {ckpt['in_channels']}")
    m = EvalNetConfig(**{**to_dict(EvalNetConfig()), **cfg.get("model", {})})
    with torch.random.fork_rng(devices=[]):  # the initial weights, overwritten below, leave the caller's RNG alone
        net = build_network(m, genotype, pre.channels, len(classes), imagenet=cfg.get("data", {}).get("name") == "imagenet")
    net.auxiliary_head = None  # trained weights of it are dropped below: inference never runs it
    state = {k: v for k, v in ckpt["task"]["net"].items() if not k.startswith("auxiliary_head.")}
    if why := _misfit(net.state_dict(), state):
        raise NGEError(f"{path} does not fit its own network: {why}")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:  # what _misfit does not see; torch's first line is only a header
        lines = [x.strip() for x in str(e).strip().splitlines()[1:] if x.strip()] or [str(e).strip()]
        raise NGEError(f"{path} does not fit its own network: {_shorten('; '.join(lines))}") from None
    net.set_drop_path(0.0)
    return Classifier(net, classes, pre, genotype, cfg, path).eval()
