"""ImageNet-style classification in the ImageFolder layout (`root/{train,val}/<class>/*.JPEG`), decoded
and augmented in DataLoader workers. Bad files raise a one-line NGEError naming the file.
`scan_image_folder` checks the layout for `data.name=folder` too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nge.data.loader import FileSamples, ImageLoader
from nge.data.transforms import IMAGE_EXTENSIONS, open_image, sample_rng, to_tensor, train_transform, val_transform
from nge.errors import NGEError


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


class ImageFolderSet(FileSamples):
    """`root/<split>/<class>/*.{JPEG,jpg,png}`; the classes are the sorted folder names of `root/train`.

    Items: (float (3, size, size) normalised with the ImageNet mean/std, int label).
    """

    def __init__(self, root: str | Path, split: str, train: bool, size: int = 224, resize: int = 256, seed: int = 0):
        if size < 1 or resize < size:
            raise NGEError(f"image size {size} and resize {resize} need 1 <= size <= resize")
        self.classes, samples = scan_image_folder(root, split)
        super().__init__(samples, seed)
        self.root, self.split, self.train = Path(root).expanduser(), split, train
        self.size, self.resize = size, resize

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        img = open_image(path)
        if self.train:
            img = train_transform(img, self.size, sample_rng(self.seed, self.epoch, index))
        else:
            img = val_transform(img, self.size, self.resize)
        return to_tensor(img), label


def imagenet_loader(
    root: str | Path,
    split: str,
    train: bool,
    batch_size: int,
    workers: int,
    seed: int,
    size: int = 224,
    resize: int = 256,
    drop_last: bool | None = None,
    limit: int | None = None,
    shard: tuple[int, int] = (0, 1),
) -> ImageLoader:
    """ImageFolder-layout classification batches (x (B, 3, size, size), y int64 (B,)); shuffled when `train`.

    `drop_last=None` drops the last partial batch when training only.
    """
    ds = ImageFolderSet(root, split, train, size=size, resize=resize, seed=seed)
    return ImageLoader(ds, batch_size, workers, seed, train, drop_last, len(ds.classes), ds.classes, limit, shard)
