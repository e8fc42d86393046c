"""A worker process that ends with the sweep that started it. Torch-free on purpose: a spawned pool worker
imports this module to run its initializer before anything heavy, so the watch starts at once."""

from __future__ import annotations

import os
import threading
import time


def die_with_parent(parent: int) -> None:
    """A worker's first act: watch the sweep that started it and exit when it is gone. A sweep killed with
    SIGKILL cannot tear its pool down, and an orphaned worker would train on beside the restarted sweep,
    writing the same checkpoints."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
