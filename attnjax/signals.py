"""Stopping a run cleanly on SIGTERM / Ctrl-C, even when a step never returns.

Inside `StopSignals(on_force)`: the first SIGTERM or Ctrl-C sets `requested`, and the loop stops
at its next step boundary with a checkpoint (status `preempted`). A Python signal handler only
runs when the main thread runs Python, so a step stuck in a kernel or a hung collective would
never see it; a watchdog thread therefore also wakes on the signal (through the interpreter's
wakeup fd, written by the C-level handler whatever the main thread is doing). If the loop has
not stopped `grace_s` seconds later, or at once on a second signal, the watchdog calls
`on_force(reason)` (which records `preempted` with the reason and releases the claim) and ends
the process with exit status 128 + signal. A second Ctrl-C also raises KeyboardInterrupt in the
main thread when it is free to run it.
Only the main thread can install handlers; elsewhere (e.g. a Ray task thread) it does nothing.

`request_stop(signum)` is the same request made by code: a handler for a signal attnjax does
not own (submitit's SIGUSR2, see attnjax/executors/slurm.py) asks the running loop to stop
exactly as a first SIGTERM would; asked before any loop runs, it holds for the next one this
process starts (`clear_request()` drops it).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

HANDLED = (signal.SIGTERM, signal.SIGINT)

_active: StopSignals | None = None  # the loop's, while one runs in this process's main thread
_pending: int | None = None  # a request made while no loop ran


def request_stop(signum: int = signal.SIGTERM) -> None:
    """Stop the running loop at its next step boundary with a checkpoint, as a first SIGTERM
    would (the grace period and `on_force` apply); with no loop running, the next one stops
    before its first step. Safe to call from a signal handler."""
    global _pending
    active = _active
    if active is not None and active.active:
        active.request(signum)
    else:
        _pending = signum


def clear_request() -> None:
    """Drops a request that no loop has taken (e.g. its run was already done)."""
    global _pending
    _pending = None


class StopSignals:
    def __init__(self, on_force: Callable[[str], None], grace_s: float = 60.0):
        self.requested = threading.Event()
        self._on_force, self._grace_s = on_force, grace_s
        self._signals: list[int] = []
        self._previous: dict[int, object] = {}
        self._pipe: tuple[int, int] | None = None
        self._old_wakeup = -1
        self._watchdog: threading.Thread | None = None
        self._done = threading.Event()
        self.active = False

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        read, write = os.pipe()
        os.set_blocking(write, False)
        self._pipe = (read, write)
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handler)
        self._old_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self._watchdog = threading.Thread(target=self._watch, name="attnjax-signals",
                                          daemon=True)
        self._watchdog.start()
        self.active = True
        global _active, _pending
        _active = self
        if _pending is not None:
            signum, _pending = _pending, None
            self.request(signum)
        return self

    def request(self, signum: int) -> None:
        """A first stop request that did not come through HANDLED (see `request_stop`)."""
        if self.requested.is_set():
            return
        self.requested.set()
        threading.Thread(target=self._force_after, args=(signum,), daemon=True,
                         name="attnjax-grace").start()

    def _handler(self, signum, frame):  # main thread, whenever it runs Python
        if signum == signal.SIGINT and self.requested.is_set():
            raise KeyboardInterrupt
        self.requested.set()

    def _watch(self) -> None:
        read = self._pipe[0]
        count, first = 0, None
        while not self._done.is_set():
            try:
                data = os.read(read, 64)  # blocks; one byte per signal received
            except OSError:
                return
            if not data:
                return
            for signum in (d for d in data if d in HANDLED):
                count += 1
                first = first or signum
                self.requested.set()
                if count == 1:
                    threading.Thread(target=self._force_after, args=(signum,), daemon=True,
                                     name="attnjax-grace").start()
                else:
                    self._force(signum, f"{signal.Signals(signum).name} received twice")

    def _force_after(self, signum: int) -> None:
        if not self._done.wait(self._grace_s):
            self._force(signum, f"{signal.Signals(signum).name}: no step boundary within the "
                                f"{self._grace_s:g} s grace period (a step that never returns?)")

    def _force(self, signum: int, reason: str) -> None:
        if self._done.is_set():
            return
        try:
            self._on_force(reason)
        finally:
            os._exit(128 + signum)

    def __exit__(self, *exc) -> None:
        self._done.set()
        if not self.active:
            return
        global _active
        if _active is self:
            _active = None
        signal.set_wakeup_fd(self._old_wakeup)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        os.close(self._pipe[1])  # ends the watchdog's read
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        os.close(self._pipe[0])
        self.active = False
