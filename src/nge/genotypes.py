"""Genotypes by name: the published ones as plain data (validated through `Genotype.from_dict`),
and `resolve_genotype`, which every command uses to turn a --genotype argument into a genotype.

DARTS_V1 / DARTS_V2: first- and second-order DARTS cells (Liu et al. 2019, `genotypes.py`).
"""

from __future__ import annotations

from pathlib import Path

from nge.errors import NGEError
from nge.space import Genotype, random_genotype

DARTS_V1 = Genotype.from_dict(
    {
        "normal": [
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("skip_connect", 2),
        ],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("avg_pool_3x3", 0),
        ],
        "reduce_concat": [2, 3, 4, 5],
    }
)

DARTS_V2 = Genotype.from_dict(
    {
        "normal": [
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1),
            ("skip_connect", 0),
            ("skip_connect", 0),
            ("dil_conv_3x3", 2),
        ],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [
            ("max_pool_3x3", 0),
            ("max_pool_3x3", 1),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
            ("max_pool_3x3", 0),
            ("skip_connect", 2),
            ("skip_connect", 2),
            ("max_pool_3x3", 1),
        ],
        "reduce_concat": [2, 3, 4, 5],
    }
)

BUILTIN_GENOTYPES: dict[str, Genotype] = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2}


def resolve_genotype(spec: str | Genotype) -> Genotype:
    """A built-in name, `random:SEED` (a uniform draw from the search space), a genotype.json file,
    or a search run directory holding one (a Genotype is returned as it is)."""
    if isinstance(spec, Genotype):
        return spec
    if spec in BUILTIN_GENOTYPES:
        return BUILTIN_GENOTYPES[spec]
    if spec.startswith("random:"):
        seed = spec[len("random:"):]
        if not seed.isdigit():
            raise NGEError(f"genotype '{spec}': random:SEED needs a non-negative integer seed, e.g. random:0")
        return random_genotype(int(seed))
    path = Path(spec)
    if path.is_dir():
        path = path / "genotype.json"
        if not path.is_file():
            raise NGEError(f"{spec} is a directory without a genotype.json (is it a search run directory?)")
    if path.is_file():
        return Genotype.load(path)
    raise NGEError(f"genotype '{spec}' is not a file, a search run directory, random:SEED or a built-in name "
                   f"({', '.join(BUILTIN_GENOTYPES)})")
