"""What a parse worker process does first: it must never outlive the replay that started it.

The workers are spawned processes; if their parent is killed (SIGKILL leaves it no say),
they would go on under PID 1. Each one watches its parent's pid and exits when it changes.
Ctrl-C reaches the terminal's whole process group: a worker ignores it, and the parent, which
handles it, stops the pool. Kept free of Beam, like transforms.validation, so a worker starts fast.
"""

import os
import signal
import threading
import time

PARENT_CHECK_SECONDS = 0.25


def guard_worker(parent_pid: int) -> None:
    """The pool's initializer: ignores SIGINT and exits as soon as `parent_pid` is no longer the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), name="watch-parent", daemon=True).start()


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)
