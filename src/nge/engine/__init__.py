"""The engine every command runs on: the runtime (device, threads, torchrun), run directories and
checkpoints, learning-rate schedules, the epoch loop (`fit`) and the run skeleton (`run_job`).

    runtime    device, seeding, process group, autocast, RNG state
    rundir     RunDir, atomic writes, checkpoints, the resume check
    schedules  cosine, linear (warm-up), poly
    loop       Meter, optimizer_step, evaluate, Phase / EpochTask, fit
    job        Job, run_job
"""

from nge.engine.loop import (
    Batches,
    EpochTask,
    Meter,
    NonFinite,
    Phase,
    Zipped,
    evaluate,
    fit,
    frozen,
    late_stop,
    optimizer_step,
    progress,
)
from nge.engine.rundir import (
    RunDir,
    atomic_write_bytes,
    atomic_write_text,
    check_resume,
    check_resume_config,
    default_run_dir,
    load_checkpoint,
    save_checkpoint,
)
from nge.engine.runtime import (
    all_reduce_sum,
    autocast,
    check_same_everywhere,
    data_parallel,
    is_main,
    join_process_group,
    main_log,
    process_note,
    resolve_device,
    rng_state,
    set_rng_state,
    setup_runtime,
    shutdown,
    single_process,
    to_device,
    world,
)
from nge.engine.schedules import cosine_lr, linear_lr, poly_lr, set_lr

__all__ = [
    "Batches", "EpochTask", "Meter", "NonFinite", "Phase", "RunDir", "Zipped", "all_reduce_sum",
    "atomic_write_bytes", "atomic_write_text", "autocast", "check_resume", "check_resume_config",
    "check_same_everywhere", "cosine_lr", "data_parallel", "default_run_dir", "evaluate", "fit", "frozen",
    "is_main", "join_process_group", "late_stop", "linear_lr", "load_checkpoint", "main_log", "optimizer_step", "poly_lr",
    "process_note", "progress",
    "resolve_device", "rng_state", "save_checkpoint", "set_lr", "set_rng_state", "setup_runtime", "shutdown",
    "single_process", "to_device", "world",
]
