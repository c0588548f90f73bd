"""Genotypes by name: the published ones as plain data (validated through `Genotype.from_dict`),
and `resolve_genotype`, which every command uses to turn a --genotype argument into a genotype.

DARTS_V1 / DARTS_V2: first- and second-order DARTS cells (Liu et al. 2019, `genotypes.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

from nge.errors import NGEError
from nge.space import Genotype

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


def resolve_genotype(spec, space: str = "darts"):
    """A built-in name, `random:SEED` (a uniform draw from `space`), a NAS-Bench-201 cell string
    (`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`), a genotype.json file of either space, or a search run
    directory holding one (a genotype is returned as it is)."""
    from nge.spaces import get_space, nb201

    if not isinstance(spec, str):
        return spec
    if spec in BUILTIN_GENOTYPES:
        return BUILTIN_GENOTYPES[spec]
    if spec.startswith("random:"):
        seed = spec[len("random:"):]
        if not seed.isdigit():
            raise NGEError(f"genotype '{spec}': random:SEED needs a non-negative integer seed, e.g. random:0")
        return get_space(space).random_genotype(int(seed))
    if nb201.looks_like_cell_string(spec):
        return nb201.Nb201Genotype.from_str(spec)
    path = Path(spec)
    if path.is_dir():
        path = path / "genotype.json"
        if not path.is_file():
            raise NGEError(f"{spec} is a directory without a genotype.json (is it a search run directory?)")
    if path.is_file():
        return load_genotype(path)
    raise NGEError(f"genotype '{spec}' is not a file, a search run directory, random:SEED, a NAS-Bench-201 cell string "
                   f"or a built-in name ({', '.join(BUILTIN_GENOTYPES)})")


def load_genotype(path: str | Path):
    """A genotype.json of either space (`nge.spaces.genotype_from_dict`)."""
    from nge.spaces import genotype_from_dict

    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise NGEError(f"cannot read genotype file {path}: {e}") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise NGEError(f"{path}: genotype is not valid JSON ({e})") from None
    try:
        return genotype_from_dict(d)
    except NGEError as e:
        raise NGEError(f"{path}: {e}") from None
