"""The run skeleton every command shares: validate, check the run directory and the resume,
set up the runtime, build the task (data included), fit, write the artifacts and the summary.

A command describes itself as a `Job`; `run_job` does the rest, in the same order for all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nge.config import RESUME_MAY_CHANGE, inert_keys, schema_defaults, to_dict, to_yaml, validate
from nge.engine.loop import EpochTask, fit
from nge.engine.rundir import RunDir, check_resume, save_checkpoint
from nge.engine.runtime import is_main, main_log, process_note, setup_runtime, world
from nge.errors import NGEError


class Job:
    """One command's part of a run. Subclasses set the class attributes and implement `build`,
    `start` and `finish`; the other hooks default to nothing."""

    command: str  # "search", "train", "segment": the log's prefix and the resume hint's command
    epochs_key: str  # the config key of the epoch count (a resume may raise it)

    def __init__(self, cfg: Any):
        self.cfg = cfg

    @property
    def epochs(self) -> int:
        section, key = self.epochs_key.split(".")
        return int(getattr(getattr(self.cfg, section), key))

    def prepare(self, out: Path, resume: bool) -> None:
        """Checks that need no data and no runtime (the command line's own arguments)."""

    def build(self, device: torch.device) -> EpochTask:
        """The task, with its data, on `device` (the runtime is seeded when this runs)."""
        raise NotImplementedError

    def start(self, task: EpochTask, run: RunDir) -> str:
        """Writes the job's own first files (main process only); returns the log's description."""
        raise NotImplementedError

    def meta(self, task: EpochTask) -> dict:
        """What the checkpoint holds besides the task state and the config."""
        return {}

    def finish(self, task: EpochTask, metrics: list[dict], run: RunDir, log: Callable[[str], None]) -> dict:
        """Writes the artifacts (main process only); returns the job's summary fields."""
        raise NotImplementedError

    def save_weights(self, task: EpochTask, run: RunDir, epochs: int) -> None:
        """model.pt: the final weights with the config and `meta`, what a later command rebuilds from."""
        save_checkpoint({"epoch": epochs, "task": {"net": task.net.state_dict()}, "config": to_dict(self.cfg),
                         **self.meta(task)}, run.file("model.pt"))

    def resume_hint(self, run: RunDir) -> str:
        return f"nge {self.command} --resume --out {run.path} ..."

    def tensorboard_epoch(self, writer: Any, task: EpochTask, epoch: int) -> None:
        """Adds the job's own pictures for an epoch (the metrics are added for every job)."""

    def tensorboard_end(self, writer: Any, task: EpochTask, run: RunDir, epochs: int) -> None:
        """Adds the job's final pictures, after `finish`."""


def _summary_writer(run: RunDir, resumed_at: int | None) -> Any:
    """A TensorBoard writer for RUN/tensorboard; on resume the events after the checkpoint's epoch are
    dropped (they belong to the part of the run that is replayed)."""
    from torch.utils.tensorboard import SummaryWriter  # present: run_job checked before any work

    return SummaryWriter(str(run.file("tensorboard")), purge_step=None if resumed_at is None else resumed_at + 1)


def _tensorboard_available() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise NGEError("runtime.tensorboard=true needs the tensorboard package: pip install 'nge[tensorboard]' "
                       "(or pip install tensorboard)") from None


def run_job(job: Job, out: Path, force: bool = False, resume: bool = False,
            log: Callable[[str], None] = print) -> dict | None:
    """Runs `job` in the run directory `out`. Returns the summary in the main process and None in
    the others (under torchrun only the first process writes and reports)."""
    cfg = job.cfg
    validate(cfg)
    RunDir.check(out, force, resume)
    may_differ = (job.epochs_key, *RESUME_MAY_CHANGE, *inert_keys(cfg))  # settings that cannot change the results
    # a key the checkpoint lacks (an older nge's) is read as its default
    resumed_at = check_resume(out, to_dict(cfg), may_differ, schema_defaults(type(cfg))) if resume else None
    job.prepare(Path(out), resume)
    r = cfg.runtime
    if r.tensorboard:
        _tensorboard_available()
    device = setup_runtime(r.seed, r.threads, r.device)
    task = job.build(device)
    run = RunDir.open(out, force, resume)
    main, procs = is_main(), world()[1]
    log = main_log(log)
    description = ""
    if main:
        run.write_text("config.yaml", to_yaml(cfg))
        description = job.start(task, run)
    batch = cfg.data.batch_size
    log(f"nge {job.command}: {description}; device {device}{process_note(batch)}; -> {run.path}")
    writer = _summary_writer(run, resumed_at) if r.tensorboard and main else None

    def on_epoch(row: dict) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                writer.add_scalar(key, value, row["epoch"])
        job.tensorboard_epoch(writer, task, row["epoch"])
        writer.flush()

    metrics = fit(task, job.epochs, run, config=to_dict(cfg), resume=resume, log=log, meta=job.meta(task),
                  show_progress=r.progress, resume_hint=job.resume_hint(run), on_epoch=on_epoch if writer else None)
    if not main:
        return None
    summary = {"preset": cfg.preset, **job.finish(task, metrics, run, log), "epochs": len(metrics),
               "wall_seconds": round(sum(m["seconds"] for m in metrics), 2),
               "cpu_seconds": round(sum(m.get("cpu_seconds", 0.0) for m in metrics), 2), "device": str(device),
               "threads": torch.get_num_threads(), "processes": procs, "global_batch": procs * batch}
    run.write_json("summary.json", summary)
    if writer:
        job.tensorboard_end(writer, task, run, len(metrics))
        writer.close()
    return summary
