"""Your own images (`data.name=folder`): `root/train/<class>/*` and `root/test/<class>/*` (.jpeg,
.jpg, .png) of any size, grayscale or colour; classes are the sorted folder names of `train/`.

Every image is converted to `channels` (1 or 3) and resized to a square `size` x `size` (Pillow
bilinear, which filters over the whole source footprint when shrinking, so it is antialiased).
A set whose decoded images fit in MEMORY_LIMIT is decoded once into an in-memory `Dataset`,
normalised with its own per-channel mean and std, and runs exactly as CIFAR does. `nge train`
streams a larger set through DataLoader workers, normalised with ImageNet's mean and std and
augmented per image as BatchLoader augments a batch; `nge search` refuses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nge.data.batches import Augment, augment_batch
from nge.data.loader import FileSamples, ImageLoader
from nge.data.sets import MIN_IMAGE_SIZE, Dataset, ImageSet, limit_indices
from nge.data.transforms import IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, decoding, image_header, open_image, to_square
from nge.errors import NGEError

MEMORY_LIMIT = 512 * 2**20  # bytes of decoded uint8 images (train, and test for nge train) held in memory
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# a streamed set's normalisation: ImageNet's; for one channel the mean of its three
STREAM_NORM = {3: (IMAGENET_MEAN, IMAGENET_STD), 1: ((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,))}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def scan_image_folder(root: str | Path, split: str) -> tuple[list[str], list[tuple[Path, int]]]:
    """The classes (sorted folder names of `root/train`) and the sorted (file, label)
    samples of `root/<split>`, whose class folders must be the same; every class folder must hold
    images. Every failure is a one-line NGEError naming the path."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise NGEError(f"image folder data set root {root} does not exist")
    train_dir, split_dir = root / "train", root / split
    for d in (train_dir, split_dir):
        if not d.is_dir():
            raise NGEError(f"missing folder {d} (expected {root}/train/<class>/ and {root}/{split}/<class>/)")
    classes = _class_dirs(train_dir)
    if not classes:
        raise NGEError(f"no class folders in {train_dir}")
    if split_dir != train_dir:
        found = _class_dirs(split_dir)
        if found != classes:
            missing = sorted(set(classes) - set(found))
            extra = sorted(set(found) - set(classes))
            raise NGEError(f"class folders of {split_dir} differ from {train_dir}: missing {missing[:5]}, extra {extra[:5]}")
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = _images_in(split_dir / name)
        if not files:
            raise NGEError(f"class folder {split_dir / name} holds no .jpeg/.jpg/.png images")
        samples += [(f, label) for f in files]
    return classes, samples


@dataclass
class ImageFolder:
    """A scanned folder set: class names, (file, label) samples, and the channels and size its
    images are decoded to."""

    root: Path
    classes: list[str]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]  # empty unless scanned with test=True
    channels: int
    size: int

    def decoded_bytes(self, limit: int | None) -> int:
        n = len(self.train) if limit is None else min(limit, len(self.train))
        return (n + len(self.test)) * self.channels * self.size**2

    def fits(self, limit: int | None) -> bool:
        return self.decoded_bytes(limit) <= MEMORY_LIMIT


def scan_folder(root: str | Path, test: bool, image_size: int | None = None, channels: int | None = None) -> ImageFolder:
    """Check the layout (and `test/` when `test`) and settle channels and size without decoding:
    `channels=None` is 1 if every training image's mode is grayscale, else 3; `image_size=None` is the
    shorter side of the first training image (sorted class folders, then sorted file names), refused under
    MIN_IMAGE_SIZE as config refuses a given one."""
    root = Path(root).expanduser()
    classes, train = scan_image_folder(root, "train")
    if len(classes) < 2:
        raise NGEError(f"{root / 'train'} holds one class folder ({classes[0]}); a classifier needs at least 2")
    test_samples = scan_image_folder(root, "test")[1] if test else []
    if channels is None:
        channels = 1 if all(image_header(p)[0] in GRAYSCALE_MODES for p, _ in train) else 3
    if image_size is None:
        image_size = min(image_header(train[0][0])[1])
        if image_size < MIN_IMAGE_SIZE:
            raise NGEError(f"bad configuration: data.image_size must be >= {MIN_IMAGE_SIZE}, and left unset it is "
                           f"{image_size}, the shorter side of {train[0][0]}; set data.image_size={MIN_IMAGE_SIZE} or more")
    return ImageFolder(root, classes, train, test_samples, channels, image_size)


def decode(path: Path, channels: int, size: int) -> torch.Tensor:
    """One file as uint8 (channels, size, size) (`to_square`). A file Pillow cannot decode, convert or
    resize is a one-line NGEError naming it."""
    img = open_image(path, mode=None)
    with decoding(path):  # e.g. LAB converts to RGB but not to L
        return to_square(img, channels, size)


def _decode_all(samples: Sequence[tuple[Path, int]], channels: int, size: int) -> ImageSet:
    x = torch.empty((len(samples), channels, size, size), dtype=torch.uint8)
    for i, (path, _) in enumerate(samples):
        x[i] = decode(path, channels, size)
    return ImageSet(x, torch.tensor([label for _, label in samples], dtype=torch.int64))


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (in [0, 1] units) of uint8 images (N, C, H, W), in float64 chunks."""
    c = x.shape[1]
    total, squares = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for chunk in x.split(max(1, 2**22 // max(1, x[0].numel()))):
        chunk = chunk.double() / 255
        total += chunk.sum((0, 2, 3))
        squares += (chunk * chunk).sum((0, 2, 3))
    n = max(1, x.numel() // c)
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0).sqrt().clamp_min(1 / 255)  # a constant channel: no division by 0
    return tuple(mean.tolist()), tuple(std.tolist())


def load_folder(f: ImageFolder, limit: int | None, seed: int) -> Dataset:
    """Decode a folder set into memory: with `limit`, only the training images `split_train_val`
    would keep (the first `limit` of the same seeded permutation). Refuses a set over MEMORY_LIMIT."""
    if not f.fits(limit):
        c, s, n = f.channels, f.size, len(f.train) if limit is None else min(limit, len(f.train))
        most = max(0, MEMORY_LIMIT // (c * s * s) - len(f.test))
        raise NGEError(f"{f.root}: {n + len(f.test)} images decoded at {c}x{s}x{s} take "
                       f"{f.decoded_bytes(limit) / 2**20:.0f} MB, over the {MEMORY_LIMIT // 2**20} MB held in memory; "
                       f"set data.limit={most} (or less) or a smaller data.image_size")
    keep = f.train
    if limit is not None and limit < len(f.train):
        keep = [f.train[i] for i in sorted(limit_indices(len(f.train), limit, seed).tolist())]
    train = _decode_all(keep, f.channels, f.size)
    mean, std = channel_stats(train.x)
    return Dataset("folder", train, _decode_all(f.test, f.channels, f.size), len(f.classes), mean, std,
                   tuple(f.classes))


class FolderStream(FileSamples):
    """Samples decoded in DataLoader workers: (float (C, size, size), label), normalised with
    STREAM_NORM and augmented as BatchLoader augments a batch, with random numbers from
    (seed, epoch, index) only."""

    def __init__(self, samples: list[tuple[Path, int]], channels: int, size: int, augment: Augment, seed: int):
        super().__init__(samples, seed)
        self.channels, self.size, self.augment = channels, size, augment
        mean, std = STREAM_NORM[channels]
        self.mean = torch.tensor(mean).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std).view(1, -1, 1, 1) * 255

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
        g = torch.Generator().manual_seed(int(state) % 2**63)
        x = decode(path, self.channels, self.size)[None]
        return augment_batch(x, self.augment, self.mean, self.std, g)[0], label


def folder_loader(f: ImageFolder, split: str, augment: Augment, batch_size: int, workers: int, seed: int,
                  limit: int | None = None, shard: tuple[int, int] = (0, 1)) -> ImageLoader:
    """Streamed batches of `f.train` (shuffled, last partial batch dropped) or `f.test`."""
    train = split == "train"
    ds = FolderStream(f.train if train else f.test, f.channels, f.size, augment, seed)
    return ImageLoader(ds, batch_size, workers, seed, train, None, len(f.classes), f.classes, limit, shard)

