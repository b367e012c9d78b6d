"""Imported once by the fork server that starts a run's worker processes (`harness.workers`),
so each worker starts with the engine already imported.

The fork server ignores the signals meant for the run: a Ctrl-C during its imports would
otherwise kill it with a traceback (multiprocessing ignores SIGINT there only once they are
done), and a SIGTERM or SIGHUP to the process group would end it while its workers finish
their work. It starts with them blocked (`harness.workers.run_signals_blocked`), so one sent
before this module runs waits, and is dropped here. It quits when the run's processes are
gone. Workers undo this (`child_main`).
"""

import signal

for _signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_signum, signal.SIG_IGN)

from harness import execute  # noqa: E402, F401  (everything a worker runs)
