"""Turn SIGTERM and SIGINT into a stop request that the trainer honours between optimizer steps."""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Within ``with StopSignals():``, SIGTERM and SIGINT only record the signal in ``signum``.

    The trainer polls ``signum`` after every step, writes a checkpoint and calls :meth:`exit`. A second
    signal exits at once. The handlers are installed only when ``enabled`` and in the main thread (the only
    one Python delivers signals to); the previous handlers are restored on leaving the block, which also
    calls :meth:`exit` if a signal arrived after the trainer's last poll.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if self.enabled and threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
        if exc_type is None and self.signum is not None:
            self.exit()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        again = self.signum is not None
        self.signum = signum
        if again:
            self.exit()

    def exit(self) -> NoReturn:
        """Raise ``KeyboardInterrupt`` for SIGINT, ``SystemExit(128 + signum)`` for SIGTERM."""
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + int(self.signum))
