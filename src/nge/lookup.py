"""`nge lookup`: the NAS-Bench-201 ground truth of a cell, from the table shipped with nge.

    nge lookup CELL_STRING | GENOTYPE.json | RUN | random:K [--json]
    python -m nge.lookup ...    (the same, without the `nge` command)

Prints the cell's 200-epoch test accuracy on CIFAR-10, CIFAR-100 and ImageNet16-120, its rank among
the 15,625 cells (1 = best, ties share the smallest rank) and the gap to the best cell, in points.
`random:K` is `nge.spaces.nb201.random_genotype(K)`; RUN is a directory holding genotype.json.
"""

from __future__ import annotations

import argparse
import json
import sys

from nge.errors import NGEError


def resolve_nb201(spec: str):
    """An `Nb201Genotype` from a cell string, random:K, a genotype.json of the nb201 space or a directory holding
    one (`nge.genotypes.resolve_genotype` in the nb201 space); a DARTS-space genotype is refused."""
    from nge.genotypes import BUILTIN_GENOTYPES, resolve_genotype
    from nge.spaces.nb201 import NAME, Nb201Genotype

    if spec.strip() in BUILTIN_GENOTYPES:
        raise NGEError(f"{spec.strip()} is a DARTS-space genotype; nge lookup knows only NAS-Bench-201 cells ({NAME})")
    g = resolve_genotype(spec.strip(), space=NAME)
    if not isinstance(g, Nb201Genotype):
        raise NGEError(f"{spec} is a DARTS-space genotype; nge lookup knows only NAS-Bench-201 cells ({NAME})")
    return g


def lookup_result(spec: str) -> dict:
    """`nb201_table.lookup` of the resolved cell, with the argument as given ("source")."""
    from nge.spaces.nb201_table import lookup

    return {"source": spec, **lookup(resolve_nb201(spec))}


def format_result(r: dict) -> str:
    from nge.spaces.nb201_table import DATASETS, N_CELLS

    lines = [f"cell   {r['cell']}", f"index  {r['index']} (of {N_CELLS})",
             f"{'data set':<16}{'accuracy':>10}{'rank':>8}{'optimum':>10}{'gap':>8}"]
    lines += [f"{ds:<16}{r[ds]['accuracy']:>10.2f}{r[ds]['rank']:>8}{r[ds]['optimum']:>10.2f}{r[ds]['gap']:>8.2f}"
              for ds in DATASETS]
    lines.append("test accuracy (%) after 200 epochs (NAS-Bench-201); rank 1 = best of 15,625, ties share a rank; "
                 "gap = optimum - accuracy")
    return "\n".join(lines)


def lookup_main(args: argparse.Namespace) -> int:
    r = lookup_result(args.cell)
    print(json.dumps(r) if args.json else format_result(r))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cell", metavar="GENOTYPE_OR_RUN",
                   help="a NAS-Bench-201 cell string (quote it), a genotype.json of the nb201 space, a run directory "
                        "holding one, or random:K")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds `lookup` to the `nge` command's subparsers."""
    p = subparsers.add_parser("lookup", help="NAS-Bench-201 ground truth (accuracy, rank) of a cell")
    add_arguments(p)
    p.set_defaults(func=lookup_main)
    return p


def main(argv: list[str] | None = None) -> int:
    from nge.cli import module_main

    return module_main("nge lookup", "NAS-Bench-201 ground truth of a cell.", add_arguments, lookup_main, argv)


if __name__ == "__main__":
    sys.exit(main())
