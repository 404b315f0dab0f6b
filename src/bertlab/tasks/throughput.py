"""Tokens per second over a sliding window of steps, measured on the host clock without device syncs."""

from __future__ import annotations

import time
from collections import deque


class TokenRate:
    def __init__(self, window: int = 20) -> None:
        self.events: deque[tuple[float, int]] = deque(maxlen=window + 1)
        self.last = float("nan")  # the latest rate, for whoever reports beside it (MFU)

    def update(self, tokens: int) -> float:
        """Record a finished step of `tokens`; returns tokens/s over the window (nan until two steps)."""
        self.events.append((time.perf_counter(), tokens))
        if len(self.events) < 2:
            return float("nan")
        elapsed = self.events[-1][0] - self.events[0][0]
        counted = sum(tokens for _, tokens in list(self.events)[1:])
        self.last = counted / elapsed if elapsed > 0 else float("nan")
        return self.last
