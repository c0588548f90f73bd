"""nge: neural architecture search with Neural Graph Embedding (Li, Gong, Zhu, AAAI 2020).

From Python: `nge.search(...)`, `nge.train(...)`, `nge.fit(...)`, `nge.load(...)` (see `nge.api`). They are bound on
first use, so `import nge` stays light for the command line; no submodule shares their names.
"""

__version__ = "0.1.0"

_API = ("search", "train", "fit", "load", "Result")


def __getattr__(name: str):
    if name in _API:
        from nge import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    if name in ("NGEError", "Genotype"):
        from nge.errors import NGEError
        from nge.space import Genotype

        return {"NGEError": NGEError, "Genotype": Genotype}[name]
    raise AttributeError(f"module 'nge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, "NGEError", "Genotype"])
