"""Ctrl-C during training: the first stops the run after the current step, saving its state;
a second stops it at once (the last saved state stays whole: see :mod:`.checkpointing`)."""

from __future__ import annotations

import signal
import threading

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process stopped by Ctrl-C


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C; ``step`` is the step its saved state holds (None: nothing saved)."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


class StopRequest:
    """Context manager: while active, SIGINT sets :attr:`requested` instead of raising.

    Installed only in the main thread and only over Python's default handler (a caller's
    own handler is left alone). A second SIGINT raises ``KeyboardInterrupt`` as usual."""

    def __init__(self, log=print):
        self.requested = False
        self.log = log
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.log("\nCtrl-C: stopping after this step and saving (Ctrl-C again to stop at once)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False
