"""Published genotypes, as plain data (validated through `Genotype.from_dict`).

DARTS_V1 / DARTS_V2: first- and second-order DARTS cells (Liu et al. 2019, `genotypes.py`).
"""

from __future__ import annotations

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
