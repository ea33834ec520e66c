"""Worker pools whose workers end with the process that started them.

A pool's workers wait on a pipe for work. When their parent is killed (SIGKILL, the OOM killer), nothing closes
that pipe, so they would wait forever, each holding its memory. The data layer's pools (Pathfinder decoding and
generation, the ListOps generator) start their workers with `exit_with_parent`, which checks the parent's process
id once a second and exits once the worker has been orphaned. `process_alive` tells a temporary folder of a
killed writer from one still being written.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PARENT_CHECK_SECONDS = 1.0


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def exit_with_parent(parent: int) -> None:
    """Pool initializer: end this worker as soon as `parent` is no longer its parent process."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)  # orphaned: no one will collect results, and no cleanup of the parent's state is ours

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor of `workers` processes that exit when this process dies."""
    return ProcessPoolExecutor(workers, initializer=exit_with_parent, initargs=(os.getpid(),))
