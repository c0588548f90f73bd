"""Runs the `nge` command line in this process and makes it die at a chosen point, so crash tests
hit exact places instead of racing a timer:

    python tests/helpers/die_at.py step:N:SIGNAL ARGS...   SIGNAL (KILL or TERM) at the N-th optimiser step
    python tests/helpers/die_at.py write:N:KILL ARGS...    SIGKILL halfway through the N-th atomic file write

N counts from the start of this process (a resumed run counts afresh).
"""

import os
import signal
import sys

import nge.engine.rundir as rundir
import nge.searching
import nge.training
from nge.cli import main


def die_at(where: str, n: int, sig: signal.Signals) -> None:
    calls = {"n": 0}
    if where == "step":
        for module in (nge.searching, nge.training):
            real_step = module.optimizer_step

            def step(*a, _real=real_step, **k):
                calls["n"] += 1
                if calls["n"] == n:
                    os.kill(os.getpid(), sig)
                return _real(*a, **k)

            module.optimizer_step = step
    else:
        real_write = rundir.atomic_write_bytes

        def write(path, data):
            calls["n"] += 1
            if calls["n"] == n:  # the temporary file half written, then the process is gone
                path.with_name(f".{path.name}.tmp").write_bytes(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            real_write(path, data)

        rundir.atomic_write_bytes = write


if __name__ == "__main__":
    where, n, name = sys.argv[1].split(":")
    die_at(where, int(n), signal.Signals[f"SIG{name}"])
    sys.exit(main(sys.argv[2:]))
