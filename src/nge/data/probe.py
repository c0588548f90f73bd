"""What nge can tell about a data set without decoding it: its (channels, size, classes), and
whether its files are where the readers will look (for every data set a run may read)."""

from __future__ import annotations

from nge.data.folder import scan_folder, scan_image_folder
from nge.data.sets import IMAGENET_SIZE, cifar_files, fashion_mnist_files
from nge.errors import NGEError

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


def check_files(name: str, root: str | None, test: bool) -> None:
    """The one-line NGEError the reader would raise for a missing folder or file, without reading
    any. Every split the reader loads is checked; `test` adds a folder set's `test/`, which only
    training reads. Files that are there but broken are found only when they are read."""
    if name == "fashion_mnist":
        fashion_mnist_files(root)
    elif name in ("cifar10", "cifar100"):
        files = cifar_files(root, int(name[len("cifar"):]))
        for path in files["train"] + files["test"]:
            if not path.is_file():
                raise NGEError(f"missing CIFAR batch file {path}")
    elif name in ("folder", "imagenet"):
        scan_image_folder(root, "train")
        if test or name == "imagenet":
            scan_image_folder(root, "val" if name == "imagenet" else "test")
    elif name != "synthetic":
        raise NGEError(f"unknown data set '{name}'")
