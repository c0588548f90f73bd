"""Large-image data sets in their standard on-disk layouts, decoded with Pillow in DataLoader workers.

- ImageNet-style classification (ImageFolder layout: `root/{train,val}/<class>/*.JPEG`) with the
  DARTS ImageNet augmentation (RandomResizedCrop, flip, ColorJitter) written with Pillow and numpy.
- PASCAL VOC 2012 segmentation (`JPEGImages/`, `SegmentationClass/`, `ImageSets/Segmentation/`),
  optionally with the SBD augmentation (`SegmentationClassAug/`, `train_aug.txt`).
- Writers of tiny synthetic data sets in exactly those layouts, for tests and smoke runs.

Augmentation draws from `np.random.default_rng([seed, epoch, index])`, so a sample depends only on
(seed, epoch, index), never on the worker that decodes it or on the number of workers. Bad input
raises `NGEError` with a one-line message naming the file; the loaders re-raise errors from worker
processes as that same one-line message.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.utils.data import DataLoader, Dataset

from nge.errors import NGEError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MEAN_RGB_UINT8 = tuple(int(round(m * 255)) for m in IMAGENET_MEAN)  # (124, 116, 104): padding colour
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
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
_PALETTE_ARRAY = np.array(VOC_PALETTE, dtype=np.uint8).reshape(256, 3)


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class-index mask (H, W) -> (H, W, 3) uint8 image in the VOC colours (255, ignore, is cream)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype.kind not in "iu":
        raise NGEError(f"colorize needs a 2-D integer mask, got shape {mask.shape} dtype {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise NGEError(f"colorize needs mask values in 0..255, got {mask.min()}..{mask.max()}")
    return _PALETTE_ARRAY[mask.astype(np.intp)]


# ---------------------------------------------------------------------------- decoding and transforms


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def open_image(path: Path, mode: str | None = "RGB") -> Image.Image:
    """Decode an image fully (so truncation is caught here); `mode=None` keeps the file's mode."""
    try:
        with Image.open(path) as f:
            f.load()
            return f.convert(mode) if mode else f.copy()
    except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError...
        raise NGEError(f"cannot decode image {path}: {_one_line(f'{type(e).__name__}: {e}')}") from None


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB image -> float (3, H, W) normalised with the ImageNet mean and std."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).contiguous()


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


def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


# ---------------------------------------------------------------------------- ImageNet (ImageFolder layout)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


class ImageFolderSet(Dataset):
    """`root/<split>/<class>/*.{JPEG,jpg,png}`; the classes are the sorted folder names of `root/train`.

    Items: (float (3, size, size) normalised with the ImageNet mean/std, int label).
    """

    def __init__(self, root: str | Path, split: str, train: bool, size: int = 224, resize: int = 256, seed: int = 0):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise NGEError(f"image folder data set root {root} does not exist")
        if size < 1 or resize < size:
            raise NGEError(f"image size {size} and resize {resize} need 1 <= size <= resize")
        train_dir, split_dir = root / "train", root / split
        for d in (train_dir, split_dir):
            if not d.is_dir():
                raise NGEError(f"missing folder {d} (expected {root}/train/<class>/ and {root}/val/<class>/)")
        self.classes = _class_dirs(train_dir)
        if not self.classes:
            raise NGEError(f"no class folders in {train_dir}")
        if split_dir != train_dir:
            found = _class_dirs(split_dir)
            if found != self.classes:
                missing = sorted(set(self.classes) - set(found))
                extra = sorted(set(found) - set(self.classes))
                raise NGEError(
                    f"class folders of {split_dir} differ from {train_dir}: missing {missing[:5]}, extra {extra[:5]}"
                )
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            files = _images_in(split_dir / name)
            if not files:
                raise NGEError(f"class folder {split_dir / name} holds no .jpeg/.jpg/.png images")
            self.samples += [(f, label) for f in files]
        self.root, self.split, self.train = root, split, train
        self.size, self.resize, self.seed = size, resize, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        img = open_image(path)
        if self.train:
            img = train_transform(img, self.size, _rng(self.seed, self.epoch, index))
        else:
            img = val_transform(img, self.size, self.resize)
        return to_tensor(img), label


# ---------------------------------------------------------------------------- PASCAL VOC 2012 segmentation


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
            rng = _rng(self.seed, self.epoch, index)
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


# ---------------------------------------------------------------------------- loaders


def _worker_message(e: NGEError) -> str:
    """The one-line message of an NGEError, also when torch re-raised it from a worker with a traceback."""
    lines = str(e).strip().splitlines()
    if len(lines) <= 1:
        return str(e)
    for line in reversed(lines):
        _, sep, msg = line.partition("NGEError: ")
        if sep:
            return msg.strip()
    return _one_line(lines[-1])


class ImageLoader:
    """Batches of a map-style data set through torch's DataLoader (Pillow decoding in `workers` processes).

    The order comes from a torch.Generator seeded by (seed, epoch) and the augmentation from
    per-sample generators seeded by (seed, epoch, index), so batches do not depend on `workers`.
    An NGEError from a worker is re-raised here as the same one-line NGEError.
    """

    def __init__(
        self,
        dataset: ImageFolderSet | VOCSegmentation,
        batch_size: int,
        workers: int,
        seed: int,
        shuffle: bool,
        drop_last: bool | None,
        num_classes: int,
        classes: Sequence[str],
        limit: int | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        if batch_size < 1:
            raise NGEError(f"batch size must be positive, got {batch_size}")
        if workers < 0:
            raise NGEError(f"workers must be 0 or more, got {workers}")
        self.dataset = dataset
        self.batch_size, self.workers, self.seed = batch_size, workers, seed
        self.shuffle = shuffle
        n = len(dataset)
        # `limit`: a fixed, seeded subset of the samples (the same one every epoch)
        if limit is not None and limit < n:
            self.indices = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()[:limit]
        else:
            self.indices = list(range(n))
        # data parallel: global batches of world * batch_size, this process takes its slice of each
        self.rank, self.world = shard
        if drop_last is None:  # drop the last partial batch when training (shuffling) only
            drop_last = shuffle
        if drop_last and self.world > 1 and len(self.indices) < batch_size * self.world:
            raise NGEError(f"{len(self.indices)} images are fewer than one global batch of {batch_size * self.world}; "
                           "lower data.batch_size")
        self.drop_last = drop_last and len(self.indices) >= batch_size * self.world
        self.num_classes = num_classes
        self.classes = list(classes)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        n, b = len(self.indices), self.batch_size * self.world
        return n // b if self.drop_last else -(-n // b)

    def _order(self) -> list[int]:
        order = self.indices
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = [self.indices[i] for i in torch.randperm(len(self.indices), generator=g).tolist()]
        if self.world == 1:
            return order
        b = self.batch_size
        return [i for start in range(0, len(self) * b * self.world, b * self.world)
                for i in order[start + self.rank * b: start + (self.rank + 1) * b]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches_from(0)

    def batches_from(self, first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches from number `first` on, without decoding the ones before (a resumed
        epoch): each image's augmentation depends only on (seed, epoch, index), so they are the same."""
        self.dataset.set_epoch(self.epoch)  # workers copy the data set, epoch included, at iter()
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self._order()[first * self.batch_size:],
            # its own generator: a DataLoader otherwise draws its worker seed from torch's global one,
            # which would shift the drop-path masks of a resumed run
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.workers,
            drop_last=self.drop_last,
            pin_memory=False,
            persistent_workers=False,
        )
        it = iter(loader)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except NGEError as e:
                raise NGEError(_worker_message(e)) from None
            yield batch


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


# ---------------------------------------------------------------------------- synthetic writers


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
) -> Path:
    """A tiny ImageFolder-layout set: class c is its own colour with a brighter stripe, plus noise.

    Class folders are named like ImageNet's (`n00000000`, ...); files are `.JPEG`; sizes (width,
    height) vary around `size`, so images are non-square and smaller than 224.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    colours = _class_colours(classes)
    w0, h0 = size
    for split, n in (("train", per_class_train), ("val", per_class_val)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                w = max(8, w0 + int(rng.integers(-w0 // 4, w0 // 4 + 1)))
                h = max(8, h0 + int(rng.integers(-h0 // 4, h0 // 4 + 1)))
                if w == h:
                    w += 1
                px = _noisy(colours[c], h, w, rng)
                stripe = (c * w) // max(classes, 1)  # a class-dependent vertical stripe
                px[:, stripe : stripe + max(1, w // 8)] = 255
                Image.fromarray(px).save(folder / f"{split}_{c}_{k:04d}.JPEG", quality=90)
    return root


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
    colours = _PALETTE_ARRAY[:VOC_NUM_CLASSES].astype(np.int16)
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


__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MEAN_RGB_UINT8",
    "VOC_CLASSES",
    "VOC_NUM_CLASSES",
    "VOC_PALETTE",
    "ImageFolderSet",
    "ImageLoader",
    "VOCSegmentation",
    "adjust_hue",
    "center_crop",
    "color_jitter",
    "colorize",
    "imagenet_loader",
    "open_image",
    "random_resized_crop",
    "random_resized_crop_params",
    "read_mask",
    "to_tensor",
    "resize_shorter",
    "train_transform",
    "val_transform",
    "voc_loader",
    "write_synthetic_imagefolder",
    "write_synthetic_voc",
]
