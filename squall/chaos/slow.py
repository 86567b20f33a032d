"""The slow_executor fault: slow one process down about `factor` times for a while, by stopping it
for most of every short period (SIGSTOP, then SIGCONT), from a thread of the harness.

Why stops rather than a CPU hog beside it: on a machine of a few cores shared by every service, a
hog pinned to the victim's core slows whatever else runs there too, and by an amount the kernel
decides; a process stopped (1 - 1/factor) of every PERIOD seconds has exactly 1/factor of the
time it had, and no other process is touched. Each stop is far shorter than the death budget,
so the executor stays a member: a straggler, not a failure.
"""

from __future__ import annotations

import os
import signal
import threading
import time

PERIOD = 0.05  # seconds: short against a 100 ms batch, long against the kernel's scheduling


class Slowdown:
    """Started at once; stops by itself after `duration` seconds (or on stop()), leaving the
    process running."""

    def __init__(self, pid: int, factor: float, duration: float) -> None:
        if factor < 1:
            raise ValueError(f"a slowdown factor is at least 1, got {factor!r}")
        self.pid = pid
        self.stopped_share = 1 - 1 / factor
        self.until = time.monotonic() + duration
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"slow-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and time.monotonic() < self.until:
                os.kill(self.pid, signal.SIGSTOP)
                self._stop.wait(PERIOD * self.stopped_share)  # the duty cycle, not a wait for a condition
                os.kill(self.pid, signal.SIGCONT)
                self._stop.wait(PERIOD * (1 - self.stopped_share))
        except ProcessLookupError:
            return
        finally:
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
