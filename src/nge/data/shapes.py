"""A data set's (channels, size, classes) without decoding it, for every data set nge reads."""

from __future__ import annotations

from nge.data.folder import scan_folder
from nge.data.sets import IMAGENET_SIZE

_SHAPES = {"fashion_mnist": (1, 28, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100),
           "imagenet": (3, IMAGENET_SIZE, 1000)}


def input_shape(name: str, synthetic: dict | None = None, root: str | None = None, image_size: int | None = None,
                channels: int | None = None) -> tuple[int, int, int]:
    """(channels, size, classes) of a data set without decoding it (a folder set's class folders
    and image headers are read)."""
    if name == "synthetic":
        s = synthetic or {}
        return s.get("channels", 3), s.get("size", 32), s.get("num_classes", 10)
    if name == "folder":
        f = scan_folder(root, test=False, image_size=image_size, channels=channels)
        return f.channels, f.size, len(f.classes)
    c, size, k = _SHAPES[name]
    return c, image_size or size, k
