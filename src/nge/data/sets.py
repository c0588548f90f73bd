"""In-memory image classification sets: readers for the standard on-disk formats (idx for the
MNIST family, CIFAR's python pickles), synthetic sets, and the train/val split.

Readers never download and never run code from a file: CIFAR pickles go through an unpickler
that admits only the plain types the format uses.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nge.errors import NGEError

FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"


@dataclass
class ImageSet:
    """uint8 images (N, C, H, W) and int64 labels (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, idx: torch.Tensor) -> ImageSet:
        return ImageSet(self.x[idx], self.y[idx])


@dataclass
class Dataset:
    name: str
    train: ImageSet
    test: ImageSet
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()  # class names, where the set has them (data.name=folder)

    @property
    def in_channels(self) -> int:
        return self.train.x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.x.shape[2]


# ---------------------------------------------------------------------------- idx (MNIST family)

_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (optionally gzipped). Rejects wrong magic, truncation and trailing bytes."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise NGEError(f"cannot read idx file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or not 1 <= raw[3] <= 4:
        raise NGEError(f"{path} is not an idx file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise NGEError(f"{path} is truncated (header cut short)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    n = math.prod(shape)
    if len(raw) - header != n:
        raise NGEError(f"{path} holds {len(raw) - header} data bytes, its header promises {n} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise NGEError(f"missing {stem}.gz in {root}")


def fashion_mnist_files(root: str | Path | None) -> dict[str, tuple[Path, Path]]:
    """The (images, labels) idx files of each split; a missing folder or file is a one-line NGEError."""
    root = Path(root or FASHION_MNIST_DEFAULT_ROOT)
    if not root.is_dir():
        raise NGEError(
            f"Fashion-MNIST not found at {root}: install Debian's package dataset-fashion-mnist "
            "or set data.root=DIR holding the four idx .gz files"
        )
    return {split: (_find(root, f"{prefix}-images-idx3-ubyte"), _find(root, f"{prefix}-labels-idx1-ubyte"))
            for split, prefix in (("train", "train"), ("test", "t10k"))}


def load_fashion_mnist(root: str | Path | None) -> Dataset:
    files = fashion_mnist_files(root)
    root = Path(root or FASHION_MNIST_DEFAULT_ROOT)
    parts = {}
    for split, (image_file, label_file) in files.items():
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise NGEError(f"Fashion-MNIST {split} files in {root} disagree: images {images.shape}, labels {labels.shape}")
        if labels.size and labels.max() >= 10:
            raise NGEError(f"Fashion-MNIST {split} labels in {root} exceed 9")
        parts[split] = ImageSet(
            torch.from_numpy(images.copy()).unsqueeze(1),
            torch.from_numpy(labels.astype(np.int64)),
        )
    return Dataset("fashion_mnist", parts["train"], parts["test"], 10, (0.2860,), (0.3530,))


# ---------------------------------------------------------------------------- CIFAR (python pickles)

_PICKLE_ALLOWED = {  # what numpy arrays in a protocol-2 pickle need, nothing that can run code
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _PlainUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise NGEError(f"missing CIFAR batch file {path}") from None
    except Exception as e:  # any unpickling failure: truncated, corrupt or hostile
        raise NGEError(f"{path} is not a valid CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise NGEError(f"{path} is not a valid CIFAR batch (not a dict)")
    d = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    data, labels = d.get("data"), d.get(label_key.decode())
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise NGEError(f"{path} is not a valid CIFAR batch ('data' must be a uint8 array of N x 3072)")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise NGEError(f"{path} is not a valid CIFAR batch (bad '{label_key.decode()}')") from None
    if labels.shape != (data.shape[0],):
        raise NGEError(f"{path} is not a valid CIFAR batch ({len(data)} images, labels shape {labels.shape})")
    return data.reshape(-1, 3, 32, 32), labels


def cifar_files(root: str | Path | None, num_classes: int) -> dict[str, list[Path]]:
    """The batch files of each split (not checked for existence; read_cifar_batch names a missing one);
    no data.root or a missing folder is a one-line NGEError."""
    name = f"cifar{num_classes}"
    folder = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    if root is None:
        raise NGEError(f"{name} needs data.root=DIR (the {folder} directory or its parent)")
    root = Path(root)
    if (root / folder).is_dir():
        root = root / folder
    if not root.is_dir():
        raise NGEError(f"{name} data directory {root} does not exist")
    if num_classes == 10:
        return {"train": [root / f"data_batch_{i}" for i in range(1, 6)], "test": [root / "test_batch"]}
    return {"train": [root / "train"], "test": [root / "test"]}


def load_cifar(root: str | Path | None, num_classes: int) -> Dataset:
    name = f"cifar{num_classes}"
    files = cifar_files(root, num_classes)
    root = files["train"][0].parent
    key = b"labels" if num_classes == 10 else b"fine_labels"

    def read(files: list[Path]) -> ImageSet:
        xs, ys = zip(*(read_cifar_batch(f, key) for f in files), strict=True)
        y = np.concatenate(ys)
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise NGEError(f"{name} labels in {root} fall outside 0..{num_classes - 1}")
        return ImageSet(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(y))

    if num_classes == 10:
        mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    else:
        mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    return Dataset(name, read(files["train"]), read(files["test"]), num_classes, mean, std)


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str = "labels") -> None:
    """Write a batch in the CIFAR python format (for tests and tiny fixtures)."""
    d = {b"batch_label": b"synthetic", label_key.encode(): labels.tolist(), b"data": images.reshape(len(images), -1)}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


# ---------------------------------------------------------------------------- synthetic

def make_synthetic(
    n_train: int = 512,
    n_test: int = 256,
    num_classes: int = 10,
    channels: int = 3,
    size: int = 32,
    seed: int = 0,
) -> Dataset:
    """A learnable toy data set: each class is a fixed random pattern plus noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, channels, size, size, generator=g) * 255

    def draw(n: int) -> ImageSet:
        y = torch.randint(0, num_classes, (n,), generator=g)
        noise = torch.randn(n, channels, size, size, generator=g) * 60
        x = (templates[y] + noise).clamp(0, 255).to(torch.uint8)
        return ImageSet(x, y)

    return Dataset("synthetic", draw(n_train), draw(n_test), num_classes, (0.5,) * channels, (0.3,) * channels)


# CIFAR-100's fine labels, sorted (its meta file's order)
_CIFAR100 = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
        camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
        dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard
        lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear
        pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark
        shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone
        television tiger tractor train trolleybus tulip turtle wardrobe whale willow_tree wolf woman worm"""
# class names in label order (Fashion-MNIST's README, CIFAR's meta files)
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "cifar100": tuple(_CIFAR100.split()),
}


def default_classes(name: str, num_classes: int) -> tuple[str, ...]:
    """The class names of a set without its own (synthetic: "0", "1", ...)."""
    return CLASS_NAMES.get(name, tuple(str(k) for k in range(num_classes)))


IMAGENET_SIZE = 224  # data.image_size=null with data.name=imagenet
MIN_IMAGE_SIZE = 8  # the least data.image_size, given or inferred from a folder set's images


def load_dataset(name: str, root: str | None, synthetic: dict | None = None) -> Dataset:
    if name == "fashion_mnist":
        return load_fashion_mnist(root)
    if name == "cifar10":
        return load_cifar(root, 10)
    if name == "cifar100":
        return load_cifar(root, 100)
    if name == "synthetic":
        return make_synthetic(**(synthetic or {}))
    raise NGEError(f"unknown data set '{name}' (known: fashion_mnist, cifar10, cifar100, synthetic)")


def limit_indices(n: int, limit: int | None, seed: int, skip: torch.Tensor | None = None) -> torch.Tensor:
    """The training images `data.limit` keeps, in the seed's order: the first `limit` of the seeded
    permutation of all `n`, passing over the indices in `skip` (a training's data.val images).
    Searches and trainings of one seed keep the same images, and a smaller limit keeps a prefix."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if skip is not None and len(skip):
        perm = perm[~torch.isin(perm, skip)]
    return perm if limit is None else perm[:limit]


def split_train_val(train: ImageSet, train_portion: float, seed: int, limit: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Carve a validation split out of the training set (seeded): `limit_indices`'s images, the
    first `train_portion` of them for training."""
    perm = limit_indices(len(train), limit, seed)
    n_train = int(round(len(perm) * train_portion))
    if n_train < 1 or n_train >= len(perm):
        raise NGEError(f"train/val split of {len(perm)} images with train_portion={train_portion} leaves a split empty")
    return train.subset(perm[:n_train]), train.subset(perm[n_train:])


def describe(ds: Dataset) -> str:
    shape = f"{ds.in_channels}x{ds.image_size}x{ds.image_size}"
    names = f" ({class_names(ds.classes)})" if ds.classes else ""
    return f"{ds.name}: {len(ds.train)} train / {len(ds.test)} test, {shape}, {ds.num_classes} classes{names}"


def class_names(classes: Sequence[str], most: int = 20) -> str:
    """Class names for a log line: all of them, or the first `most` and how many more."""
    more = f", ... ({len(classes) - most} more)" if len(classes) > most else ""
    return ", ".join(classes[:most]) + more
