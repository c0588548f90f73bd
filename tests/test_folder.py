"""data.name=folder: the user's own images in the ImageFolder layout (train/<class>/, test/<class>/)."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nge.data.folder as folder_mod
from nge.cli import main
from nge.config import SearchRunConfig, TrainRunConfig, load_config
from nge.data import describe, input_shape, load_folder, scan_folder, split_train_val, write_synthetic_folder
from nge.data.folder import STREAM_NORM, channel_stats, decode
from nge.data.loader import ImageLoader
from nge.errors import NGEError
from nge.searching import SearchJob
from nge.space import Genotype
from nge.training import load_train_data

CPU = torch.device("cpu")
QUIET = ["runtime.progress=false"]


def one_line_naming(e: pytest.ExceptionInfo, path: Path | str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg


@pytest.fixture
def colour(tmp_path: Path) -> Path:
    """3 classes (red, green, blue): 16 train and 4 test RGB PNGs each, sizes around 28x20."""
    return write_synthetic_folder(tmp_path / "colour")


@pytest.fixture
def gray(tmp_path: Path) -> Path:
    return write_synthetic_folder(tmp_path / "gray", gray=True)


def search_cfg(root: Path, *overrides: str) -> SearchRunConfig:
    return load_config(SearchRunConfig, "search", "smoke", [*QUIET, "data.name=folder", f"data.root={root}", *overrides])


def train_cfg(root: Path, *overrides: str) -> TrainRunConfig:
    return load_config(TrainRunConfig, "train", "smoke", [*QUIET, "data.name=folder", f"data.root={root}", *overrides])


# ---------------------------------------------------------------------------- layout, size, channels, classes


def test_synth_folder_layout(colour, gray):
    for root, mode in ((colour, "RGB"), (gray, "L")):
        for split, n in (("train", 16), ("test", 4)):
            assert sorted(p.name for p in (root / split).iterdir()) == ["blue", "green", "red"]
            files = sorted((root / split).rglob("*.png"))
            assert len(files) == 3 * n
            images = [Image.open(f) for f in files]
            assert all(im.format == "PNG" and im.mode == mode and im.width != im.height for im in images)
            assert len({im.size for im in images}) > 3  # sizes vary


def test_sizes_resize_to_the_detected_or_given_size(colour):
    first = sorted((colour / "train" / "blue").iterdir())[0]  # sorted classes, then files
    f = scan_folder(colour, test=True)
    assert f.size == min(Image.open(first).size) and f.channels == 3
    ds = load_folder(f, None, seed=0)
    assert ds.train.x.shape == (48, 3, f.size, f.size) and ds.train.x.dtype == torch.uint8
    assert ds.test.x.shape == (12, 3, f.size, f.size)
    ds = load_folder(scan_folder(colour, test=False, image_size=13), None, seed=0)
    assert ds.train.x.shape == (48, 3, 13, 13) and len(ds.test) == 0
    assert ds.in_channels == 3 and ds.image_size == 13
    assert input_shape("folder", root=str(colour)) == (3, f.size, 3)
    assert input_shape("folder", root=str(colour), image_size=40, channels=1) == (1, 40, 3)


def test_decode_is_antialiased_and_keeps_flat_colours(tmp_path):
    board = (np.indices((64, 48)).sum(0) % 2 * 255).astype(np.uint8)  # 1-pixel checkerboard, non-square
    Image.fromarray(board).save(tmp_path / "board.png")
    x = decode(tmp_path / "board.png", 1, 16)
    assert x.shape == (1, 16, 16) and (x.float() - 127.5).abs().max() <= 2  # averaged, not aliased to 0/255
    Image.new("RGB", (30, 7), (10, 200, 90)).save(tmp_path / "flat.png")
    assert decode(tmp_path / "flat.png", 3, 9)[:, 4, 4].tolist() == [10, 200, 90]
    # colour to one channel: Pillow's L = (299 R + 587 G + 114 B) / 1000
    assert decode(tmp_path / "flat.png", 1, 9)[0, 4, 4].item() == round((299 * 10 + 587 * 200 + 114 * 90) / 1000)
    # grayscale to three channels: R = G = B
    assert decode(tmp_path / "board.png", 3, 8).unique(dim=0).shape[0] == 1
    # 16-bit grayscale keeps its top 8 bits
    Image.fromarray(np.array([[65535, 32768], [256, 0]], np.uint16)).save(tmp_path / "deep.png")
    assert decode(tmp_path / "deep.png", 1, 2)[0].tolist() == [[255, 128], [1, 0]]


def test_channels_detected_and_forced(tmp_path, gray, colour):
    assert scan_folder(gray, test=False).channels == 1
    assert scan_folder(colour, test=False).channels == 3
    g = load_folder(scan_folder(gray, test=False), None, 0)
    assert g.train.x.shape[1] == 1
    forced = load_folder(scan_folder(gray, test=False, channels=3), None, 0)
    assert forced.train.x.shape[1] == 3 and torch.equal(forced.train.x[:, 0], forced.train.x[:, 2])
    assert torch.equal(forced.train.x[:, 1:2], g.train.x)  # the same gray values in every channel
    assert load_folder(scan_folder(colour, test=False, channels=1), None, 0).train.x.shape[1] == 1
    mixed = tmp_path / "mixed"
    shutil.copytree(gray, mixed)
    Image.new("RGB", (20, 20), (255, 0, 0)).save(mixed / "train" / "red" / "zz.png")  # one colour image
    assert scan_folder(mixed, test=False).channels == 3


def test_class_names_labels_and_statistics(colour):
    ds = load_folder(scan_folder(colour, test=True), None, 0)
    assert ds.classes == ("blue", "green", "red") and ds.num_classes == 3 and ds.name == "folder"
    assert ds.train.y.tolist() == [0] * 16 + [1] * 16 + [2] * 16 and ds.test.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # the synthetic classes are hues: blue images are bluest, red ones reddest
    means = [ds.train.x[ds.train.y == k].float().mean((0, 2, 3)) for k in range(3)]
    assert means[0].argmax() == 2 and means[1].argmax() == 1 and means[2].argmax() == 0
    x = ds.train.x.double() / 255
    assert np.allclose(ds.mean, x.mean((0, 2, 3)).tolist()) and np.allclose(ds.std, x.std((0, 2, 3), correction=0).tolist())
    assert channel_stats(torch.full((2, 1, 3, 3), 7, dtype=torch.uint8)) == ((7 / 255,), (1 / 255,))  # no zero std
    assert "3 classes (blue, green, red)" in describe(ds)


# ---------------------------------------------------------------------------- search and train


def test_search_splits_train_only(colour):
    job = SearchJob(search_cfg(colour, "data.train_portion=0.75"))
    task = job.build(CPU)
    assert len(job.data.test) == 0 and len(job.data.train) == 48
    assert (len(task.train_loader.x), len(task.val_loader.x)) == (36, 12)
    labels = torch.cat([task.train_loader.y, task.val_loader.y]).sort().values
    assert torch.equal(labels, job.data.train.y.sort().values)


def test_a_limit_decodes_exactly_the_files_the_split_would_use(colour):
    f = scan_folder(colour, test=False)
    file_of = {decode(p, f.channels, f.size).numpy().tobytes(): (p.name, label) for p, label in f.train}
    assert len(file_of) == 48  # every image tells its file

    def files(x: torch.Tensor, y: torch.Tensor) -> list[tuple[str, int]]:
        found = [file_of[img.cpu().numpy().tobytes()] for img in x]
        assert [label for _, label in found] == y.tolist()  # and each keeps its file's label
        return sorted(found)

    full, used = load_folder(f, None, 0), {}
    for seed in (3, 4):
        tr, va = split_train_val(full.train, 0.5, seed, limit=10)  # what a search of the whole set would use
        used[seed] = files(torch.cat([tr.x, va.x]), torch.cat([tr.y, va.y]))
        job = SearchJob(search_cfg(colour, "data.limit=10", f"runtime.seed={seed}", "data.train_portion=0.5"))
        task = job.build(CPU)
        assert len(used[seed]) == 10 and files(job.data.train.x, job.data.train.y) == used[seed]
        loaders = task.train_loader, task.val_loader
        assert files(torch.cat([b.x for b in loaders]), torch.cat([b.y for b in loaders])) == used[seed]
    assert used[3] != used[4]  # the seed chooses them


def test_train_loads_the_test_split(colour):
    data = load_train_data(train_cfg(colour, "data.image_size=12"), CPU)
    assert (data.in_channels, data.num_classes, data.image_size, data.n_train) == (3, 3, 12, 48)
    assert data.classes == ("blue", "green", "red")
    ys = torch.cat([y for _, y in data.test])
    assert ys.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    x, _ = next(iter(data.train))
    assert x.shape == (16, 3, 12, 12) and x.dtype == torch.float32


def test_a_large_set_is_streamed_by_train_and_refused_by_search(colour, monkeypatch):
    monkeypatch.setattr(folder_mod, "MEMORY_LIMIT", 3 * 10 * 10 * 20)  # 20 images at 3x10x10
    with pytest.raises(NGEError) as e:
        SearchJob(search_cfg(colour, "data.image_size=10")).build(CPU)
    assert "data.limit=20" in str(e.value) and "data.image_size" in str(e.value)
    one_line_naming(e, colour)
    assert len(SearchJob(search_cfg(colour, "data.image_size=10", "data.limit=20")).build(CPU).train_loader.x) == 10

    data = load_train_data(train_cfg(colour, "data.image_size=10", "data.workers=0", "data.cutout=0"), CPU)
    assert isinstance(data.train, ImageLoader) and isinstance(data.test, ImageLoader)
    assert (data.in_channels, data.image_size, data.n_train, data.classes) == (3, 10, 48, ("blue", "green", "red"))
    assert "streamed" in data.description
    # test images: decoded and normalised with ImageNet's mean and std, in file order
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in STREAM_NORM[3])
    f = scan_folder(colour, test=True, image_size=10)
    x, y = next(iter(data.test))
    assert y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    expected = torch.stack([(decode(p, 3, 10).float() / 255 - mean) / std for p, _ in f.test])
    assert torch.allclose(x, expected, atol=1e-5)
    # training batches: shuffled, augmented (crop, flip) per image from (seed, epoch, index), so the
    # same whatever the number of workers
    batches = [(x.clone(), y.clone()) for x, y in data.train]
    assert len(batches) == 3 and batches[0][0].shape == (16, 3, 10, 10)
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == [0] * 16 + [1] * 16 + [2] * 16
    data.train.workers = 2
    again = list(data.train)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    data.train.set_epoch(1)
    assert not torch.equal(next(iter(data.train))[0], batches[0][0])


# ---------------------------------------------------------------------------- errors


def test_bad_files_are_one_line_errors_naming_them(tmp_path, colour):
    bad = tmp_path / "bad"
    shutil.copytree(colour, bad)
    victim = sorted((bad / "train" / "green").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:60])  # a truncated PNG: the header reads, the pixels do not
    f = scan_folder(bad, test=False)
    with pytest.raises(NGEError, match="cannot decode") as e:
        load_folder(f, None, 0)
    one_line_naming(e, victim)
    fake = bad / "train" / "blue" / "a_note.jpg"
    fake.write_text("not a picture")
    with pytest.raises(NGEError, match="cannot decode") as e:
        scan_folder(bad, test=False)  # the header scan (channel detection) reads it first
    one_line_naming(e, fake)


def cli_error(capsys, argv: list[str]) -> str:
    """The one `nge: error` line `argv` ends with: exit 2, no traceback anywhere in stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("nge: error") == 1 and err.endswith("\n"), err
    line = err.splitlines()[-1]
    assert line.startswith("nge: error: "), err
    return line


def test_a_file_pillow_cannot_decode_or_convert_stops_the_cli_with_one_line(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    assert main(["synth", "folder", str(data)]) == 0
    capsys.readouterr()
    search = ["search", "--preset", "smoke", "--out", str(tmp_path / "s"), "--force", *QUIET, "runtime.threads=1",
              "data.name=folder", f"data.root={data}", "data.image_size=10"]
    # a truncated JPEG among the PNGs
    jpeg = data / "train" / "green" / "zz_cut.jpg"
    Image.new("RGB", (30, 20), (10, 200, 90)).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    line = cli_error(capsys, search)
    assert "cannot decode image" in line and str(jpeg) in line
    jpeg.unlink()
    # a file Pillow reads but cannot convert: LAB (here a TIFF named .png) has no conversion to L
    lab = data / "train" / "red" / "zz_lab.png"
    Image.new("LAB", (30, 20), (50, 10, 10)).save(lab, format="TIFF")
    assert main([*search, "search.epochs=1"]) == 0  # to RGB it converts (data.channels inferred: 3)
    capsys.readouterr()
    line = cli_error(capsys, [*search, "data.channels=1"])
    assert "cannot decode image" in line and "LAB" in line and str(lab) in line
    # the same file streamed by nge train through a DataLoader worker
    monkeypatch.setattr(folder_mod, "MEMORY_LIMIT", 1)
    line = cli_error(capsys, ["train", "--preset", "smoke", "--genotype", "random:0", "--out", str(tmp_path / "t"),
                              *QUIET, "runtime.threads=1", "data.name=folder", f"data.root={data}",
                              "data.image_size=10", "data.channels=1", "data.workers=1", "data.batch_size=64",
                              "train.epochs=1"])
    assert "cannot decode image" in line and "LAB" in line and str(lab) in line


def test_a_worker_error_stops_the_run_and_its_workers_at_once(tmp_path, capsys, monkeypatch, colour):
    """Worker 0's first image (the first of batch 1) is unreadable; every other image takes 30 s to
    decode. The error ends the run at batch 1 and the workers are gone when it returns: torch alone
    would leave them decoding until it collects the iterator, then wait up to 5 s for each."""
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png" * 20)
    real = folder_mod.decode

    def decode(path, channels, size):  # runs in the forked workers
        if torch.utils.data.get_worker_info().id == 0 and not hasattr(decode, "seen"):
            decode.seen = True
            return real(bad, channels, size)
        time.sleep(30)
        return real(path, channels, size)

    monkeypatch.setattr(folder_mod, "decode", decode)
    monkeypatch.setattr(folder_mod, "MEMORY_LIMIT", 1)  # streamed
    assert multiprocessing.active_children() == []
    out = tmp_path / "t"
    line = cli_error(capsys, ["train", "--preset", "smoke", "--genotype", "random:0", "--out", str(out), *QUIET,
                              "runtime.threads=1", "data.name=folder", f"data.root={colour}", "data.image_size=10",
                              "data.workers=2", "data.batch_size=4", "train.epochs=1"])
    assert line == f"nge: error: cannot decode image {bad}: UnidentifiedImageError: cannot identify image file '{bad}'"
    assert multiprocessing.active_children() == []  # no worker left decoding batch 2 or 3
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "genotype.json"]  # no epoch ended


def test_an_inferred_image_size_under_8_is_refused_as_a_given_one(tmp_path, capsys, colour):
    first = sorted((colour / "train" / "blue").iterdir())[0]  # the image the size is inferred from
    Image.new("RGB", (12, 7), (0, 0, 255)).save(first)
    with pytest.raises(NGEError, match="data.image_size must be >= 8") as e:
        scan_folder(colour, test=False)
    one_line_naming(e, first)
    with pytest.raises(NGEError, match="data.image_size must be >= 8"):
        input_shape("folder", root=str(colour))
    assert scan_folder(colour, test=False, image_size=8).size == 8  # a given size is taken
    line = cli_error(capsys, ["search", "--preset", "smoke", "--out", str(tmp_path / "s"), *QUIET,
                              "data.name=folder", f"data.root={colour}"])
    assert "bad configuration: data.image_size must be >= 8" in line and str(first) in line
    assert not (tmp_path / "s").exists()


def test_layout_errors_name_the_path(tmp_path, colour):
    with pytest.raises(NGEError, match="does not exist") as e:
        scan_folder(tmp_path / "nowhere", test=False)
    one_line_naming(e, tmp_path / "nowhere")

    no_test = tmp_path / "notest"
    shutil.copytree(colour / "train", no_test / "train")
    assert len(scan_folder(no_test, test=False).train) == 48  # search needs only train/
    with pytest.raises(NGEError, match="missing folder") as e:
        scan_folder(no_test, test=True)
    one_line_naming(e, no_test / "test")

    empty = tmp_path / "empty"
    shutil.copytree(colour, empty)
    for p in (empty / "test" / "green").iterdir():
        p.unlink()
    with pytest.raises(NGEError, match="holds no") as e:
        scan_folder(empty, test=True)
    one_line_naming(e, empty / "test" / "green")

    for where in ("train", "test"):  # a class in one split only
        odd = tmp_path / f"odd_{where}"
        shutil.copytree(colour, odd)
        shutil.copytree(odd / where / "red", odd / where / "yellow")
        with pytest.raises(NGEError, match="differ") as e:
            scan_folder(odd, test=True)
        one_line_naming(e, odd / "test")
        assert "yellow" in str(e.value)

    one = tmp_path / "one"
    shutil.copytree(colour / "train" / "red", one / "train" / "red")
    with pytest.raises(NGEError, match="at least 2") as e:
        scan_folder(one, test=False)
    one_line_naming(e, one / "train")
    (tmp_path / "none" / "train").mkdir(parents=True)
    with pytest.raises(NGEError, match="no class folders") as e:
        scan_folder(tmp_path / "none", test=False)
    one_line_naming(e, tmp_path / "none" / "train")


@pytest.mark.parametrize(
    "kind, overrides, fragment",
    [
        ("search", ["data.channels=1"], "data.channels has no effect with data.name=synthetic"),
        ("train", ["data.name=cifar10", "data.channels=3"], "data.channels has no effect with data.name=cifar10"),
        ("search", ["data.image_size=32"], "data.image_size has no effect with data.name=synthetic"),
        ("train", ["data.name=folder", "data.root=/x", "data.resize=40"], "data.resize has no effect with data.name=folder"),
        ("search", ["data.name=folder", "data.root=/x", "data.workers=2"], "data.workers"),
        ("search", ["data.name=folder"], "data.name=folder needs data.root=DIR"),
        ("search", ["data.name=folder", "data.root=/x", "data.channels=2"], "data.channels must be 1, 3 or null"),
        ("train", ["data.name=folder", "data.root=/x", "data.image_size=4"], "data.image_size must be >= 8"),
    ],
)
def test_folder_keys_refused_where_they_do_nothing_or_are_wrong(kind, overrides, fragment):
    schema = SearchRunConfig if kind == "search" else TrainRunConfig
    with pytest.raises(NGEError) as e:
        load_config(schema, kind, "smoke", overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    # and where they act, they are taken
    cfg = load_config(TrainRunConfig, "train", "smoke", ["data.name=folder", "data.root=/x", "data.channels=1",
                                                         "data.image_size=24", "data.workers=2"])
    assert (cfg.data.channels, cfg.data.image_size, cfg.data.workers) == (1, 24, 2)


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_synth_search_and_train_on_a_folder_through_the_cli(tmp_path, capsys):
    data, search, train = tmp_path / "data", tmp_path / "search", tmp_path / "train"
    assert main(["synth", "folder", str(data), "--gray"]) == 0
    common = [*QUIET, "data.name=folder", f"data.root={data}", "data.image_size=12"]
    assert main(["search", "--preset", "smoke", "--out", str(search), *common, "search.epochs=1"]) == 0
    out = capsys.readouterr()
    genotype = Genotype.load(search / "genotype.json")
    assert json.loads(out.out) == genotype.to_dict()
    assert "folder: 48 train / 0 test, 1x12x12, 3 classes (blue, green, red); train 24 / val 24" in out.err
    summary = json.loads((search / "summary.json").read_text())
    assert summary["genotype"] == genotype.to_dict() and summary["classes"] == ["blue", "green", "red"]
    assert 0 <= summary["final_val_acc"] <= 1

    assert main(["train", "--preset", "smoke", "--genotype", str(search), "--out", str(train), *common]) == 0
    out = capsys.readouterr()
    summary = json.loads((train / "summary.json").read_text())
    assert summary["genotype"] == genotype.to_dict() and summary["classes"] == ["blue", "green", "red"]
    assert json.loads(out.out)["final_test_acc"] == summary["final_test_acc"]
    rows = [json.loads(line) for line in (train / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(0 <= r["test_acc"] <= 1 for r in rows)
    assert "folder: 48 train / 12 test, 1x12x12" in out.err
    model = torch.load(train / "model.pt", weights_only=False)
    assert (model["in_channels"], model["num_classes"], model["classes"]) == (1, 3, ["blue", "green", "red"])
    assert main(["synth", "folder", str(data)]) == 2  # never into a folder that is not empty
