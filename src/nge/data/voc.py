"""PASCAL VOC 2012 segmentation (`JPEGImages/`, `SegmentationClass/`, `ImageSets/Segmentation/`),
optionally with the SBD augmentation (`SegmentationClassAug/`, `train_aug.txt`): the class list and
colours, the data set and its loader. Bad files raise a one-line NGEError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from nge.data.loader import ImageLoader
from nge.data.transforms import MEAN_RGB_UINT8, open_image, sample_rng, to_tensor
from nge.errors import NGEError

IGNORE_INDEX = 255

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
VOC_NUM_CLASSES = len(VOC_CLASSES)


def _voc_palette() -> list[int]:
    """The standard VOC colour map: the bits of the index interleaved into R, G, B from the top bit down."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


VOC_PALETTE = _voc_palette()
VOC_COLOURS = np.array(VOC_PALETTE, dtype=np.uint8).reshape(256, 3)


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class-index mask (H, W) -> (H, W, 3) uint8 image in the VOC colours (255, ignore, is cream)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype.kind not in "iu":
        raise NGEError(f"colorize needs a 2-D integer mask, got shape {mask.shape} dtype {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise NGEError(f"colorize needs mask values in 0..255, got {mask.min()}..{mask.max()}")
    return VOC_COLOURS[mask.astype(np.intp)]


def read_mask(path: Path) -> np.ndarray:
    """A VOC mask as class indices: palette ("P") or grayscale ("L") pixel values, never via RGB."""
    img = open_image(path, mode=None)
    if img.mode not in ("P", "L"):
        raise NGEError(f"mask {path} is a {img.mode} image; VOC masks are palette (P) or grayscale (L) PNGs of class indices")
    mask = np.array(img, dtype=np.uint8)
    bad = (mask >= VOC_NUM_CLASSES) & (mask != IGNORE_INDEX)
    if bad.any():
        raise NGEError(f"mask {path} holds value {int(mask[bad][0])}; VOC masks hold 0..{VOC_NUM_CLASSES - 1} or 255")
    return mask


class VOCSegmentation(Dataset):
    """PASCAL VOC 2012 segmentation: ids from `ImageSets/Segmentation/<split>.txt`, images from
    `JPEGImages/<id>.jpg`, masks from `SegmentationClass/<id>.png`.

    `aug=True` changes only the train split: ids from `train_aug.txt`, masks from
    `SegmentationClassAug/<id>.png` (SBD). Items: (float (3, crop, crop) normalised with the ImageNet
    mean/std, int64 (crop, crop) mask with 255 = ignore, padding included).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        train: bool,
        crop: int = 513,
        scale: tuple[float, float] = (0.5, 2.0),
        aug: bool = False,
        seed: int = 0,
    ):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise NGEError(f"VOC root {root} does not exist (expected the VOC2012 folder holding JPEGImages/)")
        if crop < 1:
            raise NGEError(f"VOC crop must be positive, got {crop}")
        if not 0 < scale[0] <= scale[1]:
            raise NGEError(f"VOC scale range {tuple(scale)} must satisfy 0 < low <= high")
        use_aug = aug and split == "train"
        list_file = root / "ImageSets" / "Segmentation" / ("train_aug.txt" if use_aug else f"{split}.txt")
        mask_dir = root / ("SegmentationClassAug" if use_aug else "SegmentationClass")
        image_dir = root / "JPEGImages"
        for d in (image_dir, mask_dir):
            if not d.is_dir():
                raise NGEError(f"missing folder {d}")
        if not list_file.is_file():
            raise NGEError(f"missing id list {list_file}")
        ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise NGEError(f"id list {list_file} is empty")
        self.samples: list[tuple[Path, Path]] = []
        for i in ids:
            image, mask = image_dir / f"{i}.jpg", mask_dir / f"{i}.png"
            for p in (image, mask):
                if not p.is_file():
                    raise NGEError(f"missing file {p} (listed in {list_file})")
            self.samples.append((image, mask))
        self.ids = ids
        self.classes = list(VOC_CLASSES)
        self.root, self.split, self.train, self.aug = root, split, train, use_aug
        self.crop, self.scale, self.seed = crop, (float(scale[0]), float(scale[1])), seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _pad(self, img: Image.Image, mask: Image.Image) -> tuple[Image.Image, Image.Image]:
        """Pad bottom/right to at least crop x crop: image with the mean colour, mask with 255."""
        w, h = img.size
        pw, ph = max(w, self.crop), max(h, self.crop)
        if (pw, ph) == (w, h):
            return img, mask
        big = Image.new("RGB", (pw, ph), MEAN_RGB_UINT8)
        big.paste(img, (0, 0))
        big_mask = Image.new("L", (pw, ph), IGNORE_INDEX)
        big_mask.paste(mask, (0, 0))
        return big, big_mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.samples[index]
        img = open_image(image_path)
        mask = Image.fromarray(read_mask(mask_path))
        if mask.size != img.size:
            mw, mh = mask.size
            raise NGEError(f"mask {mask_path} is {mw}x{mh}, its image {image_path} is {img.width}x{img.height}")
        c = self.crop
        if self.train:
            rng = sample_rng(self.seed, self.epoch, index)
            s = rng.uniform(*self.scale)
            size = (max(1, int(round(img.width * s))), max(1, int(round(img.height * s))))
            img, mask = img.resize(size, Image.Resampling.BILINEAR), mask.resize(size, Image.Resampling.NEAREST)
            img, mask = self._pad(img, mask)
            top = int(rng.integers(0, img.height - c + 1))
            left = int(rng.integers(0, img.width - c + 1))
            box = (left, top, left + c, top + c)
            img, mask = img.crop(box), mask.crop(box)
            if rng.random() < 0.5:
                img, mask = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            if img.width > c or img.height > c:
                raise NGEError(
                    f"image {image_path} is {img.width}x{img.height}, larger than data.crop={c}; raise data.crop"
                )
            img, mask = self._pad(img, mask)
        return to_tensor(img), torch.from_numpy(np.array(mask, dtype=np.int64))


def voc_loader(
    root: str | Path,
    split: str,
    train: bool,
    batch_size: int,
    workers: int,
    seed: int,
    crop: int = 513,
    aug: bool = False,
    scale: tuple[float, float] = (0.5, 2.0),
    drop_last: bool | None = None,
    limit: int | None = None,
) -> ImageLoader:
    """VOC segmentation batches (x (B, 3, crop, crop), mask int64 (B, crop, crop)); shuffled when `train`."""
    ds = VOCSegmentation(root, split, train, crop=crop, scale=scale, aug=aug, seed=seed)
    return ImageLoader(ds, batch_size, workers, seed, train, drop_last, VOC_NUM_CLASSES, VOC_CLASSES, limit)
