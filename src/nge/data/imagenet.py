"""ImageNet-style classification in the ImageFolder layout (`root/{train,val}/<class>/*.JPEG`), decoded
and augmented in DataLoader workers. Bad files raise a one-line NGEError naming the file; the layout
is checked by `folder.scan_image_folder`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nge.data.folder import scan_image_folder
from nge.data.loader import FileSamples, ImageLoader
from nge.data.transforms import open_image, sample_rng, to_tensor, train_transform, val_transform
from nge.errors import NGEError


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
