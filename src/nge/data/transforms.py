"""Decoding images with Pillow and the DARTS ImageNet augmentation (RandomResizedCrop, flip,
ColorJitter) written with Pillow and numpy. A sample's random numbers come from
`np.random.default_rng([seed, epoch, index])`, so they never depend on the worker that decodes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from nge.errors import NGEError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MEAN_RGB_UINT8 = tuple(int(round(m * 255)) for m in IMAGENET_MEAN)  # (124, 116, 104): padding colour
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def one_line(text: object) -> str:
    return " ".join(str(text).split())


@contextmanager
def decoding(path: Path) -> Iterator[None]:
    """Any exception inside becomes a one-line NGEError naming `path`."""
    try:
        yield
    except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError...
        raise NGEError(f"cannot decode image {path}: {one_line(f'{type(e).__name__}: {e}')}") from None


def open_image(path: Path, mode: str | None = "RGB") -> Image.Image:
    """Decode an image fully (so truncation is caught here); `mode=None` keeps the file's mode."""
    with decoding(path), Image.open(path) as f:
        f.load()
        return f.convert(mode) if mode else f.copy()


def image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """An image's mode and (width, height), from its header only (no decoding)."""
    with decoding(path), Image.open(path) as f:
        return f.mode, f.size


def to_tensor(img: Image.Image, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD) -> torch.Tensor:
    """RGB image -> float (3, H, W) normalised with `mean` and `std` (default ImageNet's)."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return ((x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)).contiguous()


def to_square(img: Image.Image, channels: int, size: int) -> torch.Tensor:
    """An image as uint8 (channels, size, size): 16- and 32-bit grayscale keep their top 8 of 16 bits,
    then grayscale or RGB, resized (bilinear, antialiased when shrinking) to a square."""
    if img.mode == "I" or img.mode.startswith("I;16"):
        img = Image.fromarray(np.clip(np.asarray(img).astype(np.int64) >> 8, 0, 255).astype(np.uint8))
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.atleast_3d(np.asarray(img)).transpose(2, 0, 1).copy())


def random_resized_crop_params(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (top, left, h, w); 10 tries, then a centre crop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    img: Image.Image,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Image.Image:
    top, left, h, w = random_resized_crop_params(img.width, img.height, rng, scale, ratio)
    return img.crop((left, top, left + w, top + h)).resize((size, size), Image.Resampling.BILINEAR)


def adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    """torchvision's PIL adjust_hue: shift H of HSV by int(hue_factor * 255), wrapping around in uint8."""
    h, s, v = img.convert("HSV").split()
    shift = int(hue_factor * 255)  # truncates toward zero, as np.int8 does in torchvision
    np_h = ((np.asarray(h, dtype=np.int16) + shift) % 256).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(np_h), s, v)).convert("RGB")


def color_jitter(
    img: Image.Image,
    rng: np.random.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.2,
) -> Image.Image:
    """torchvision's ColorJitter on PIL images: the four adjustments in a random order.

    Brightness, contrast and saturation blend with black, the mean gray and the grayscale image
    (Pillow's ImageEnhance, which torchvision's PIL backend calls); hue shifts H in HSV.
    """
    order = rng.permutation(4)
    b = rng.uniform(max(0.0, 1 - brightness), 1 + brightness)
    c = rng.uniform(max(0.0, 1 - contrast), 1 + contrast)
    s = rng.uniform(max(0.0, 1 - saturation), 1 + saturation)
    hf = rng.uniform(-hue, hue)
    for k in order:
        if k == 0:
            img = ImageEnhance.Brightness(img).enhance(b)
        elif k == 1:
            img = ImageEnhance.Contrast(img).enhance(c)
        elif k == 2:
            img = ImageEnhance.Color(img).enhance(s)
        else:
            img = adjust_hue(img, hf)
    return img


def train_transform(img: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """DARTS ImageNet training: RandomResizedCrop(size), horizontal flip p=0.5, ColorJitter(0.4, 0.4, 0.4, 0.2)."""
    img = random_resized_crop(img, size, rng)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return color_jitter(img, rng)


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """torchvision Resize(size): the shorter side becomes `size`, the longer int(size * long / short)."""
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    return img.resize((new_w, new_h), Image.Resampling.BILINEAR)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision CenterCrop(size) for images at least `size` on both sides."""
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def val_transform(img: Image.Image, size: int, resize: int) -> Image.Image:
    """Resize the shorter side to `resize` (bilinear), then centre-crop `size`."""
    return center_crop(resize_shorter(img, resize), size)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])
