"""One Apply of the panel: a prepared ``slicer_bridge.Batch`` executed on a worker thread that the GUI polls.

Plain Python (threading, queue): the worker touches no MRML node and no widget, progress goes through a
thread-safe queue, and ``cancel`` (a ``threading.Event``) is checked by the engine between batches of slices.
"""

from __future__ import annotations

import queue
import threading
import traceback
from typing import Any


class MedGANJob:
    """Run ``batch.execute`` in the background; the main thread reads :meth:`latestProgress` and, once ``done`` is
    set, either ``error`` (with its ``trace``) or calls ``batch.finish(scene)``."""

    def __init__(self, batch: Any) -> None:
        self.batch = batch
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
