"""Writers of tiny synthetic data sets in the real on-disk layouts (ImageFolder, VOC), for tests,
smoke runs and `nge synth`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from nge.data.voc import IGNORE_INDEX, VOC_COLOURS, VOC_NUM_CLASSES, VOC_PALETTE


def _class_colours(n: int) -> np.ndarray:
    """n well-separated RGB colours (evenly spaced hues, full saturation)."""
    hsv = np.zeros((1, n, 3), np.uint8)
    hsv[0, :, 0] = (np.arange(n) * 256 // max(n, 1)).astype(np.uint8)
    hsv[0, :, 1:] = 220
    return np.asarray(Image.frombytes("HSV", (n, 1), hsv.tobytes()).convert("RGB")).reshape(n, 3).astype(np.int16)


def _noisy(colour: np.ndarray, h: int, w: int, rng: np.random.Generator, sd: float = 20.0) -> np.ndarray:
    return np.clip(colour[None, None, :] + rng.normal(0, sd, (h, w, 3)), 0, 255).astype(np.uint8)


def write_synthetic_imagefolder(
    root: str | Path,
    classes: int = 3,
    per_class_train: int = 4,
    per_class_val: int = 2,
    size: tuple[int, int] = (40, 32),
    seed: int = 0,
    test_split: str = "val",
    names: list[str] | None = None,
    png: bool = False,
    gray: bool = False,
) -> Path:
    """A tiny ImageFolder-layout set (`train/` and `test_split/`): class c is its own colour with a
    brighter stripe, plus noise.

    Class folders are `names` or named like ImageNet's (`n00000000`, ...); files are `.JPEG` (or
    `.png`), RGB (or grayscale); sizes (width, height) vary around `size`, so images are non-square.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    colours = _class_colours(classes)
    names = names or [f"n{c:08d}" for c in range(classes)]
    w0, h0 = size
    for split, n in (("train", per_class_train), (test_split, per_class_val)):
        for c in range(classes):
            folder = root / split / names[c]
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                w = max(8, w0 + int(rng.integers(-w0 // 4, w0 // 4 + 1)))
                h = max(8, h0 + int(rng.integers(-h0 // 4, h0 // 4 + 1)))
                if w == h:
                    w += 1
                px = _noisy(colours[c], h, w, rng)
                stripe = (c * w) // max(classes, 1)  # a class-dependent vertical stripe
                px[:, stripe : stripe + max(1, w // 8)] = 255
                img = Image.fromarray(px).convert("L" if gray else "RGB")
                if png:
                    img.save(folder / f"{split}_{c}_{k:04d}.png")
                else:
                    img.save(folder / f"{split}_{c}_{k:04d}.JPEG", quality=90)
    return root


def write_synthetic_folder(root: str | Path, seed: int = 0, gray: bool = False) -> Path:
    """The `data.name=folder` example of `nge synth folder`: 3 classes, 16 train and 4 test PNGs
    each (class c is hue c/3: red, green, blue), about 28x20 pixels."""
    return write_synthetic_imagefolder(root, 3, 16, 4, (28, 20), seed, test_split="test",
                                       names=["red", "green", "blue"], png=True, gray=gray)


def write_synthetic_voc(
    root: str | Path,
    n_train: int = 4,
    n_val: int = 2,
    size: tuple[int, int] = (48, 40),
    seed: int = 0,
    aug: bool = False,
) -> Path:
    """A tiny VOC 2012 segmentation layout: rectangles of random classes on a background.

    Masks are palette PNGs (VOC_PALETTE) with a 1-pixel 255 border around each object, as in real
    VOC. With `aug`, SegmentationClassAug holds grayscale PNGs for train_aug.txt: the train ids plus
    extra ids (with their own JPEGs), as SBD adds. Sizes (width, height) vary around `size` by at most 8.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True, exist_ok=True)
    if aug:
        (root / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    colours = VOC_COLOURS[:VOC_NUM_CLASSES].astype(np.int16)
    n_extra = n_train // 2 + 1 if aug else 0
    ids = [f"2007_{i:06d}" for i in range(n_train + n_val + n_extra)]
    train_ids, val_ids, extra_ids = ids[:n_train], ids[n_train : n_train + n_val], ids[n_train + n_val :]
    w0, h0 = size
    for i in ids:
        w = max(12, w0 + int(rng.integers(-8, 9)))
        h = max(12, h0 + int(rng.integers(-8, 9)))
        px = _noisy(np.array([90, 110, 80], np.int16), h, w, rng, sd=12)
        mask = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cls = int(rng.integers(1, VOC_NUM_CLASSES))
            bw, bh = int(rng.integers(w // 5, w // 2 + 1)), int(rng.integers(h // 5, h // 2 + 1))
            x0, y0 = int(rng.integers(1, w - bw)), int(rng.integers(1, h - bh))
            mask[y0 - 1 : y0 + bh + 1, x0 - 1 : x0 + bw + 1] = IGNORE_INDEX  # the border, then the object inside
            mask[y0 : y0 + bh, x0 : x0 + bw] = cls
            px[y0 : y0 + bh, x0 : x0 + bw] = _noisy(colours[cls], bh, bw, rng, sd=12)
        Image.fromarray(px).save(root / "JPEGImages" / f"{i}.jpg", quality=90)
        if i not in extra_ids:
            p = Image.fromarray(mask)
            p.putpalette(VOC_PALETTE)  # L -> P, pixel values kept
            p.save(root / "SegmentationClass" / f"{i}.png")
        if aug and i not in val_ids:
            Image.fromarray(mask).save(root / "SegmentationClassAug" / f"{i}.png")
    lists = root / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("".join(f"{i}\n" for i in train_ids))
    (lists / "val.txt").write_text("".join(f"{i}\n" for i in val_ids))
    if aug:
        (lists / "train_aug.txt").write_text("".join(f"{i}\n" for i in train_ids + extra_ids))
    return root
