"""Typed configuration: dataclass schemas, presets as YAML files, dotted KEY=VALUE overrides.

Each command has its own schema with only the keys it reads. `load_config` merges schema defaults,
a preset and overrides; OmegaConf checks keys and types, the schema's validator checks values, and
an override that has no effect in this run (e.g. `data.resize` without `data.name=imagenet`) is
refused.
Every failure is an NGEError with a one-line message.

Settings that survive new keys: a saved configuration (a run's config.yaml or checkpoint, an ablation
line's settings) that lacks a key is read as holding the key's schema default (`schema_defaults`), so a
new key at a default that reproduces the old behaviour changes nothing. The 12-hex fingerprints of the
older ablation tables (nge.ablate.fingerprint) hash the settings of their time: a fingerprint is
compared with the hash of today's settings after the keys of `KEYS_SINCE_FINGERPRINTS` (every key
added since, in this one place) are dropped where they hold their schema default.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path, PurePath
from typing import Any, TypeVar

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nge.arch import ARCH_PARAMS
from nge.data.sets import IMAGENET_SIZE, MIN_IMAGE_SIZE
from nge.errors import NGEError
from nge.spaces import SPACES
from nge.supernet import CHECKPOINT_MODES


class DataName(StrEnum):
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    imagenet = "imagenet"  # ImageFolder layout, decoded by DataLoader workers (training only)
    folder = "folder"  # the user's own images: root/train/<class>/*, root/test/<class>/* (nge.data.folder)
    synthetic = "synthetic"


class Alternation(StrEnum):
    epoch = "epoch"  # NGE (Algorithm 1): all training batches, then all validation batches
    batch = "batch"  # DARTS: one validation step per training step


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Schedule(StrEnum):
    cosine = "cosine"  # per epoch, to lr_min after the last epoch (DARTS)
    linear = "linear"  # per step: linear warm-up over warmup_epochs, then linear decay to 0 (Goyal et al.)


class NonFinitePolicy(StrEnum):
    stop = "stop"  # stop the run, keeping the last good checkpoint
    skip = "skip"  # skip the update of a step whose loss or gradient is not finite


@dataclass
class SyntheticConfig:
    n_train: int = 512
    n_test: int = 256
    num_classes: int = 10
    channels: int = 3
    size: int = 32


@dataclass
class DataConfig:
    """Data keys common to search and training."""

    name: DataName = DataName.fashion_mnist
    root: str | None = None  # None: the default location where one exists (Fashion-MNIST); unused for synthetic
    # use at most this many training-set images (before the split): one seed's search and training keep the
    # same ones (nge.data.limit_indices)
    limit: int | None = None
    batch_size: int = 64
    crop_pad: int = 4
    flip: bool = True
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # data.name=synthetic only
    # imagenet and folder only. None: 224 for imagenet; for folder the shorter side of the first
    # training image (sorted class folders, then sorted file names)
    image_size: int | None = None
    channels: int | None = None  # folder only: 1 or 3; None: 1 if every training image is grayscale, else 3


@dataclass
class SearchDataConfig(DataConfig):
    train_portion: float = 0.5  # share of the training set used to train weights; the rest is val


@dataclass
class TrainDataConfig(DataConfig):
    cutout: int = 0  # cutout square side in pixels; 0 disables
    workers: int = 4  # DataLoader processes decoding images (imagenet, and a folder set too large for memory)
    resize: int = 256  # shorter side before the test centre crop (data.name=imagenet only)
    # Training-set images held out as a validation split, measured after every epoch (val_acc) so
    # that cells are compared without the test split. The same images for every seed, never among
    # the (data.limit) training images. 0: none. Data held in memory only (not imagenet or folder).
    val: int = 0


@dataclass
class RuntimeConfig:
    seed: int = 0
    device: Device = Device.auto
    threads: int | None = None  # torch intra-op threads; None: torch's default
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    progress: bool = True
    nonfinite: NonFinitePolicy = NonFinitePolicy.stop
    tensorboard: bool = False  # TensorBoard event files in RUN/tensorboard (needs the extra nge[tensorboard])


# model.checkpoint: what the supernet recomputes in the backward pass: auto (early on the CPU, none
# on a GPU: `supernet.recompute_mode`), or one of the supernet's modes (none, early, edge, cell)
Recompute = StrEnum("Recompute", {m: m for m in ("auto", *CHECKPOINT_MODES)})
# search.arch.name: the architecture parameterisation, one of the registry `nge.arch.ARCH_PARAMS`
ArchName = StrEnum("ArchName", {name: name for name in ARCH_PARAMS})


@dataclass
class SupernetConfig:
    C: int = 16
    layers: int = 8
    stem_multiplier: int = 3
    checkpoint: Recompute = Recompute("auto")  # recompute activations in the backward pass (less memory, slower)


@dataclass
class WeightOptimConfig:
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # 0 disables; not in the paper, DARTS uses 5


class ArchInit(StrEnum):
    uniform = "uniform"  # the layer producing the logits ~ N(0, 1e-3^2): P starts uniform, as DARTS's alphas
    normal = "normal"  # that layer at standard scale (N(0, 1/fan_in); alphas N(0, 1)): every edge starts different


class CellParams(StrEnum):
    """search.arch.cells: how a node-embedding parameterisation (nge, plain, rnn) parameterises the cell
    types (normal, reduce). With one cell type (search.space=nb201) all three are the same; docs/paper.md
    section 2 says which the paper supports."""

    shared = "shared"  # each type its own X, all X_t[v, v] = 1 (the same start); one GCN, edge MLP and op FC
    distinct = "distinct"  # as shared, but type k's node v starts at row k |V| + v of the D x D identity
    separate = "separate"  # as shared, but each type its own GCN (Plain: projection; RNN: and GRU), edge MLP and op FC


@dataclass
class ArchConfig:
    """The architecture parameterisation ("arch": what produces P), its optimiser (docs/paper.md
    section 3) and the search remedies that act on P.

    The remedies default to off (the paper's search); each works with every parameterisation."""

    name: ArchName = ArchName.nge
    lr: float = 6e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float | None = None  # Adam's (coupled); None: the strategy's, `ARCH_WEIGHT_DECAY`, set on load
    # The paper says only "randomly initialised in the normal distribution"; both readings are offered.
    init: ArchInit = ArchInit.uniform
    # Share kept of the logits' mean over the edges of a cell (per op), the offset that every edge of
    # the cell shares: 1 = P as the parameterisation gives it; 0 = only how the edges differ decides,
    # so no op can lead on every edge. NGE's edge MLP and op FC are shared by all edges and their edge
    # embeddings nearly parallel, so their updates move every edge's logits together. nge's own
    # remedy (no paper has it); docs/results/README.md, "Search quality", gives the diagnosis and numbers.
    shared_offset: float = 1.0
    # A learned per-op bias added to the logits after shared_offset: a parameter of its own (2 x n_ops),
    # apart from the edge-specific part, so that with shared_offset=0 the search can still prefer an op
    # on every edge, but only through 14 numbers it must learn from the validation loss.
    op_bias: bool = False
    # How the cell types are parameterised (CellParams): shared (the default, as before the key existed),
    # distinct initial X, or separate layers. Has no effect with name=darts (free alphas share nothing).
    cells: CellParams = CellParams.shared


class Strategy(StrEnum):
    gd = "gd"  # gradient descent on P through the mixed supernet (the paper's search)
    rl = "rl"  # REINFORCE with the parameterisation as the policy over cells
    ea = "ea"  # regularised evolution with mutations proposed by the parameterisation


# search.arch.weight_decay where it is unset: the paper's 1e-3 for gd; 0 for rl and ea, whose REINFORCE
# gradients are small and change sign from step to step, so that Adam's coupled decay (always towards
# zero) drives the logits to zero and the chosen cell becomes a tie-break (docs/design.md, "Search
# strategies"). One entry per strategy.
ARCH_WEIGHT_DECAY = {Strategy.gd: 1e-3, Strategy.rl: 0.0, Strategy.ea: 0.0}


class Selection(StrEnum):
    argmax = "argmax"  # each node's two edges with the largest max P, each with its argmax op (the paper's)
    # DARTS-PT (Wang et al. 2021): an op's (an edge's) importance is how much the supernet's validation
    # loss rises when it is masked out of P; keep the most important (nge.strategies.perturbation_importance)
    perturbation = "perturbation"


class MutationKind(StrEnum):
    embedding = "embedding"  # drawn from the parameterisation's distributions, which learn from each child
    uniform = "uniform"  # uniform slot, op and input (the baseline); the parameterisation is not used


@dataclass
class RLConfig:
    """search.strategy=rl (nge.strategies.Reinforce)."""

    entropy_weight: float = 1e-3  # beta: the bonus on the policy's entropy
    baseline_decay: float = 0.9  # the reward baseline's moving-average decay


@dataclass
class EAConfig:
    """search.strategy=ea (nge.strategies.Evolution): regularised evolution (Real et al. 2019)."""

    population: int = 20
    tournament: int = 5  # members drawn, with replacement, for each tournament
    mutation: MutationKind = MutationKind.embedding
    rank_batches: int = 4  # the epoch's first validation batches, on which every fitness of the epoch is measured
    # the bonus on the mutation distribution's entropy (embedding mutations only); 1e-3 did not stop a
    # collapse, 1e-2 did (docs/design.md, "Why the mutation distribution has an entropy bonus")
    entropy_weight: float = 1e-2


# search.space: the cell space searched, one of the registry `nge.spaces.SPACES`
SpaceName = StrEnum("SpaceName", {name: name for name in SPACES})


@dataclass
class SearchConfig:
    # darts: the paper's cell (14 edges, 7 ops, normal and reduction cells); nb201: NAS-Bench-201's
    # (6 edges, 5 ops, one cell type; model.layers counts its cells, 3 stages of N = layers // 3; model.C the first width)
    space: SpaceName = SpaceName("darts")
    epochs: int = 25
    strategy: Strategy = Strategy.gd  # see nge.strategies.STRATEGIES and docs/paper.md section 6
    alternation: Alternation = Alternation.epoch  # gd only
    # weights only for the first N epochs: no arch phase (gd), no policy or population updates (rl, ea);
    # PC-DARTS's warm-up, so that weight-free ops do not win before the convolutions have learned
    warmup_epochs: int = 0
    select: Selection = Selection.argmax  # how gd's final P becomes a cell
    select_batches: int = 4  # perturbation: the validation batches every masked P is scored on
    # perturbation: a finished gd search's run directory (same settings but the select_* keys); its supernet
    # and P are loaded and only the selection runs (nge.searching.load_finished_search)
    select_from: str | None = None
    weights: WeightOptimConfig = field(default_factory=WeightOptimConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    ea: EAConfig = field(default_factory=EAConfig)


@dataclass
class SearchRunConfig:
    preset: str = MISSING
    data: SearchDataConfig = field(default_factory=SearchDataConfig)
    model: SupernetConfig = field(default_factory=SupernetConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


T = TypeVar("T")


def available_presets(kind: str) -> list[str]:
    folder = resources.files("nge") / "presets" / kind
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


# a key shown as it is: dotted names (and list indices); any other key is shown quoted (repr)
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[\d+\])*(\.[A-Za-z_][A-Za-z0-9_]*(\[\d+\])*)*")


def _first_line(text: str, fallback: str) -> str:
    """The first non-blank line of `text` (by str.splitlines' line breaks), else `fallback`."""
    return next((line.strip() for line in text.splitlines() if line.strip()), fallback)


def _one_line(e: OmegaConfBaseException) -> str:
    """OmegaConf's error in one line, prefixed with its key (quoted where it is not a plain dotted key)."""
    key, text = getattr(e, "full_key", None), str(e)
    shown = key if not key or _PLAIN_KEY.fullmatch(key) else repr(key)
    if shown != key:  # OmegaConf quotes the key as 'KEY': its own line breaks must not cut the message
        text = text.replace(f"'{key}'", shown)
    msg = _first_line(text, type(e).__name__)
    if shown and shown not in msg:
        msg = f"{shown}: {msg}"
    return " ".join(msg.splitlines())


def _container_mismatch(hint: Any, value: Any, key: str) -> str | None:
    """The first key where `value` gives a list for a mapping of the schema type `hint`, or a mapping for a
    list, as a message; None where there is none."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        return next((m for h in typing.get_args(hint) if h is not type(None)
                     if (m := _container_mismatch(h, value, key))), None)
    wants_list = origin is list
    wants_map = origin is dict or dataclasses.is_dataclass(hint)
    if wants_list and isinstance(value, dict):
        return f"{key} must be a list [...], not a mapping; a list is given whole, not item by item"
    if wants_map and isinstance(value, list):
        return f"{key} must be a mapping (key: value), not a list"
    if wants_list and isinstance(value, list):
        (item,) = typing.get_args(hint) or (Any,)
        return next((m for i, v in enumerate(value) if (m := _container_mismatch(item, v, f"{key}[{i}]"))), None)
    if isinstance(value, dict) and origin is dict:
        item = typing.get_args(hint)[1] if typing.get_args(hint) else Any
        return next((m for k, v in value.items() if (m := _container_mismatch(item, v, f"{key}.{k}"))), None)
    if isinstance(value, dict) and dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return next((m for k, v in value.items() if k in hints
                     if (m := _container_mismatch(hints[k], v, f"{key}.{k}" if key else str(k)))), None)
    return None


def _mismatch_message(schema: type, text: str, preset: str, overrides: list[str] | dict[str, Any], e: TypeError) -> str:
    """OmegaConf's TypeError on a merge, in one line naming the key and where it was given."""
    sources = [(yaml.safe_load(text), f"preset {preset}")]
    if isinstance(overrides, dict):
        sources.append((_nested(overrides)[0], "the overrides"))
    else:
        sources += [(OmegaConf.to_container(OmegaConf.from_dotlist([o])), f"override {o}") for o in overrides]
    for data, where in sources:
        if (msg := _container_mismatch(schema, data or {}, "")) is not None:
            return f"{msg} ({where})"
    return _first_line(str(e), type(e).__name__)


def _unparsable(preset: str, overrides: list[str] | dict[str, Any], e: yaml.YAMLError) -> str:
    """Which override (else the preset) is not valid YAML, in one line."""
    for item in overrides if isinstance(overrides, list) else ():
        try:
            OmegaConf.from_dotlist([item])
        except yaml.YAMLError as err:
            return f"the value of override {item!r} is not valid YAML ({_first_line(str(err), type(err).__name__)})"
        except OmegaConfBaseException:
            pass  # not a YAML problem
    return f"preset {preset} is not valid YAML ({_first_line(str(e), type(e).__name__)})"


def preset_name(preset: str) -> str:
    """A preset's short name: its own name, or a preset file's stem (for default run directories)."""
    return Path(preset).stem if is_preset_file(preset) else preset


def is_preset_file(preset: str) -> bool:
    return preset.endswith((".yaml", ".yml"))


def _preset_text(kind: str, preset: str) -> str:
    """A built-in preset's YAML, or (a name ending in .yaml or .yml) a preset file's."""
    if is_preset_file(preset):
        path = Path(preset).expanduser()
        if not path.is_file():
            raise NGEError(f"preset file {preset} does not exist")
        text = path.read_text()
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            detail = " ".join(str(e).split())[:160]
            raise NGEError(f"bad configuration: preset file {preset} is not valid YAML ({detail})") from None
        if not isinstance(data, dict | None):
            raise NGEError(f"bad configuration: preset file {preset} must hold a mapping of keys, not a {type(data).__name__}")
        return text
    names = available_presets(kind)
    if preset not in names:
        raise NGEError(f"unknown {kind} preset '{preset}' (available: {', '.join(names)}; or a FILE.yaml)")
    return (resources.files("nge") / "presets" / kind / f"{preset}.yaml").read_text()


def _nested(overrides: dict[str, Any]) -> tuple[dict, list[str]]:
    """{dotted key or section: value} -> (a nested dict for OmegaConf, the dotted keys). Values keep
    their Python types (a path is its string; "${" is escaped, so no string is an interpolation)."""
    out: dict = {}
    keys: list[str] = []

    def plain(v: Any) -> Any:
        if isinstance(v, PurePath):
            v = str(v)
        if isinstance(v, str):
            return v.replace("${", "\\${")
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    def put(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                put(f"{key}.{k}", v)
            return
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise NGEError(f"bad configuration: override {key} is inside {part}, which is given a value")
        if last in node:
            raise NGEError(f"bad configuration: {key} is overridden twice")
        node[last] = plain(value)
        keys.append(key)

    for key, value in overrides.items():
        if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
            raise NGEError(f"bad configuration: override key {key!r} is not a dotted key (e.g. search.epochs)")
        put(key, value)
    return out, keys


def load_config(schema: type[T], kind: str, preset: str, overrides: list[str] | dict[str, Any]) -> T:
    """Schema defaults <- the preset (a name in presets/<kind>/, or a FILE.yaml) <- overrides: a
    typed, validated object. Overrides are KEY=VALUE strings (values parsed as YAML, as on the
    command line) or a dict {dotted key or section: value} whose values keep their Python types."""
    text = _preset_text(kind, preset)
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    if isinstance(overrides, dict):
        nested, keys = _nested(overrides)
    else:
        for item in overrides:
            if "=" not in item or item.startswith("="):
                raise NGEError(f"override {item!r} is not KEY=VALUE (e.g. search.epochs=10)")
        nested, keys = None, [item.split("=", 1)[0].strip() for item in overrides]
    try:
        cfg = OmegaConf.merge(base, OmegaConf.create(text), {"preset": preset})
        if nested:
            cfg = OmegaConf.merge(cfg, nested)
        elif overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise NGEError(f"bad configuration: {_one_line(e)}") from None
    except yaml.YAMLError as e:  # an override value that is not valid YAML
        raise NGEError(f"bad configuration: {_unparsable(preset, overrides, e)}") from None
    except TypeError as e:  # OmegaConf merging a list into a mapping or back: it names no key
        raise NGEError(f"bad configuration: {_mismatch_message(schema, text, preset, overrides, e)}") from None
    _resolve(obj)
    validate(obj)
    _refuse_inert(obj, keys)
    if isinstance(obj, AblateConfig) and is_preset_file(preset):
        _relative_presets(obj, Path(preset).expanduser().resolve().parent)
    return obj


def _relative_presets(acfg: AblateConfig, folder: Path) -> None:
    """In an ablation preset file, preset files named relative to it are found next to it."""
    def near(p: str | None) -> str | None:
        if p and is_preset_file(p) and not Path(p).expanduser().is_absolute() and (folder / p).is_file():
            return str(folder / p)
        return p

    acfg.search_preset = near(acfg.search_preset)
    acfg.train_presets = [near(p) for p in acfg.train_presets]
    for row in acfg.rows:
        row.search_preset = near(row.search_preset)
    for tr in acfg.trainings:
        tr.preset = near(tr.preset)


def _resolve(cfg: Any) -> None:
    """Settings whose default depends on other settings, fixed on load (config.yaml holds the values)."""
    if isinstance(cfg, SearchRunConfig) and cfg.search.arch.weight_decay is None:
        cfg.search.arch.weight_decay = ARCH_WEIGHT_DECAY[cfg.search.strategy]


def _inert(cfg: Any) -> dict[str, str]:
    """Keys (or sections) that have no effect in this configuration, with the reason."""
    out = {}
    d = getattr(cfg, "data", None)
    if isinstance(d, DataConfig):
        if d.name != DataName.synthetic:
            out["data.synthetic"] = f"with data.name={d.name} (only with data.name=synthetic)"
        else:
            out["data.root"] = "with data.name=synthetic"
        if d.name not in (DataName.imagenet, DataName.folder):
            out["data.image_size"] = f"with data.name={d.name} (only with data.name=imagenet or folder)"
        if d.name != DataName.folder:
            out["data.channels"] = f"with data.name={d.name} (only with data.name=folder)"
    if isinstance(d, TrainDataConfig):
        if d.name not in (DataName.imagenet, DataName.folder):
            out["data.workers"] = f"with data.name={d.name} (only with data.name=imagenet or folder)"
        if d.name != DataName.imagenet:
            out["data.resize"] = f"with data.name={d.name} (only with data.name=imagenet)"
        else:
            out["model.stem_multiplier"] = "with data.name=imagenet (the ImageNet network has its own stem)"
        if not cfg.model.auxiliary:
            out["model.auxiliary_weight"] = "with model.auxiliary=false"
        if cfg.train.schedule == Schedule.linear:
            out["train.lr_min"] = "with train.schedule=linear (it decays to 0)"
    if isinstance(cfg, SearchRunConfig):
        s = cfg.search.strategy
        for key, only in (("search.alternation", Strategy.gd), ("search.rl", Strategy.rl), ("search.ea", Strategy.ea)):
            if s != only:
                out[key] = f"with search.strategy={s} (only with search.strategy={only})"
        if s == Strategy.ea and cfg.search.ea.mutation == MutationKind.uniform:
            out["search.ea.entropy_weight"] = "with search.ea.mutation=uniform (only with embedding mutations)"
        if cfg.search.arch.name == "darts":
            out["search.arch.cells"] = "with search.arch.name=darts (free alphas share nothing between cell types)"
        if cfg.search.space != "darts":
            for key in ("model.stem_multiplier", "model.checkpoint"):
                out[key] = f"with search.space={cfg.search.space} (the darts supernet's)"
    return out


def inert_keys(cfg: Any) -> tuple[str, ...]:
    """The keys and sections that have no effect in `cfg`: a resume may change them."""
    return tuple(_inert(cfg))


def _refuse_inert(cfg: Any, keys: list[str]) -> None:
    """An override that would change nothing is a mistake worth a message, not silence."""
    inert = _inert(cfg)
    for key in keys:
        for prefix, why in inert.items():
            if key == prefix or key.startswith(prefix + "."):
                raise NGEError(f"bad configuration: {key} has no effect {why}; drop it")


def route_overrides(items: list[str]) -> dict[str, list[str]]:
    """{"search": [...], "train": [...]}: every KEY=VALUE to each configuration (SearchRunConfig,
    TrainRunConfig) whose schema has its key (`model.C` to both, `model.checkpoint` to the search); an
    item that is not KEY=VALUE with a key of either is a one-line error (commands with both phases:
    nge fit, nge bench)."""
    out: dict[str, list[str]] = {"search": [], "train": []}
    for item in items:
        key = item.split("=", 1)[0].strip()
        owners = [k for k, schema in (("search", SearchRunConfig), ("train", TrainRunConfig))
                  if "=" in item and key and has_key(schema, key)]
        if not owners:
            raise NGEError(f"bad configuration: {item!r} is not KEY=VALUE with a key of the search or the training "
                           f"configuration (neither has {key!r}; e.g. model.C=8)")
        for k in owners:
            out[k].append(item)
    return out


def has_key(schema: type, key: str) -> bool:
    """Whether the dotted `key` names a setting or section of `schema`."""
    missing = object()
    try:
        return OmegaConf.select(OmegaConf.structured(schema), key, default=missing, throw_on_missing=False) is not missing
    except OmegaConfBaseException:
        return False


def flat_keys(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted key: value}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@cache
def _schema_defaults(schema: type) -> tuple[tuple[str, Any], ...]:
    raw = OmegaConf.to_container(OmegaConf.structured(schema), resolve=False, enum_to_str=True, throw_on_missing=False)
    return tuple((k, v) for k, v in flat_keys(raw).items() if v != MISSING)  # a MISSING key has no default


def schema_defaults(schema: type) -> dict[str, Any]:
    """{dotted key: default} of every setting of `schema` that has one (what a saved config lacking the key held)."""
    return dict(_schema_defaults(schema))


def to_dict(cfg: Any) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise NGEError(f"bad configuration: {msg}")


def _validate_data(d: DataConfig) -> None:
    _check(d.batch_size >= 1, f"data.batch_size must be >= 1, got {d.batch_size}")
    _check(d.limit is None or d.limit >= 2, f"data.limit must be >= 2 or null, got {d.limit}")
    _check(d.crop_pad >= 0, f"data.crop_pad must be >= 0, got {d.crop_pad}")
    _check(d.image_size is None or d.image_size >= MIN_IMAGE_SIZE,
           f"data.image_size must be >= {MIN_IMAGE_SIZE} or null, got {d.image_size}")
    _check(d.channels in (None, 1, 3), f"data.channels must be 1, 3 or null, got {d.channels}")
    _check(d.name != DataName.folder or d.root is not None,
           "data.name=folder needs data.root=DIR (a folder holding train/<class>/ and test/<class>/)")
    s = d.synthetic
    _check(min(s.n_train, s.n_test, s.channels, s.size) >= 1 and s.num_classes >= 2,
           "data.synthetic sizes must be positive with at least 2 classes")


def _validate_runtime(r: RuntimeConfig) -> None:
    _check(r.threads is None or r.threads >= 1, f"runtime.threads must be >= 1 or null, got {r.threads}")
    _check(0 <= r.seed < 2**31, f"runtime.seed must be in [0, 2^31), got {r.seed}")


def _validate_search(cfg: SearchRunConfig) -> None:
    _validate_data(cfg.data)
    _validate_runtime(cfg.runtime)
    s, m = cfg.search, cfg.model
    _check(cfg.data.name != DataName.imagenet, "search holds its data in memory; data.name=imagenet is for nge train")
    _check(0.0 < cfg.data.train_portion < 1.0, f"data.train_portion must be in (0, 1), got {cfg.data.train_portion}")
    _check(s.epochs >= 1, f"search.epochs must be >= 1, got {s.epochs}")
    _check(0 <= s.warmup_epochs < s.epochs, f"search.warmup_epochs must be in [0, search.epochs), got {s.warmup_epochs}")
    _check(s.select == Selection.argmax or s.strategy == Strategy.gd,
           f"search.select={s.select} is gd's; search.strategy={s.strategy} chooses its own cell (use search.select=argmax)")
    _check(s.select_batches >= 1, f"search.select_batches must be >= 1, got {s.select_batches}")
    _check(s.select_from is None or s.select == Selection.perturbation,
           "search.select_from only selects: it needs search.select=perturbation")
    if s.space == "darts":
        _check(m.C >= 1 and m.layers >= 3 and m.stem_multiplier >= 1,
               "model.C and model.stem_multiplier must be >= 1 and model.layers >= 3")
    else:
        _check(m.C >= 1 and m.layers >= 3 and m.layers % 3 == 0,
               f"model.C must be >= 1 and model.layers a multiple of 3 (3 stages of N cells in {s.space}), got {m.layers}")
    w, a = s.weights, s.arch
    _check(w.lr > 0 and 0 <= w.lr_min <= w.lr, "search.weights.lr must be > 0 and 0 <= lr_min <= lr")
    _check(0 <= w.momentum < 1, f"search.weights.momentum must be in [0, 1), got {w.momentum}")
    _check(w.weight_decay >= 0 and w.grad_clip >= 0, "search.weights.weight_decay and grad_clip must be >= 0")
    _check(a.weight_decay is not None, "search.arch.weight_decay is unset (load_config sets the strategy's)")
    _check(a.lr > 0 and a.weight_decay >= 0, "search.arch.lr must be > 0 and weight_decay >= 0")
    _check(0 <= a.beta1 < 1 and 0 <= a.beta2 < 1, "search.arch.beta1 and beta2 must be in [0, 1)")
    _check(0 <= a.shared_offset <= 1, f"search.arch.shared_offset must be in [0, 1], got {a.shared_offset}")
    _check(s.rl.entropy_weight >= 0 and 0 <= s.rl.baseline_decay < 1,
           "search.rl.entropy_weight must be >= 0 and search.rl.baseline_decay in [0, 1)")
    e = s.ea
    _check(e.population >= 2 and 1 <= e.tournament <= e.population and e.rank_batches >= 1,
           "search.ea needs population >= 2, 1 <= tournament <= population and rank_batches >= 1")
    _check(e.entropy_weight >= 0, f"search.ea.entropy_weight must be >= 0, got {e.entropy_weight}")


@dataclass
class EvalNetConfig:
    C: int = 36
    layers: int = 20
    stem_multiplier: int = 3
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path: float = 0.3  # final drop-path probability, ramped linearly from 0 over the epochs
    mult_adds_limit: int | None = None  # refuse a network above this many multiply-adds per image


@dataclass
class TrainConfig:
    epochs: int = 600
    lr: float = 0.25  # the paper's printed value (DARTS: 0.025 at batch 96)
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    label_smoothing: float = 0.0
    schedule: Schedule = Schedule.cosine
    warmup_epochs: int = 0  # linear schedule only
    test_every: int = 1  # measure the test split after every N-th epoch and after the last


@dataclass
class TrainRunConfig:
    preset: str = MISSING
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    model: EvalNetConfig = field(default_factory=EvalNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


def _validate_train(cfg: TrainRunConfig) -> None:
    _validate_data(cfg.data)
    _validate_runtime(cfg.runtime)
    m, t, d = cfg.model, cfg.train, cfg.data
    _check(m.C >= 2 and m.C % 2 == 0, f"model.C must be an even number >= 2, got {m.C}")
    _check(m.layers >= 3 and m.stem_multiplier >= 1, "model.layers must be >= 3 and model.stem_multiplier >= 1")
    _check(m.auxiliary_weight >= 0, f"model.auxiliary_weight must be >= 0, got {m.auxiliary_weight}")
    _check(0 <= m.drop_path < 1, f"model.drop_path must be in [0, 1), got {m.drop_path}")
    _check(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    _check(t.lr > 0 and 0 <= t.lr_min <= t.lr, "train.lr must be > 0 and 0 <= lr_min <= lr")
    _check(0 <= t.momentum < 1, f"train.momentum must be in [0, 1), got {t.momentum}")
    _check(t.weight_decay >= 0 and t.grad_clip >= 0, "train.weight_decay and train.grad_clip must be >= 0")
    _check(0 <= t.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    _check(0 <= t.warmup_epochs < t.epochs, f"train.warmup_epochs must be in [0, train.epochs), got {t.warmup_epochs}")
    _check(t.schedule == Schedule.linear or t.warmup_epochs == 0, "train.warmup_epochs needs train.schedule=linear")
    _check(t.test_every >= 1, f"train.test_every must be >= 1, got {t.test_every}")
    _check(m.mult_adds_limit is None or m.mult_adds_limit > 0, "model.mult_adds_limit must be > 0 or null")
    _check(d.cutout >= 0, f"data.cutout must be >= 0, got {d.cutout}")
    _check(d.val >= 0, f"data.val must be >= 0, got {d.val}")
    _check(d.val == 0 or d.name not in (DataName.imagenet, DataName.folder),
           f"data.val holds out images of a data set in memory; data.name={d.name} has its own val/test folders")
    if d.name == DataName.imagenet:
        _check(d.crop_pad == 0 and d.cutout == 0 and d.flip,
               "imagenet training always flips and takes random-resized crops: data.flip=true, data.crop_pad=0, data.cutout=0")
        _check(d.workers >= 0, f"data.workers must be >= 0, got {d.workers}")
        size = d.image_size or IMAGENET_SIZE
        _check(size <= d.resize, f"data.image_size must be <= data.resize, got {size}, {d.resize}")


RANDOM_ROW = "random"  # the ablation row whose cells are drawn uniformly instead of searched


@dataclass
class AblateRow:
    """One method of a comparison: a name (also its folder), a table label and its search overrides.

    The row named `random` searches nothing: seed k trains the genotype `random:k`. A row with a
    `genotype` searches nothing either: every seed trains that one cell (its seeds are training seeds)."""

    name: str = MISSING
    label: str | None = None  # None: the name
    search_preset: str | None = None  # None: the comparison's search_preset
    search: list[str] = field(default_factory=list)
    genotype: str | None = None  # a built-in name, random:K or a genotype.json file (see nge train --genotype)


@dataclass
class AblateTraining:
    """One way of training every cell (an evaluator): a name (its column and folder), a preset, overrides."""

    name: str = MISSING
    preset: str = MISSING
    overrides: list[str] = field(default_factory=list)
    seeds: int | None = None  # train only the first N seeds of every row; None: all
    row_seeds: dict[str, int] = field(default_factory=dict)  # rows that train another number of seeds than `seeds`


def _table4_rows() -> list[AblateRow]:
    return [AblateRow(RANDOM_ROW, "Random cells")] + [
        AblateRow(name, factory.label, search=[f"search.arch.name={name}"]) for name, factory in ARCH_PARAMS.items()]


@dataclass
class AblateConfig:
    """The Table 4 protocol: one search per (row, seed), each genotype trained with each preset."""

    preset: str = MISSING
    rows: list[AblateRow] = field(default_factory=_table4_rows)
    seeds: int = 1
    first_seed: int = 0  # the seeds are first_seed .. first_seed + seeds - 1 (fresh seeds for a confirmation)
    search_preset: str = "quick"
    search_overrides: list[str] = field(default_factory=list)
    # empty: no training; only where the space has a table of trained cells (nb201), which scores each cell
    train_presets: list[str] = field(default_factory=lambda: ["quick"])
    train_overrides: list[str] = field(default_factory=list)
    # In place of train_presets and train_overrides: trainings with names and their own overrides.
    trainings: list[AblateTraining] = field(default_factory=list)
    # Trainings of every cell: the t-th has runtime.seed = seed + 1000 t (t = 0: the search's own seed).
    train_seeds: int = 1
    reference: str | None = None  # the training every other one is correlated with (a trainings name)


def seed_range(cfg: AblateConfig) -> range:
    return range(cfg.first_seed, cfg.first_seed + cfg.seeds)


def ablate_trainings(cfg: AblateConfig) -> list[AblateTraining]:
    """The comparison's trainings: `trainings`, or one per train preset with `train_overrides`."""
    return list(cfg.trainings) or [AblateTraining(preset_name(tp), tp, list(cfg.train_overrides))
                                   for tp in cfg.train_presets]


@dataclass
class SegDataConfig:
    root: str | None = None  # the VOC2012 folder (JPEGImages, SegmentationClass, ImageSets/Segmentation)
    aug: bool = False  # train on SBD's train_aug.txt with SegmentationClassAug masks (10,582 images)
    limit: int | None = None  # use at most this many training images
    crop: int = 513
    scale_min: float = 0.5
    scale_max: float = 2.0
    batch_size: int = 16
    workers: int = 4


@dataclass
class SegModelConfig:
    C: int = 48  # a fresh backbone's width (with --backbone the checkpoint's network is used; nge segment refuses it)
    layers: int = 14
    output_stride: int = 16
    aspp_channels: int = 256
    rates: list[int] = field(default_factory=lambda: [6, 12, 18])  # at output stride 16; scaled at 8 and 32


@dataclass
class SegTrainConfig:
    epochs: int = 46  # 30K iterations of batch 16 over 10,582 images (DeepLabv3)
    lr: float = 0.007
    power: float = 0.9  # poly schedule, per step
    momentum: float = 0.9
    weight_decay: float = 4.0e-5
    grad_clip: float = 0.0
    eval_every: int = 1  # measure val mIoU every N epochs (and after the last)


@dataclass
class SegmentRunConfig:
    preset: str = MISSING
    data: SegDataConfig = field(default_factory=SegDataConfig)
    model: SegModelConfig = field(default_factory=SegModelConfig)
    train: SegTrainConfig = field(default_factory=SegTrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


def _validate_segment(cfg: SegmentRunConfig) -> None:
    _validate_runtime(cfg.runtime)
    d, m, t = cfg.data, cfg.model, cfg.train
    _check(d.root is not None, "data.root must name the VOC2012 folder (JPEGImages, SegmentationClass, ImageSets)")
    _check(d.batch_size >= 2, f"data.batch_size must be >= 2 (batch norm in the image-pooling branch), got {d.batch_size}")
    _check(d.crop >= 16 and d.workers >= 0, "data.crop must be >= 16 and data.workers >= 0")
    _check(0 < d.scale_min <= d.scale_max, f"need 0 < data.scale_min <= data.scale_max, got {d.scale_min}, {d.scale_max}")
    _check(d.limit is None or d.limit >= 2, f"data.limit must be >= 2 or null, got {d.limit}")
    _check(m.C >= 2 and m.C % 2 == 0 and m.layers >= 3, "model.C must be even and >= 2, model.layers >= 3")
    _check(m.output_stride in (8, 16, 32), f"model.output_stride must be 8, 16 or 32, got {m.output_stride}")
    _check(m.aspp_channels >= 1 and len(m.rates) >= 1 and min(m.rates) >= 1,
           "model.aspp_channels and model.rates must be positive")
    _check(t.epochs >= 1 and t.eval_every >= 1, "train.epochs and train.eval_every must be >= 1")
    _check(t.lr > 0 and t.power >= 0, "train.lr must be > 0 and train.power >= 0")
    _check(0 <= t.momentum < 1 and t.weight_decay >= 0 and t.grad_clip >= 0,
           "train.momentum must be in [0, 1), train.weight_decay and train.grad_clip >= 0")


def _validate_ablate(cfg: AblateConfig) -> None:
    _check(cfg.seeds >= 1, f"seeds must be >= 1, got {cfg.seeds}")
    _check(cfg.first_seed >= 0 and cfg.first_seed + cfg.seeds <= 1000,  # train seeds are seed + 1000 t
           f"first_seed must be >= 0 and first_seed + seeds <= 1000, got {cfg.first_seed} + {cfg.seeds}")
    names = [r.name for r in cfg.rows]
    _check(bool(names) and len(set(names)) == len(names) and all(n and "/" not in n for n in names),
           "rows must have distinct, non-empty names without '/'")
    _check(not (cfg.trainings and cfg.train_overrides), "give trainings their own overrides, not train_overrides")
    _check(cfg.train_seeds >= 1, f"train_seeds must be >= 1, got {cfg.train_seeds}")
    trainings = [t.name for t in ablate_trainings(cfg)]
    _check(len(set(trainings)) == len(trainings) and all(n and "/" not in n for n in trainings),
           "trainings must have distinct, non-empty names without '/'")
    _check("search" not in trainings, "a training may not be named 'search' (the table's config[search] column "
           "holds the searches' settings); rename it")
    _check(all(t.seeds is None or t.seeds >= 1 for t in cfg.trainings), "a training's seeds must be >= 1")
    for t in cfg.trainings:
        for row, n in t.row_seeds.items():
            _check(row in names, f"training '{t.name}': row_seeds names '{row}', which is not a row ({', '.join(names)})")
            _check(1 <= n <= cfg.seeds, f"training '{t.name}': row_seeds of '{row}' must be in [1, seeds={cfg.seeds}], got {n}")
    _check(cfg.reference is None or cfg.reference in trainings,
           f"reference '{cfg.reference}' is not one of the trainings ({', '.join(trainings)})")
    for r in cfg.rows:
        _check(r.name != RANDOM_ROW or not (r.search or r.search_preset or r.genotype),
               "the random row searches nothing; give it no search settings")
        _check(r.genotype is None or not (r.search or r.search_preset),
               f"row '{r.name}' trains the genotype {r.genotype}; give it no search settings")


@dataclass
class FitConfig:
    """`nge fit`: the presets of its phases, their own overrides, and how the budget is split."""

    preset: str = MISSING
    search_preset: str = "quick"
    train_preset: str = "quick"
    search: list[str] = field(default_factory=list)  # overrides of the search (after the presets')
    train: list[str] = field(default_factory=list)  # overrides of the training
    search_share: float = 0.25  # of the budget, for the search; the training gets what is then left
    fallback: str = "DARTS_V2"  # the cell trained when the budget is too small to search


def _validate_fit(cfg: FitConfig) -> None:
    _check(0 <= cfg.search_share < 1, f"search_share must be in [0, 1), got {cfg.search_share}")
    for key in (*cfg.search, *cfg.train):
        _check("=" in key, f"fit preset override {key!r} is not KEY=VALUE")


_VALIDATORS = {
    SearchRunConfig: _validate_search,
    TrainRunConfig: _validate_train,
    SegmentRunConfig: _validate_segment,
    AblateConfig: _validate_ablate,
    FitConfig: _validate_fit,
}

# What a resume may change: settings that cannot change a run's results. Everything else (the
# seed, which fixes the split and the batch order, included) must match the run's checkpoint.
# runtime.nonfinite only decides what happens at a non-finite step, which a finished epoch never had;
# model.checkpoint only decides what is recomputed (the same numbers: tests/test_engine.py).
# Keys added since the ablation tables' 12-hex settings fingerprints (nge.ablate.fingerprint): a
# fingerprint is checked against today's settings without these keys where they hold their schema
# default (the behaviour from before they existed). Append every key (or section) a schema gains.
KEYS_SINCE_FINGERPRINTS: tuple[str, ...] = ("search.space", "search.select_from", "search.arch.cells", "train.test_every")

# Data sets whose data.root is the data set itself (the user's own images): two folders are two data
# sets. For the others data.root only says where a standard data set lies.
ROOT_IS_DATA = (DataName.imagenet, DataName.folder)

RESUME_MAY_CHANGE = ("runtime.device", "runtime.threads", "runtime.progress", "runtime.nonfinite", "runtime.tensorboard",
                     "model.checkpoint")


def validate(cfg: Any) -> None:
    """The schema's own validator; `load_config` runs it, so every loaded config has passed it."""
    _VALIDATORS[type(cfg)](cfg)
