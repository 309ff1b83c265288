"""Progress on stderr with elapsed seconds, and a poll-until helper that uses it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from pgbackups.local.errors import StartError


class Progress:
    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.t0 = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.elapsed:6.1f}s] {message}", file=self.stream, flush=True)

    def wait(
        self,
        what: str,
        ready: Callable[[], bool],
        *,
        timeout: float,
        check: Callable[[], None] | None = None,
        interval: float = 0.5,
        every: float = 10.0,
    ) -> None:
        """Poll ``ready`` until true; ``check`` raises when waiting is pointless (a crash).
        Raises StartError after ``timeout`` seconds."""
        self.say(f"waiting for {what}")
        start = time.monotonic()
        next_note = start + every
        while True:
            if check is not None:
                check()
            if ready():
                self.say(f"{what}: ok ({time.monotonic() - start:.1f}s)")
                return
            now = time.monotonic()
            if now - start > timeout:
                raise StartError(f"timed out after {timeout:g}s waiting for {what}")
            if now >= next_note:
                self.say(f"still waiting for {what} ({now - start:.0f}s)")
                next_note = now + every
            time.sleep(interval)
