"""The shipped NAS-Bench-201 table (`nge.spaces.nb201_table`) and `nge lookup` (`nge.lookup`)."""

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from nge.errors import NGEError
from nge.lookup import lookup_main
from nge.spaces.nb201 import PRIMITIVES, Nb201Genotype, random_genotype
from nge.spaces.nb201_table import (
    COLUMNS,
    DATASETS,
    N_CELLS,
    SOURCE_COLUMNS,
    all_cell_strings,
    cell_index,
    index_genotype,
    index_to_ops,
    load_table,
    lookup,
    ops_to_index,
    optimum,
    read_rows,
    uniform_mean,
    uniform_std,
)

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
# CI has the shared benchmarks beside the clone; users do not
SOURCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "nb201" / "nats-tss-test-acc-200ep.csv"


def test_published_values():
    assert round(lookup(BEST)["cifar10"]["accuracy"], 2) == 94.37
    assert lookup(BEST)["cifar10"]["rank"] == 1 and lookup(BEST)["cifar10"]["gap"] == 0.0
    assert round(lookup(ALL_SKIP)["cifar10"]["accuracy"], 2) == 54.30
    assert round(lookup(RESNET)["cifar10"]["accuracy"], 2) == 93.91
    assert round(optimum("cifar10")["accuracy"], 2) == 94.37


def test_table_shape_ranks_and_uniform_moments():
    t, rows = load_table(), read_rows()
    assert len(set(all_cell_strings())) == N_CELLS == 15_625 == len({r["cell"] for r in rows})
    for ds in DATASETS:
        acc, rank = t.acc[ds], t.rank[ds]
        assert acc.shape == rank.shape == (N_CELLS,) and np.all((acc >= 0) & (acc <= 100))
        # 'min' ranks: 1 + the number of cells strictly better, computed the slow way for a sample
        for i in (0, 3906, 11667, 15_624):
            assert rank[i] == 1 + int((acc > acc[i]).sum())
        assert rank.min() == 1 and np.all(np.diff(rank[np.argsort(-acc, kind="stable")]) >= 0)
        assert uniform_mean(ds) == pytest.approx(float(np.mean([float(r[ds]) for r in rows])), abs=1e-9)
        assert uniform_std(ds) == pytest.approx(float(np.std(acc)), abs=1e-12)
    assert round(uniform_mean("cifar10"), 2) == 87.06  # as the shared README reports
    # two cells tie at the CIFAR-10 optimum: both rank 1
    assert int((t.rank["cifar10"] == 1).sum()) == 2


def test_index_string_round_trip_for_every_cell():
    strings = all_cell_strings()
    ops = index_to_ops(np.arange(N_CELLS))
    assert np.array_equal(ops_to_index(ops), np.arange(N_CELLS))
    for i in range(N_CELLS):
        g = Nb201Genotype.from_str(strings[i])
        assert cell_index(g) == i and cell_index(strings[i]) == i and index_genotype(i) == g
        assert tuple(PRIMITIVES[k] for k in ops[i]) == g.ops
    assert cell_index("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|") == 0
    assert cell_index(RESNET) == 3 * 5**5 + 0 * 5**4 + 3 * 5**3 + 1 * 5**2 + 0 * 5 + 1  # edge 0 most significant


def test_loading_is_cached_and_fast():
    load_table.cache_clear()
    start = time.perf_counter()
    load_table()
    assert time.perf_counter() - start < 1.0
    assert load_table() is load_table()


@pytest.mark.parametrize("bad", ["", "|nor_conv_3x3~0|", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                 "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", 15_625, -1, 2.5])
def test_bad_cells_are_one_line_errors(bad):
    with pytest.raises(NGEError) as e:
        lookup(bad)
    assert "\n" not in str(e.value)
    if isinstance(bad, str) and bad:
        assert bad in str(e.value)


def test_unknown_dataset_is_an_error():
    with pytest.raises(NGEError, match="imagenet16-120"):
        uniform_mean("imagenet")


@pytest.mark.skipif(not SOURCE.is_file(), reason="the shared benchmark CSV is not beside the repository")
def test_shipped_table_equals_the_shared_csv():
    with open(SOURCE, newline="") as f:
        source = {r["ArchitectureString"]: r for r in csv.DictReader(f)}
    shipped = read_rows()
    assert len(source) == len(shipped) == N_CELLS
    for row in shipped:
        src = source[row["cell"]]
        for col in COLUMNS:  # the text, so every digit of precision
            assert row[col] == src[SOURCE_COLUMNS[col]]
    t = load_table()
    i = cell_index(BEST)
    assert t.acc["cifar10"][i] == float(source[BEST]["CIFAR10TestAccuracy200Epochs"])


def _run(capsys, cell, as_json=False):
    rc = lookup_main(argparse.Namespace(cell=cell, json=as_json))
    return rc, capsys.readouterr().out


def test_lookup_command_cell_string_and_json(capsys):
    rc, out = _run(capsys, ALL_SKIP)
    assert rc == 0 and "54.30" in out and "15231" in out  # all-skip's CIFAR-10 rank
    rc, out = _run(capsys, BEST, as_json=True)
    r = json.loads(out)
    assert out.count("\n") == 1 and r["cell"] == BEST and r["cifar10"]["rank"] == 1
    assert set(r) >= {"cell", "index", *DATASETS} and r["cifar10"]["gap"] == 0.0


def test_lookup_command_files_runs_and_random(tmp_path, capsys):
    random_genotype(7).save(tmp_path / "genotype.json")
    want = lookup(random_genotype(7))
    for spec in (str(tmp_path), str(tmp_path / "genotype.json"), "random:7"):
        rc, out = _run(capsys, spec, as_json=True)
        assert rc == 0 and json.loads(out)["cifar10"] == want["cifar10"]


def test_lookup_command_bad_input(tmp_path):
    from nge.genotypes import DARTS_V2

    DARTS_V2.save(tmp_path / "darts.json")
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    for spec, words in ((str(tmp_path / "darts.json"), "DARTS"), ("DARTS_V2", "DARTS"),
                        (str(tmp_path / "junk.json"), "not valid JSON"), (str(tmp_path / "empty"), "without a genotype.json"),
                        ("random:x", "random:SEED"),
                        ("no-such-thing", "no-such-thing")):
        with pytest.raises(NGEError, match=words):
            lookup_main(argparse.Namespace(cell=spec, json=False))


def test_lookup_module_main_prints_one_line(capsys):
    from nge.lookup import main

    assert main(["|bad~0|+"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nge lookup: error:") and err.count("\n") == 1 and "|bad~0|+" in err


def test_nge_lookup_through_the_cli(capsys):
    from nge.cli import main

    assert main(["lookup", BEST, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cifar10"]["rank"] == 1
    assert main(["lookup", "|nor_conv_3x3~0|+oops"]) == 2  # nge's exit status for NGEError
    err = capsys.readouterr().err
    assert err.startswith("nge: error:") and err.count("\n") == 1 and "oops" in err
