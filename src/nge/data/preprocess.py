"""A trained network's test-time preprocessing, as data: what `model.pt` and the exported files
carry, so that any image (a file or a PIL image) becomes the tensor the test loader would give.

    square  (fashion_mnist, cifar, synthetic, folder) grayscale or RGB, resized to a size x size
            square (`to_square`), then (x - 255 mean) / (255 std) as BatchLoader normalises a batch
    crop    (imagenet) RGB, shorter side resized to `resize`, centre crop `size` (`val_transform`),
            then (x / 255 - mean) / std as the ImageNet loader
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from nge.data.transforms import open_image, to_square, to_tensor, val_transform
from nge.errors import NGEError

ImageInput = str | Path | Image.Image


@dataclass(frozen=True)
class Preprocess:
    """Callable: an image path or PIL image (or a list of them) -> a float batch (N, channels, size, size)."""

    mode: str  # "square" or "crop"
    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None  # crop only: the shorter side before the centre crop

    def __post_init__(self) -> None:
        ok = (self.mode in ("square", "crop") and self.size >= 1 and self.channels >= 1
              and len(self.mean) == len(self.std) == self.channels and min(self.std) > 0
              and (self.mode == "square" or (self.channels == 3 and self.resize is not None and self.resize >= self.size)))
        if not ok:
            raise NGEError(f"invalid preprocessing {self.to_dict()}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {**d, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        try:
            return cls(str(d["mode"]), int(d["size"]), int(d["channels"]), tuple(float(v) for v in d["mean"]),
                       tuple(float(v) for v in d["std"]), None if d.get("resize") is None else int(d["resize"]))
        except (KeyError, TypeError, ValueError) as e:
            raise NGEError(f"invalid preprocessing {d!r} ({type(e).__name__}: {e})") from None

    def describe(self) -> str:
        how = (f"shorter side {self.resize}, centre crop {self.size}" if self.mode == "crop"
               else f"resized to {self.size}x{self.size}")
        return f"{'grayscale' if self.channels == 1 else 'RGB'}, {how}, mean {_fmt(self.mean)}, std {_fmt(self.std)}"

    def image(self, img: ImageInput) -> torch.Tensor:
        """One image -> float (channels, size, size)."""
        if self.channels not in (1, 3):  # e.g. a synthetic set of 2 channels: no image file has them
            raise NGEError(f"this network takes {self.channels}-channel input; images are grayscale or RGB")
        if not isinstance(img, Image.Image):
            img = open_image(Path(img), mode=None if self.mode == "square" else "RGB")
        if self.mode == "crop":
            return to_tensor(val_transform(img.convert("RGB"), self.size, self.resize), self.mean, self.std)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1) * 255  # BatchLoader's arithmetic, for the same floats
        std = torch.tensor(self.std).view(1, -1, 1, 1) * 255
        return ((to_square(img, self.channels, self.size)[None].float() - mean) / std)[0]

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        if not len(images):
            raise NGEError("no images to preprocess")
        return torch.stack([self.image(img) for img in images])


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
