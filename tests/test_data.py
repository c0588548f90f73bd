import ast
import gzip
import os
import pickle
from graphlib import TopologicalSorter
from pathlib import Path

import numpy as np
import pytest
import torch

import nge.data
from helpers.files import make_cifar10, write_idx
from nge.data import (
    BatchLoader,
    ImageSet,
    check_files,
    cutout,
    load_cifar,
    load_fashion_mnist,
    random_crop,
    random_flip,
    read_idx,
    split_train_val,
    write_cifar_batch,
    write_synthetic_folder,
    write_synthetic_imagefolder,
)
from nge.errors import NGEError


def test_idx_round_trip_gz_and_raw(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", a)
    write_idx(tmp_path / "a", a, compress=False)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)
    assert np.array_equal(read_idx(tmp_path / "a"), a)


def test_idx_rejects_truncated_wrong_magic_and_bad_gzip(tmp_path):
    a = np.zeros((4, 5, 5), np.uint8)
    write_idx(tmp_path / "ok", a, compress=False)
    raw = (tmp_path / "ok").read_bytes()
    (tmp_path / "trunc").write_bytes(raw[:-7])
    (tmp_path / "magic").write_bytes(b"\x12\x34" + raw[2:])
    (tmp_path / "long").write_bytes(raw + b"\x00")
    (tmp_path / "badgz").write_bytes(gzip.compress(raw)[:30])
    for name, fragment in [("trunc", "truncated"), ("magic", "bad magic"), ("long", "corrupt"), ("badgz", "cannot read")]:
        with pytest.raises(NGEError) as e:
            read_idx(tmp_path / name)
        assert fragment in str(e.value) and name in str(e.value)


def test_fashion_mnist_reader(fmnist_root):
    ds = load_fashion_mnist(fmnist_root)
    assert ds.train.x.shape == (64, 1, 28, 28) and ds.train.x.dtype == torch.uint8
    assert ds.test.y.shape == (32,) and ds.num_classes == 10


def test_fashion_mnist_missing_root_and_file(tmp_path, fmnist_root):
    with pytest.raises(NGEError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")
    os.remove(fmnist_root / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(NGEError, match="missing t10k-labels"):
        load_fashion_mnist(fmnist_root)


def test_cifar10_reader_both_root_forms(cifar10_root):
    for root in (cifar10_root, cifar10_root / "cifar-10-batches-py"):
        ds = load_cifar(root, 10)
        assert ds.train.x.shape == (40, 3, 32, 32) and ds.test.x.shape == (8, 3, 32, 32)


def test_cifar100_reader(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 10), ("test", 4)):
        write_cifar_batch(folder / name, rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                          rng.integers(0, 100, n), label_key="fine_labels")
    ds = load_cifar(tmp_path, 100)
    assert ds.num_classes == 100 and len(ds.train) == 10 and len(ds.test) == 4


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/nge-pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    root = make_cifar10(tmp_path)
    marker = "/tmp/nge-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    with open(root / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(NGEError, match="data_batch_3"):
        load_cifar(root, 10)
    assert not os.path.exists(marker)


def test_cifar_truncated_and_wrong_shape(tmp_path):
    root = make_cifar10(tmp_path)
    f = root / "cifar-10-batches-py" / "test_batch"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(NGEError, match="test_batch"):
        load_cifar(root, 10)
    write_cifar_batch(f, np.zeros((2, 3, 16, 16), np.uint8), np.zeros(2))
    with pytest.raises(NGEError, match="N x 3072"):
        load_cifar(root, 10)


def test_split_is_seeded_disjoint_and_limited():
    data = ImageSet(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), torch.arange(100))
    tr, va = split_train_val(data, 0.5, seed=3)
    tr2, _ = split_train_val(data, 0.5, seed=3)
    assert torch.equal(tr.y, tr2.y)
    assert len(tr) == len(va) == 50 and not set(tr.y.tolist()) & set(va.y.tolist())
    tr, va = split_train_val(data, 0.5, seed=3, limit=20)
    assert len(tr) + len(va) == 20
    with pytest.raises(NGEError):
        split_train_val(data, 0.999, seed=0)


def test_augmentations_keep_shapes_and_content():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 12, 12) + 1  # strictly positive, so zero padding is visible
    c = random_crop(x, 2, g)
    assert c.shape == x.shape
    for i in range(8):  # every crop is a shifted window of the zero-padded image
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        assert any(torch.equal(c[i], padded[:, dy:dy + 12, dx:dx + 12]) for dy in range(5) for dx in range(5))
    f = random_flip(x, g)
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(2)) for i in range(8))
    co = cutout(x, 4, g)
    zeros = (co == 0).all(1).sum(dim=(1, 2))
    assert co.shape == x.shape and (zeros <= 16).all() and (zeros >= 4).all()  # clipped at borders


def test_loader_is_deterministic_per_epoch_and_keeps_labels():
    data = ImageSet(torch.randint(0, 255, (50, 1, 8, 8), dtype=torch.uint8), torch.arange(50))
    loader = BatchLoader(data, 16, (0.5,), (0.5,), torch.device("cpu"), shuffle=True, drop_last=True, seed=1)
    assert len(loader) == 3
    first = [y for _, y in loader]
    again = [y for _, y in loader]
    loader.set_epoch(1)
    other = [y for _, y in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    x, y = next(iter(loader))
    expected = (data.x[y].float() / 255 - 0.5) / 0.5
    assert torch.allclose(x, expected, atol=1e-5)  # labels travel with their images


def test_the_data_modules_import_each_other_one_way():
    """No cycle among nge/data/*.py, counting imports inside functions (`from nge.data import` is the package)."""
    graph = {}
    for path in Path(nge.data.__file__).parent.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        graph[path.stem] = {n.removeprefix("nge.data.") if n != "nge.data" else "__init__"
                            for n in names if n == "nge.data" or n.startswith("nge.data.")}
    assert {"sets", "folder", "imagenet", "probe"} <= graph.keys() and "folder" in graph["imagenet"]
    order = list(TopologicalSorter(graph).static_order())  # raises graphlib.CycleError on a cycle
    assert order.index("sets") < order.index("folder") < order.index("probe") < order.index("__init__")


def test_check_files_names_what_a_reader_would_miss_without_reading(tmp_path, fmnist_root, cifar10_root):
    def missing(name, root, test, fragment):
        with pytest.raises(NGEError, match=fragment) as e:
            check_files(name, str(root), test)
        assert "\n" not in str(e.value)

    check_files("synthetic", None, True)
    cifar = cifar10_root / "cifar-10-batches-py"
    (cifar / "data_batch_3").write_bytes(b"junk")  # there but broken: found when read, not here
    check_files("cifar10", str(cifar10_root), False)
    (cifar / "test_batch").unlink()  # search loads the test batch too
    missing("cifar10", cifar10_root, False, f"missing CIFAR batch file {cifar / 'test_batch'}")
    missing("cifar100", tmp_path / "nowhere", False, "does not exist")
    check_files("fashion_mnist", str(fmnist_root), False)
    (fmnist_root / "t10k-labels-idx1-ubyte.gz").unlink()
    missing("fashion_mnist", fmnist_root, False, "missing t10k-labels-idx1-ubyte.gz")
    missing("fashion_mnist", tmp_path / "nowhere", False, "Fashion-MNIST not found")

    folder = write_synthetic_folder(tmp_path / "folder")
    for p in (folder / "test" / "red").iterdir():
        p.unlink()
    check_files("folder", str(folder), False)  # search reads train/ only
    missing("folder", folder, True, f"class folder {folder / 'test' / 'red'} holds no")
    for p in (folder / "train" / "blue").iterdir():
        p.unlink()
    missing("folder", folder, False, f"class folder {folder / 'train' / 'blue'} holds no")
    inet = write_synthetic_imagefolder(tmp_path / "inet")
    check_files("imagenet", str(inet), False)
    (inet / "val" / "n00000001").rename(inet / "val" / "n00000009")
    missing("imagenet", inet, False, "differ")
