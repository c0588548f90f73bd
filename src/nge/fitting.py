"""`nge fit`: from images and a time budget to a checked, exported model with a report.

The phases, each resumable, each in the fit directory OUT:
    search   nge search with the fit preset's search preset           -> OUT/search/
    train    nge train of the derived cell from scratch                -> OUT/train/
    export   OUT/model.pt, OUT/genotype.json, OUT/model.onnx (checked against PyTorch as nge export does)
    report   OUT/report.md and its pictures in OUT/report/            (`nge.fit_report`)

The plan comes from step times measured on this machine before anything is written (`calibrate`):
the search gets `search_share` of the budget; its epochs and images (and, for a small set, its batch)
are chosen to fill it. After the search the training is planned in the time then left, less a reserve
for the export and the report, from the derived cell's own measured step time. Where the search's
share cannot hold a minimal search, the fallback cell is trained instead; where the budget cannot
hold a minimal training, nothing is written. OUT/fit.json holds the plan and the time spent per phase.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nge.config import (
    DataName,
    FitConfig,
    SearchRunConfig,
    TrainRunConfig,
    load_config,
    preset_name,
    route_overrides,
)
from nge.data import Dataset, load_dataset, make_synthetic, scan_folder
from nge.engine import Meter, RunDir, atomic_write_bytes, atomic_write_text, default_run_dir, late_stop, setup_runtime
from nge.engine.job import run_job
from nge.errors import NGEError
from nge.fit_report import clock, write_report

PHASES = ("search", "train", "export", "report")
FIT_FILE = "fit.json"
MIN_BATCHES = 4  # a small set's batch size is cut so that every split gives at least this many batches
MIN_SEARCH_EPOCHS, MAX_SEARCH_EPOCHS = 2, 50
MIN_SEARCH_BATCHES = 16  # per split and epoch, in a search worth running (fewer where the set is smaller)
MIN_TRAIN_BATCHES = 20  # in a training's epoch (fewer where the set is smaller)
MAX_TRAIN_EPOCHS = 200  # a small set's training stops here, under budget, rather than repeat itself more
LOOP_OVERHEAD = 1.07  # a training step in the epoch loop (batches drawn and augmented, metered) over a bare one
LOAD_S_PER_IMAGE = 5e-5  # reading a set into memory (the training phase and the report each do), per image
PLANNED = ("search.epochs", "train.epochs", "data.limit", "train.test_every")  # chosen by nge fit; not overrides
DATA_NAMES = (DataName.fashion_mnist.value, DataName.cifar10.value, DataName.cifar100.value)  # besides a folder
_UNITS = {"s": 1, "m": 60, "h": 3600}


# ---------------------------------------------------------------------------- the budget


def parse_time(value: str | float | int) -> float:
    """Seconds from '30m', '1h30m', '90s', '1.5h' (a number alone: seconds, from Python only)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(r"(\s*\d+(\.\d+)?\s*[smh])+\s*", value.lower()):
        seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([smh])", value.lower()))
    else:
        raise NGEError(f"--time {value!r} is not a duration: give a number with a unit, e.g. 30m, 1h30m or 90s")
    if not math.isfinite(seconds) or seconds <= 0:
        raise NGEError(f"--time must be positive, got {value!r}")
    return seconds


# ---------------------------------------------------------------------------- the data


@dataclass
class DataShape:
    """What planning needs to know of the data, read without decoding a folder's images."""

    overrides: dict  # data.name (and data.root) for both phases
    channels: int
    size: int
    classes: list[str]
    n_train: int
    n_test: int
    description: str


def data_shape(data: str | Path, overrides: list[str]) -> DataShape:
    """DATA as a folder (train/<class>/ and test/<class>/, every image's header read) or a data set name."""
    text = str(data)
    path = Path(text).expanduser()
    given = dict(item.split("=", 1) for item in overrides)
    if path.is_dir():
        over = {"data.name": "folder", "data.root": str(path.resolve())}
        size = int(given["data.image_size"]) if given.get("data.image_size", "null") not in ("null", "None") else None
        chans = int(given["data.channels"]) if given.get("data.channels", "null") not in ("null", "None") else None
        f = scan_folder(path, test=True, image_size=size, channels=chans)
        from nge.data.transforms import image_header

        for p, _ in f.test:  # scan_folder read the training images' headers; a bad test image fails here, not after the training
            image_header(p)
        return DataShape(over, f.channels, f.size, list(f.classes), len(f.train), len(f.test),
                         f"folder {path}: {len(f.train)} train / {len(f.test)} test images, {len(f.classes)} classes")
    if text in DATA_NAMES:
        ds = load_dataset(text, given.get("data.root"), None)
        return DataShape({"data.name": text}, ds.in_channels, ds.image_size, list(ds.classes) or
                         [str(c) for c in range(ds.num_classes)], len(ds.train), len(ds.test),
                         f"{text}: {len(ds.train)} train / {len(ds.test)} test images, {ds.num_classes} classes")
    if path.exists():
        raise NGEError(f"DATA {path} is a file: give a folder holding train/<class>/ and test/<class>/, or a data set name "
                       f"({', '.join(DATA_NAMES)})")
    raise NGEError(f"DATA {text}: no such folder, and not a data set name ({', '.join(DATA_NAMES)})")


# ---------------------------------------------------------------------------- configurations


def split_overrides(items: list[str]) -> dict[str, list[str]]:
    """Every KEY=VALUE to each phase whose configuration has the key (`route_overrides`); the keys nge
    fit chooses itself are refused."""
    for item in items:
        key = item.split("=", 1)[0].strip()
        if key in PLANNED or key == "data.name" or key.startswith("data.synthetic"):
            what = "DATA" if key.startswith("data.") and key != "data.limit" else "--time"
            raise NGEError(f"nge fit chooses {key} from {what}; drop the override")
    return route_overrides(items)


def phase_configs(fcfg: FitConfig, shape: DataShape, overrides: list[str], plan: dict | None = None
                  ) -> tuple[SearchRunConfig, TrainRunConfig]:
    """The search's and the training's configurations: preset <- fit preset's overrides <- DATA <- the
    command line's <- the plan's settings (epochs, images, batch) where made."""
    given = split_overrides(overrides)
    data = [f"{k}={v}" for k, v in shape.overrides.items()]
    out = []
    for kind, schema, preset, own in (("search", SearchRunConfig, fcfg.search_preset, fcfg.search),
                                      ("train", TrainRunConfig, fcfg.train_preset, fcfg.train)):
        planned = (plan or {}).get(kind) or {}
        epochs_key = "search.epochs" if kind == "search" else "train.epochs"
        settings = ([f"{epochs_key}={planned['epochs']}", f"data.limit={planned['images']}",
                     f"data.batch_size={planned['batch']}"] if planned else [])
        if kind == "train" and planned:  # the test split once, at the end: its passes would cost training time
            settings.append(f"train.test_every={planned['epochs']}")
        out.append(load_config(schema, kind, preset, [*own, *data, *given[kind], *settings]))
    return out[0], out[1]


# ---------------------------------------------------------------------------- measured step times


@dataclass
class Calibration:
    """Seconds per step on this machine, at the batch sizes the plan uses."""

    weight_step: float  # a search weight step
    arch_step: float  # a search arch step
    train_step: float  # a training step of `cell`
    eval_image: float  # one test image's forward pass
    build: float  # building the evaluation network (the export's cost scales with it)
    cell: str


def _fake(shape: DataShape, n_train: int, n_test: int) -> Dataset:
    """Synthetic images of the data's shape: step times do not depend on the pixels."""
    return make_synthetic(n_train, n_test, len(shape.classes), shape.channels, shape.size)


def _median_time(step: Callable[[], None], device: torch.device, n: int = 2) -> float:
    """The median seconds of `n` calls of `step` after one warm-up call (allocations, kernel choice);
    on a GPU each call waits for its kernels."""
    def call() -> None:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    call()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _unlimited(cfg, batch: int):
    c = copy.deepcopy(cfg)
    c.data.limit, c.data.batch_size = None, batch
    if hasattr(c.data, "val"):
        c.data.val = 0
    return c


def measure_search(cfg: SearchRunConfig, shape: DataShape, batch: int) -> tuple[float, float]:
    """(weight step, arch step) seconds of the search `cfg` at `batch`."""
    from nge.searching import SearchTask

    device = setup_runtime(cfg.runtime.seed, cfg.runtime.threads, cfg.runtime.device)
    task = SearchTask(_unlimited(cfg, batch), _fake(shape, 4 * batch, 2), device)
    meter = Meter()
    xw, yw = next(iter(task.train_loader.batches_from(0)))
    xa, ya = next(iter(task.val_loader.batches_from(0)))
    probs = task.probs()
    probs = type(probs)(*(p.to(device) for p in probs))
    return (_median_time(lambda: task.weight_step(xw, yw, probs, meter), device),
            _median_time(lambda: task.arch_step(xa, ya, meter), device))


def measure_train(cfg: TrainRunConfig, shape: DataShape, batch: int, cell: str) -> tuple[float, float, float]:
    """(training step, seconds per test image, network build) of the cell `cell` (a name, string or
    run directory) trained with `cfg` at `batch`."""
    from nge.genotypes import resolve_genotype
    from nge.training import TrainTask

    genotype = resolve_genotype(cell)
    device = setup_runtime(cfg.runtime.seed, cfg.runtime.threads, cfg.runtime.device)
    c = _unlimited(cfg, batch)
    n_eval = min(256, max(batch, shape.n_test))
    builds = []
    for _ in range(3):
        t = time.perf_counter()
        task = TrainTask(c, genotype, _fake(shape, 2 * batch, n_eval), device)
        builds.append(time.perf_counter() - t)
    meter = Meter()
    x, y = next(iter(task.train_loader.batches_from(0)))
    task.net.set_drop_path(cfg.model.drop_path / 2)
    step = _median_time(lambda: task.train_step(x, y, meter), device, n=4)
    evaluate = _median_time(lambda: task.test(), device, n=1)
    return step, evaluate / n_eval, statistics.median(builds)


def calibrate(scfg: SearchRunConfig, tcfg: TrainRunConfig, shape: DataShape, cell: str, search_batch: int | None,
              train_batch: int) -> Calibration:
    """The search's steps (unless `search_batch` is None) and the training's, with the cell `cell`, each
    with its own runtime (threads, device)."""
    w = a = 0.0
    if search_batch:
        w, a = measure_search(scfg, shape, search_batch)
    step, image, build = measure_train(tcfg, shape, train_batch, cell)
    return Calibration(w, a, step, image, build, cell)


# ---------------------------------------------------------------------------- the plan


@dataclass
class PhasePlan:
    epochs: int
    images: int  # data.limit: training-set images used (a search splits them into train and val)
    batch: int
    seconds: float  # predicted, steps and evaluation only


def batch_for(preset_batch: int, images: int) -> int:
    """The preset's batch, cut for a small set so that `images` give MIN_BATCHES batches."""
    return max(2, min(preset_batch, images // MIN_BATCHES))


def _epochs_and_images(seconds: float, per_image: float, per_epoch: float, images0: int, epochs0: int, n_max: int,
                       n_min: int, e_min: int, e_max: int) -> tuple[int, int] | None:
    """(epochs, images) filling `seconds` at `per_image` seconds per image and epoch plus `per_epoch` per
    epoch: from the preset's shape (images0, epochs0) the images grow or shrink as the square root of the
    time, the epochs take the rest. None where not even e_min epochs of n_min images fit."""
    def fits(epochs: int) -> int:  # images per epoch that fit in `epochs` epochs
        return min(n_max, int((seconds / epochs - per_epoch) / per_image))

    if fits(e_min) < n_min:
        return None
    scale = max(0.0, seconds - epochs0 * per_epoch) / per_image / (images0 * epochs0)
    target = min(n_max, max(n_min, round(images0 * math.sqrt(scale))))
    epochs = min(e_max, max(e_min, round(seconds / (target * per_image + per_epoch))))
    while epochs > e_min and fits(epochs) < n_min:
        epochs -= 1
    return epochs, fits(epochs)


def plan_search(seconds: float, scfg: SearchRunConfig, shape: DataShape, cal: Calibration, batch: int) -> PhasePlan | None:
    """The search's epochs and images in `seconds` of steps, or None where a minimal search does not fit."""
    portion = scfg.data.train_portion
    per_image = (portion * cal.weight_step + (1 - portion) * cal.arch_step) / batch  # per image and epoch
    got = _epochs_and_images(seconds, per_image, 0.0, min(shape.n_train, scfg.data.limit or shape.n_train),
                             scfg.search.epochs, shape.n_train, min(shape.n_train, 2 * MIN_SEARCH_BATCHES * batch),
                             MIN_SEARCH_EPOCHS, MAX_SEARCH_EPOCHS)
    if got is None:
        return None
    epochs, images = got
    n_tr = round(images * portion)
    steps = (n_tr // batch) * cal.weight_step + ((images - n_tr) // batch) * cal.arch_step
    return PhasePlan(epochs, images, batch, epochs * steps)


def setup_seconds(shape: DataShape) -> float:
    """The training phase besides its epochs: the data, the network, the curves, model.pt."""
    return 1.0 + LOAD_S_PER_IMAGE * (shape.n_train + shape.n_test)


def plan_train(seconds: float, tcfg: TrainRunConfig, shape: DataShape, cal: Calibration, batch: int) -> PhasePlan | None:
    """The training's epochs and images in `seconds` (its setup, steps and one test pass at the end), or
    None where not even one epoch of MIN_TRAIN_BATCHES batches (or the whole set) fits."""
    step, setup = LOOP_OVERHEAD * cal.train_step, setup_seconds(shape) + shape.n_test * cal.eval_image
    seconds -= setup
    got = _epochs_and_images(seconds, step / batch, 0.0, min(shape.n_train, tcfg.data.limit or shape.n_train),
                             tcfg.train.epochs, shape.n_train, min(shape.n_train, MIN_TRAIN_BATCHES * batch), 1,
                             MAX_TRAIN_EPOCHS)
    if got is None:
        return None
    epochs, images = got
    return PhasePlan(epochs, images, batch, setup + epochs * (images // batch) * step)


def reserve_seconds(shape: DataShape, cal: Calibration) -> float:
    """The export's and the report's time: the ONNX export scales with the network's size (its build time
    measures it on this machine); the report runs the test set through PyTorch and onnxruntime and draws."""
    export = 1.25 * (1.5 + 300 * cal.build)
    report = 2 * shape.n_test * cal.eval_image + 1.5 + LOAD_S_PER_IMAGE * (shape.n_train + shape.n_test)
    return export + report


# ---------------------------------------------------------------------------- the fit directory


class FitState:
    """OUT/fit.json: what was asked, the plan, and the seconds spent per phase (written atomically)."""

    def __init__(self, path: Path, state: dict):
        self.path, self.state = path, state

    @classmethod
    def load(cls, out: Path) -> FitState:
        path = out / FIT_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise NGEError(f"cannot resume: {path} is unreadable ({type(e).__name__})") from None
        if not isinstance(state, dict) or "plan" not in state:
            raise NGEError(f"cannot resume: {path} is not an nge fit state")
        return cls(path, state)

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.state, indent=1) + "\n")

    @property
    def spent(self) -> float:
        return sum(self.state["spent"].values())

    def add(self, phase: str, seconds: float) -> None:
        self.state["spent"][phase] = round(self.state["spent"].get(phase, 0.0) + seconds, 3)
        self.save()

    def done(self, phase: str) -> bool:
        return phase in self.state["done"]

    def finish(self, phase: str) -> None:
        self.state["done"].append(phase)
        self.save()


def _writable(out: Path) -> None:
    """A one-line error, before any work, where OUT cannot be created or written."""
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NGEError(f"cannot write {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NGEError(f"cannot write {out}: {parent} is not writable")


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Outside the epochs (whose own handler checkpoints), SIGTERM stops as Ctrl-C does: a clean stop."""
    def handle(_signum, _frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handle)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------------------- the command


@dataclass
class FitRequest:
    data: str
    seconds: float
    preset: str
    overrides: list[str]


def _request_mismatch(saved: dict, req: FitRequest, given: set[str]) -> str:
    """How the request differs from the saved one, in what was `given` ("data", "time", "preset",
    "overrides"): a resume may leave out all but DATA."""
    differ = []
    if saved["data"] != req.data:
        differ.append(f"DATA (run: {saved['data']}, now: {req.data})")
    if "time" in given and abs(saved["budget_seconds"] - req.seconds) > 1e-6:
        differ.append(f"--time (run: {clock(saved['budget_seconds'])}, now: {clock(req.seconds)})")
    if "preset" in given and saved["preset"] != req.preset:
        differ.append(f"the preset (run: {saved['preset']}, now: {req.preset})")
    if "overrides" in given and saved["overrides"] != req.overrides:
        differ.append(f"the overrides (run: {' '.join(saved['overrides']) or 'none'}, now: {' '.join(req.overrides) or 'none'})")
    return "; ".join(differ)


def run_fit(data: str | Path, budget: str | float | None, out: Path | None = None, *, space: str | None = None,
            preset: str | None = None, search_share: float | None = None, overrides: list[str] | None = None,
            force: bool = False, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    """Runs (or with `resume` continues) a fit into `out` and returns it. See the module docstring."""
    start = time.perf_counter()
    if preset is not None and space is not None:
        raise NGEError("give --space or --preset, not both (a fit preset names its space's presets)")
    if budget is None and not resume:
        raise NGEError("--time is required: the budget, e.g. --time 30m")
    extra = [] if search_share is None else [f"search_share={search_share}"]
    given = {k for k, v in (("time", budget), ("preset", preset or space), ("overrides", overrides or extra)) if v}
    path = Path(str(data)).expanduser()
    req = FitRequest(str(path.resolve()) if path.is_dir() else str(data), parse_time(budget) if budget else 0.0,
                     preset or space or "darts", [*extra, *(overrides or [])])
    out = Path(out).expanduser() if out is not None else default_run_dir("fit", preset_name(req.preset))
    RunDir.check(out, force, resume, FIT_FILE)
    state = FitState.load(out) if resume else None
    if state is not None:  # the run's request, where this one leaves things out
        saved = state.state["request"]
        if why := _request_mismatch(saved, req, given):
            raise NGEError(f"cannot resume {out}: it was started with other settings: {why}")
        req = FitRequest(saved["data"], saved["budget_seconds"], saved["preset"], saved["overrides"])
    fcfg = load_config(FitConfig, "fit", req.preset, [o for o in req.overrides if o.startswith("search_share=")])
    split_overrides(_cli(req))  # a bad override fails here, before any measurement
    _writable(out)
    from nge.export import require_onnx

    require_onnx()
    with _sigterm_interrupts():
        shape = data_shape(req.data, _cli(req))
        if state is not None:
            log(f"nge fit: resuming {out} ({', '.join(state.state['done']) or 'no phase'} done, "
                f"{clock(state.spent)} of {clock(req.seconds)} spent)")
        else:
            state = _start(fcfg, req, shape, out, force, log)
            state.add("calibrate", time.perf_counter() - start)
        _run_phases(fcfg, req, shape, state, out, log)
    return out


def _start(fcfg: FitConfig, req: FitRequest, shape: DataShape, out: Path, force: bool, log) -> FitState:
    """Measures, plans the search (or the fallback), refuses a budget too small; then creates OUT."""
    t0 = time.perf_counter()
    scfg, tcfg = phase_configs(fcfg, shape, _cli(req))
    s_images = min(shape.n_train, scfg.data.limit or shape.n_train)
    s_batch = batch_for(scfg.data.batch_size, round(s_images * scfg.data.train_portion))
    t_batch = batch_for(tcfg.data.batch_size, shape.n_train)
    search_wanted = fcfg.search_share > 0
    log(f"nge fit: {shape.description}; measuring step times on this machine")
    cal = calibrate(scfg, tcfg, shape, fcfg.fallback, s_batch if search_wanted else None, t_batch)
    reserve = reserve_seconds(shape, cal)
    measured = time.perf_counter() - t0
    left = req.seconds - measured - reserve
    if plan_train(left, tcfg, shape, cal, t_batch) is None:
        one_epoch = shape.n_test * cal.eval_image + min(shape.n_train, MIN_TRAIN_BATCHES * t_batch) // t_batch * cal.train_step
        least = measured + reserve + one_epoch
        raise NGEError(f"--time {clock(req.seconds)} is too small to train anything on this machine: one epoch, the "
                       f"export and the report need about {clock(least * 1.1)}; give at least that")
    search = None
    if search_wanted:
        search = plan_search(fcfg.search_share * req.seconds, scfg, shape, cal, s_batch)
        if search is not None and plan_train(left - search.seconds, tcfg, shape, cal, t_batch) is None:
            search = None
    if search is None and search_wanted:
        log(f"nge fit: {clock(fcfg.search_share * req.seconds)} is too little to search (2 epochs of "
            f"{MIN_SEARCH_BATCHES} batches per split); training {fcfg.fallback} instead")
    run = RunDir.open(out, force, False, FIT_FILE)
    state = FitState(run.file(FIT_FILE), {
        "request": {"data": req.data, "budget_seconds": req.seconds, "preset": req.preset, "overrides": req.overrides},
        "data": {k: v for k, v in asdict(shape).items() if k != "overrides"},
        "machine": _machine(), "calibration": asdict(cal), "reserve_seconds": round(reserve, 1),
        "plan": {"search": asdict(search) if search else None, "train": None,
                 "cell": "searched" if search else fcfg.fallback},
        "spent": {}, "done": [] if search else ["search"],
    })
    state.save()
    if search:
        log(f"nge fit: plan: search {search.epochs} epochs on {search.images} images (batch {search.batch}, about "
            f"{clock(search.seconds)}), then train the derived cell in the time left ({clock(req.seconds)} in all)")
    return state


def _cli(req: FitRequest) -> list[str]:
    """The KEY=VALUE overrides of the request (search_share, a fit preset key, excluded)."""
    return [o for o in req.overrides if not o.startswith("search_share=")]


def _machine() -> dict:
    import platform

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def _progress_log(log, state: FitState, phase: str, t0: float) -> Callable[[str], None]:
    """Each line of a phase, prefixed with the phase and the budget's time spent and left."""
    budget = state.state["request"]["budget_seconds"]
    number = PHASES.index(phase) + 1

    def write(msg: str) -> None:
        spent = state.spent + time.perf_counter() - t0
        log(f"[fit {number}/4 {phase}: {clock(spent)} spent, {clock(budget - spent)} left] {msg}")

    return write


def _resume_hint(req: FitRequest, out: Path) -> str:
    data = req.data if " " not in req.data else f"'{req.data}'"
    return f"nge fit {data} --resume --out {out}"


@dataclass
class _Phase:
    """What a phase runs with: the fit's settings and state, and its own start and log."""

    fcfg: FitConfig
    req: FitRequest
    shape: DataShape
    state: FitState
    out: Path
    log: Callable[[str], None]
    start: float

    @property
    def left(self) -> float:
        """Seconds of the budget left now."""
        return self.req.seconds - self.state.spent - (time.perf_counter() - self.start)

    def configs(self) -> tuple[SearchRunConfig, TrainRunConfig]:
        return phase_configs(self.fcfg, self.shape, _cli(self.req), self.state.state["plan"])

    def job(self, job, folder: str) -> None:
        """Runs a search or training job in OUT/folder: resumes its checkpoint, replaces a start without one."""
        path = self.out / folder
        resume = (path / RunDir.CHECKPOINT).is_file()
        job.resume_hint = lambda run: _resume_hint(self.req, self.out)
        run_job(job, path, force=path.exists() and not resume, resume=resume, log=self.log)


def _run_phases(fcfg: FitConfig, req: FitRequest, shape: DataShape, state: FitState, out: Path, log) -> None:
    for phase in PHASES:
        if state.done(phase):
            continue
        t0 = time.perf_counter()
        ctx = _Phase(fcfg, req, shape, state, out, _progress_log(log, state, phase, t0), t0)
        try:
            {"search": _search, "train": _train, "export": _export, "report": _report}[phase](ctx)
        finally:
            state.add(phase, time.perf_counter() - t0)
        state.finish(phase)
        if sig := late_stop():  # it came after the phase's last step: stop before the next phase
            raise NGEError(f"stopped by {sig} after the {phase}; continue with {_resume_hint(req, out)}")
    budget, spent = req.seconds, state.spent
    log(f"nge fit: done in {clock(spent)} of {clock(budget)} ({100 * spent / budget:.0f}%): test accuracy "
        f"{state.state['test_acc']:.4f}; {out / 'model.onnx'}, report {out / 'report.md'}")


def _search(p: _Phase) -> None:
    from nge.searching import SearchJob

    p.job(SearchJob(p.configs()[0]), "search")


def _train(p: _Phase) -> None:
    from nge.training import TrainJob

    plan = p.state.state["plan"]
    cell = str(p.out / "search") if plan["cell"] == "searched" else plan["cell"]
    if plan["train"] is None:  # planned once, in the time now left, with the cell's own step time
        tcfg = p.configs()[1]
        batch = batch_for(tcfg.data.batch_size, p.shape.n_train)
        cal = Calibration(**p.state.state["calibration"])
        if cal.cell != cell:
            cal = Calibration(0, 0, *measure_train(tcfg, p.shape, batch, cell), cell)
        reserve = reserve_seconds(p.shape, cal)
        train = plan_train(p.left - reserve, tcfg, p.shape, cal, batch) or PhasePlan(
            1, min(p.shape.n_train, MIN_TRAIN_BATCHES * batch), batch, 0.0)  # the search overran: the least training
        plan["train"] = asdict(train)
        p.state.state["reserve_seconds"] = round(reserve, 1)
        p.state.save()
        p.log(f"plan: train {train.epochs} epochs on {train.images} images (batch {train.batch}, about "
              f"{clock(train.seconds)}); {clock(reserve)} kept for the export and the report")
    p.job(TrainJob(p.configs()[1], cell), "train")


def _export(p: _Phase) -> None:
    from nge.export import export

    for name in ("model.pt", "genotype.json"):
        atomic_write_bytes(p.out / name, (p.out / "train" / name).read_bytes())
    result = export(p.out, "onnx", p.out / "model.onnx", force=True, log=p.log)
    p.state.state["export"] = {"max_diff": result["max_diff"]}


def _report(p: _Phase) -> None:
    p.state.state["test_acc"] = write_report(p.out, p.state.state, p.log, p.start)
