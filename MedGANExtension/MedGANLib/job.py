"""One Apply of the panel: a prepared ``slicer_bridge.Batch`` executed on a worker thread that the GUI polls.

Plain Python (threading, queue): the worker touches no MRML node and no widget, progress goes through a
thread-safe queue, and ``cancel`` (a ``threading.Event``) is checked by the engine between batches of slices.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import traceback
from collections.abc import Iterator
from typing import Any

#: CPU cores left to Slicer's GUI while a run computes on the CPU (environment variable MEDGAN_GUI_CORES overrides).
GUI_CORES = 1


def compute_threads(cpu_count: int | None = None, gui_cores: int | None = None) -> int:
    """Torch's CPU threads during a run: every core but ``gui_cores`` (default :data:`GUI_CORES`, or the
    ``MEDGAN_GUI_CORES`` environment variable), at least one."""
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    if gui_cores is None:
        gui_cores = int(os.environ.get("MEDGAN_GUI_CORES", GUI_CORES))
    return max(1, cores - max(0, gui_cores))


@contextlib.contextmanager
def threads_leaving_gui_cores(gui_cores: int | None = None) -> Iterator[int]:
    """Set torch's CPU threads to :func:`compute_threads` for the block and restore them after."""
    import torch

    before = torch.get_num_threads()
    threads = compute_threads(gui_cores=gui_cores)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


class MedGANJob:
    """Run ``batch.execute`` in the background; the main thread reads :meth:`latestProgress` and, once ``done`` is
    set, either ``error`` (with its ``trace``) or calls ``batch.finish(scene)``."""

    def __init__(self, batch: Any, gui_cores: int | None = None) -> None:
        self.batch = batch
        self.gui_cores = gui_cores  # None: GUI_CORES / MEDGAN_GUI_CORES
        self.cancel = threading.Event()
        self.messages: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.trace = ""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="MedGAN inference", daemon=True)

    def start(self) -> MedGANJob:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with threads_leaving_gui_cores(self.gui_cores):  # the GUI keeps a core while the run computes
                self.batch.execute(progress=lambda fraction, message: self.messages.put((fraction, message)),
                                   cancel=self.cancel)
        except BaseException as exc:  # reported on the main thread
            self.error = exc
            self.trace = traceback.format_exc()
        finally:
            self.done.set()

    def latestProgress(self) -> tuple[float, str] | None:
        """The newest (fraction 0-1, message) since the last call, or None."""
        latest = None
        while True:
            try:
                latest = self.messages.get_nowait()
            except queue.Empty:
                return latest
