"""ImageNet and VOC data: the ImageFolder and VOC layouts, their DataLoader-worker loaders, the Pillow
transforms and the synthetic writers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nge.data import imagenet_loader, voc_loader, write_synthetic_imagefolder, write_synthetic_voc
from nge.data.imagenet import ImageFolderSet
from nge.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    center_crop,
    color_jitter,
    random_resized_crop,
    random_resized_crop_params,
    resize_shorter,
    to_tensor,
)
from nge.data.voc import VOC_CLASSES, VOC_PALETTE, VOCSegmentation, colorize, read_mask
from nge.errors import NGEError

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: (3, H, W) -> (H, W, 3) float pixel values."""
    return ((x * STD + MEAN) * 255).permute(1, 2, 0).numpy()


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))


def one_line_naming(e: pytest.ExceptionInfo, path: Path | str) -> None:
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg


@pytest.fixture
def inet(tmp_path: Path) -> Path:
    return write_synthetic_imagefolder(tmp_path / "inet")  # 3 classes, 4 train + 2 val each


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return write_synthetic_voc(tmp_path / "voc", aug=True)  # 4 train (+3 aug extra), 2 val


# ---------------------------------------------------------------------------- ImageNet layout


def test_imagefolder_layout_shapes_labels_and_range(inet):
    loader = imagenet_loader(inet, "train", True, batch_size=5, workers=0, seed=0, size=64, resize=73)
    assert loader.classes == sorted(p.name for p in (inet / "train").iterdir())
    assert loader.num_classes == 3 and len(loader.dataset) == 12
    lo = ((0 - MEAN) / STD).min().item() - 1e-5
    hi = ((1 - MEAN) / STD).max().item() + 1e-5
    seen = []
    for x, y in loader:
        assert x.shape == (5, 3, 64, 64) and x.dtype == torch.float32
        assert y.dtype == torch.int64
        assert lo <= x.min().item() and x.max().item() <= hi
        seen += y.tolist()
    assert len(seen) == 10  # drop_last when training: 12 // 5 batches
    ds = loader.dataset
    for path, label in ds.samples:
        assert path.parent.name == ds.classes[label]

    val = imagenet_loader(inet, "val", False, batch_size=4, workers=0, seed=0)
    got = torch.cat([y for _, y in val]).tolist()
    assert got == [0, 0, 1, 1, 2, 2]  # unshuffled: sorted class folders, their files in order
    x, _ = next(iter(val))
    assert x.shape == (4, 3, 224, 224)


def test_loader_len_and_drop_last(inet):
    assert len(imagenet_loader(inet, "train", True, 5, 0, 0)) == 2
    assert len(imagenet_loader(inet, "train", True, 5, 0, 0, drop_last=False)) == 3
    assert len(imagenet_loader(inet, "val", False, 4, 0, 0)) == 2
    assert len(imagenet_loader(inet, "train", True, 50, 0, 0)) == 1  # never zero batches


def test_imagefolder_deterministic_per_seed_and_epoch(inet):
    kw = dict(batch_size=6, workers=0, seed=3, size=48, resize=56)
    a = batches(imagenet_loader(inet, "train", True, **kw))
    b = batches(imagenet_loader(inet, "train", True, **kw))
    assert same(a, b)
    other = imagenet_loader(inet, "train", True, **kw)
    other.set_epoch(1)
    c = batches(other)
    assert not same(a, c)
    # same images in another order and with another augmentation
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(torch.cat([y for _, y in c]).tolist())
    other.set_epoch(0)
    assert same(a, batches(other))


def test_resumed_epoch_skips_to_the_same_batches(inet):
    loader = imagenet_loader(inet, "train", True, batch_size=3, workers=0, seed=2, size=32, resize=40)
    loader.set_epoch(1)
    full = batches(loader)
    assert len(full) >= 3
    assert same(full[1:], list(loader.batches_from(1)))


def test_sharded_loaders_split_each_global_batch(inet):
    kw = dict(batch_size=2, workers=0, seed=4, size=32, resize=40)
    whole = batches(imagenet_loader(inet, "train", True, batch_size=4, workers=0, seed=4, size=32, resize=40))
    parts = [batches(imagenet_loader(inet, "train", True, shard=(r, 2), **kw)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for (x0, y0), (x1, y1), (x, y) in zip(*parts, whole, strict=True):
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)


def test_workers_do_not_change_batches(inet, voc):
    kw = dict(batch_size=4, seed=1, size=40, resize=48)
    for train in (True, False):
        split = "train" if train else "val"
        l0 = imagenet_loader(inet, split, train, workers=0, **kw)
        l2 = imagenet_loader(inet, split, train, workers=2, **kw)
        l0.set_epoch(2)
        l2.set_epoch(2)
        assert same(batches(l0), batches(l2))
    v0 = voc_loader(voc, "train", True, 3, 0, 5, crop=40, aug=True)
    v2 = voc_loader(voc, "train", True, 3, 2, 5, crop=40, aug=True)
    assert same(batches(v0), batches(v2))


def test_val_transform_geometry(tmp_path):
    root = tmp_path / "geo"
    x = np.arange(300, dtype=np.float64)
    yy = np.arange(200, dtype=np.float64)
    px = np.zeros((200, 300, 3), np.uint8)
    px[:, :, 0] = np.round(x * 255 / 299)[None, :]
    px[:, :, 1] = np.round(yy * 255 / 199)[:, None]
    px[:, :, 2] = 77
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        Image.fromarray(px).save(root / split / "a" / "ramp.png")
    ds = ImageFolderSet(root, "val", train=False, size=224, resize=224)
    out = to_pixels(ds[0][0])
    assert out.shape == (224, 224, 3)
    # hand computation: resize 300x200 -> 336x224, crop columns 56..279 (left = (336 - 224) / 2)
    ref = np.asarray(Image.fromarray(px).resize((336, 224), Image.Resampling.BILINEAR).crop((56, 0, 280, 224)), np.float64)
    assert np.abs(out - ref).max() < 0.01
    c = np.arange(224)
    src_x = (c + 56 + 0.5) * 300 / 336 - 0.5  # the source column each output column samples
    assert np.abs(out[100, :, 0] - src_x * 255 / 299).max() < 1.5
    r = np.arange(2, 222)
    src_y = (r + 0.5) * 200 / 224 - 0.5
    assert np.abs(out[r, 100, 1] - src_y * 255 / 199).max() < 1.5
    assert np.abs(out[:, :, 2] - 77).max() < 0.01
    # the shorter side is the one resized, for portrait images too
    assert resize_shorter(Image.new("RGB", (200, 300)), 256).size == (256, 384)
    assert center_crop(Image.new("RGB", (256, 384)), 224).size == (224, 224)


def test_random_resized_crop_size_scale_and_ratio():
    rng = np.random.default_rng(0)
    W, H = 300, 200
    for _ in range(500):
        top, left, h, w = random_resized_crop_params(W, H, rng)
        assert 0 <= top <= H - h and 0 <= left <= W - w
        assert (w + 0.5) * (h + 0.5) >= 0.08 * W * H and (w - 0.5) * (h - 0.5) <= W * H
        assert (w + 0.5) / (h - 0.5) >= 3 / 4 and (w - 0.5) / (h + 0.5) <= 4 / 3
    img = Image.new("RGB", (W, H), (10, 20, 30))
    assert random_resized_crop(img, 32, rng).size == (32, 32)
    # no try fits a 1000x10 strip: torchvision's fallback, the centre crop at the widest ratio
    assert random_resized_crop_params(1000, 10, rng) == (0, (1000 - 13) // 2, 10, 13)
    assert random_resized_crop_params(10, 1000, rng) == ((1000 - 13) // 2, 0, 13, 10)


def test_color_jitter_is_seeded_and_keeps_gray_gray():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    a = np.asarray(color_jitter(img, np.random.default_rng(5)))
    b = np.asarray(color_jitter(img, np.random.default_rng(5)))
    c = np.asarray(color_jitter(img, np.random.default_rng(6)))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    gray = Image.new("RGB", (8, 8), (100, 100, 100))
    out = np.asarray(color_jitter(gray, np.random.default_rng(1))).astype(int)
    assert np.abs(out - out[..., :1]).max() <= 1  # no hue or saturation to change


# ---------------------------------------------------------------------------- VOC layout


def test_mask_values_survive_the_palette_round_trip(tmp_path):
    values = np.array(list(range(21)) + [255], np.uint8)
    mask = np.resize(values, (6, 11))
    img = Image.fromarray(mask)
    img.putpalette(VOC_PALETTE)
    img.save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    assert np.array_equal(read_mask(tmp_path / "m.png"), mask)
    Image.fromarray(mask).save(tmp_path / "l.png")
    assert np.array_equal(read_mask(tmp_path / "l.png"), mask)


def test_voc_val_pads_with_mean_and_ignore(voc):
    ds = VOCSegmentation(voc, "val", train=False, crop=64)
    assert len(ds) == 2 and ds.classes == list(VOC_CLASSES)
    for i, (image_path, mask_path) in enumerate(ds.samples):
        x, m = ds[i]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        assert m.shape == (64, 64) and m.dtype == torch.int64
        raw = read_mask(mask_path)
        h, w = raw.shape
        assert np.array_equal(m[:h, :w].numpy(), raw)
        assert (m[h:, :] == 255).all() and (m[:, w:] == 255).all()
        pad = to_tensor(Image.new("RGB", (1, 1), (124, 116, 104)))[:, 0, 0]
        assert torch.equal(x[:, h:, :], pad.view(3, 1, 1).expand(3, 64 - h, 64))
        assert torch.equal(x[:, :, w:], pad.view(3, 1, 1).expand(3, 64, 64 - w))
        assert Image.open(image_path).size == (w, h)
        assert set(np.unique(raw).tolist()) <= set(range(21)) | {255}
        assert (raw == 255).any()  # the object border, as in real VOC


def test_voc_train_loader_aug_alignment_and_determinism(voc):
    loader = voc_loader(voc, "train", True, 3, 0, 0, crop=64, aug=True, scale=(0.5, 1.0))
    assert loader.num_classes == 21 and len(loader.dataset) == 7  # 4 train ids + 3 SBD extras
    assert len(loader) == 2
    pad = to_tensor(Image.new("RGB", (1, 1), (124, 116, 104)))[:, 0, 0].view(1, 3, 1, 1)
    n_pad = 0
    for x, m in loader:
        assert x.shape == (3, 3, 64, 64) and m.shape == (3, 64, 64) and m.dtype == torch.int64
        assert set(m.unique().tolist()) <= set(range(21)) | {255}
        is_pad = (x == pad).all(dim=1)  # padded pixels of the image are exactly the mean colour...
        assert (m[is_pad] == 255).all()  # ...and ignored in the mask: image and mask stay aligned
        n_pad += int(is_pad.sum())
    assert n_pad > 0
    again = voc_loader(voc, "train", True, 3, 0, 0, crop=64, aug=True, scale=(0.5, 1.0))
    assert same(batches(loader), batches(again))
    again.set_epoch(1)
    assert not same(batches(loader), batches(again))
    plain = VOCSegmentation(voc, "train", train=True, crop=64)
    assert len(plain) == 4 and not plain.aug


def test_voc_larger_than_crop_says_raise_crop(voc):
    ds = VOCSegmentation(voc, "val", train=False, crop=20)
    with pytest.raises(NGEError, match="raise data.crop") as e:
        ds[0]
    one_line_naming(e, ds.samples[0][0])
    x, m = VOCSegmentation(voc, "train", train=True, crop=20)[0]  # training crops instead
    assert x.shape == (3, 20, 20) and m.shape == (20, 20)


def test_colorize_palette():
    assert len(VOC_PALETTE) == 768
    mask = np.array([[0, 1], [15, 255]], np.uint8)
    c = colorize(mask)
    assert c.shape == (2, 2, 3) and c.dtype == np.uint8
    assert c[0, 0].tolist() == [0, 0, 0]
    assert c[0, 1].tolist() == [128, 0, 0]
    assert c[1, 0].tolist() == [192, 128, 128]
    assert c[1, 1].tolist() == [224, 224, 192]
    assert colorize(mask.astype(np.int64)).tolist() == c.tolist()
    with pytest.raises(NGEError):
        colorize(np.array([[256]]))


# ---------------------------------------------------------------------------- errors


def test_imagefolder_errors_name_the_path(tmp_path, inet):
    with pytest.raises(NGEError) as e:
        ImageFolderSet(tmp_path / "nope", "train", True)
    one_line_naming(e, tmp_path / "nope")

    no_val = tmp_path / "noval"
    shutil.copytree(inet / "train", no_val / "train")
    with pytest.raises(NGEError) as e:
        ImageFolderSet(no_val, "val", False)
    one_line_naming(e, no_val / "val")

    no_train = tmp_path / "notrain"
    shutil.copytree(inet / "val", no_train / "val")
    with pytest.raises(NGEError) as e:
        ImageFolderSet(no_train, "val", False)
    one_line_naming(e, no_train / "train")

    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    with pytest.raises(NGEError, match="no class folders") as e:
        ImageFolderSet(empty, "train", True)
    one_line_naming(e, empty / "train")

    bare = tmp_path / "bare"
    shutil.copytree(inet, bare)
    (bare / "train" / "zzz").mkdir()
    (bare / "train" / "zzz" / "notes.txt").write_text("not an image")
    with pytest.raises(NGEError, match="no .jpeg") as e:
        ImageFolderSet(bare, "train", True)
    one_line_naming(e, bare / "train" / "zzz")
    with pytest.raises(NGEError, match="differ") as e:  # val lacks the new class
        ImageFolderSet(bare, "val", False)
    one_line_naming(e, bare / "val")

    with pytest.raises(NGEError):
        ImageFolderSet(inet, "val", False, size=224, resize=200)


@pytest.mark.slow
def test_undecodable_images_surface_as_one_line_errors(tmp_path, inet):
    bad = tmp_path / "bad"
    shutil.copytree(inet, bad)
    victim = sorted((bad / "train" / "n00000001").iterdir())[0]
    victim.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    loader = imagenet_loader(bad, "train", True, batch_size=4, workers=2, seed=0, size=32, resize=40)
    with pytest.raises(NGEError, match="cannot decode") as e:
        list(loader)
    one_line_naming(e, victim)

    trunc = sorted((bad / "val" / "n00000002").iterdir())[0]
    trunc.write_bytes(trunc.read_bytes()[:200])
    with pytest.raises(NGEError, match="cannot decode") as e:
        list(imagenet_loader(bad, "val", False, batch_size=4, workers=0, seed=0))
    one_line_naming(e, trunc)


def test_voc_errors_name_the_path(tmp_path, voc):
    with pytest.raises(NGEError) as e:
        VOCSegmentation(tmp_path / "nope", "train", True)
    one_line_naming(e, tmp_path / "nope")

    def copy(name: str) -> Path:
        return Path(shutil.copytree(voc, tmp_path / name))

    r = copy("nolist")
    (r / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(NGEError, match="missing id list") as e:
        VOCSegmentation(r, "val", False)
    one_line_naming(e, r / "ImageSets" / "Segmentation" / "val.txt")

    r = copy("emptylist")
    (r / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(NGEError, match="empty") as e:
        VOCSegmentation(r, "val", False)
    one_line_naming(e, r / "ImageSets" / "Segmentation" / "val.txt")

    r = copy("nojpeg")
    first = (r / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    (r / "JPEGImages" / f"{first}.jpg").unlink()
    with pytest.raises(NGEError, match="missing file") as e:
        VOCSegmentation(r, "train", True)
    one_line_naming(e, r / "JPEGImages" / f"{first}.jpg")

    r = copy("noaug")
    shutil.rmtree(r / "SegmentationClassAug")
    with pytest.raises(NGEError) as e:
        VOCSegmentation(r, "train", True, aug=True)
    one_line_naming(e, r / "SegmentationClassAug")

    r = copy("badmask")
    val_id = (r / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    mask_path = r / "SegmentationClass" / f"{val_id}.png"
    m = read_mask(mask_path).copy()
    m[0, 0] = 30
    Image.fromarray(m).save(mask_path)
    with pytest.raises(NGEError, match="value 30") as e:
        list(voc_loader(r, "val", False, 2, 2, 0, crop=64))
    one_line_naming(e, mask_path)

    m[0, 0] = 0
    Image.fromarray(m[:-1]).save(mask_path)  # one row short of its image
    with pytest.raises(NGEError, match="its image") as e:
        VOCSegmentation(r, "val", False, crop=64)[0]
    one_line_naming(e, mask_path)

    Image.fromarray(np.zeros((*m.shape, 3), np.uint8)).save(mask_path)
    with pytest.raises(NGEError, match="RGB") as e:
        VOCSegmentation(r, "val", False, crop=64)[0]
    one_line_naming(e, mask_path)


def test_synthetic_writers_layouts(tmp_path):
    r = write_synthetic_imagefolder(tmp_path / "i", classes=2, per_class_train=3, per_class_val=1, seed=4)
    files = sorted((r / "train").rglob("*.JPEG"))
    assert len(files) == 6 and len(list((r / "val").rglob("*.JPEG"))) == 2
    sizes = [Image.open(f).size for f in files]
    assert all(w != h and max(w, h) < 224 for w, h in sizes)
    assert all(Image.open(f).format == "JPEG" for f in files)
    v = write_synthetic_voc(tmp_path / "v", n_train=2, n_val=1)
    assert not (v / "SegmentationClassAug").exists()
    ids = (v / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert len(ids) == 2 and Image.open(v / "JPEGImages" / f"{ids[0]}.jpg").format == "JPEG"
    assert Image.open(v / "SegmentationClass" / f"{ids[0]}.png").mode == "P"
    # different seeds, different data; same seed, same bytes
    a = write_synthetic_imagefolder(tmp_path / "a", seed=1)
    b = write_synthetic_imagefolder(tmp_path / "b", seed=1)
    fa = sorted(p.relative_to(a) for p in a.rglob("*.JPEG"))
    assert fa == sorted(p.relative_to(b) for p in b.rglob("*.JPEG"))
    assert all((a / p).read_bytes() == (b / p).read_bytes() for p in fa)
    assert len(fa) == 18
