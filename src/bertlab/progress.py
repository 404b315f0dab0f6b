"""Progress over a stream of input bytes (a preparation, a prediction): a bar on a terminal (MB read, the
rate of what is produced, ETA); elsewhere, in CI logs and job files, one log line every `every_s` seconds."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)


class StreamProgress:
    """`verb` titles the bar and the log lines ("Preparing"); `unit` is what `update` counts besides bytes
    ("tokens", "texts"), shown per second divided by `unit_scale`, named by `scale_name` ("M ")."""

    def __init__(
        self,
        verb: str,
        total_bytes: int | None,
        unit: str,
        unit_scale: float = 1.0,
        scale_name: str = "",
        every_s: float = 30.0,
        enabled: bool = True,
    ) -> None:
        self.verb, self.unit, self.unit_scale, self.scale_name = verb, unit, unit_scale, scale_name
        self.total = total_bytes
        self.bytes = self.count = 0
        self.start = self.last = time.monotonic()
        self.every_s = every_s
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=verb, dynamic_ncols=True)

    def rate(self, now: float | None = None) -> str:
        per_second = self.count / max((now or time.monotonic()) - self.start, 1e-9) / self.unit_scale
        return f"{per_second:,.2f} {self.scale_name}{self.unit}/s"

    def update(self, raw_bytes: int, count: int = 0) -> None:
        self.bytes += raw_bytes
        self.count += count
        now = time.monotonic()
        if self.bar is not None:
            self.bar.update(raw_bytes)
            self.bar.set_postfix_str(self.rate(now), refresh=False)
        elif now - self.last >= self.every_s:
            self.last = now
            log.info("%s: %s", self.verb, self.line(now))

    def line(self, now: float | None = None) -> str:
        now = now or time.monotonic()
        elapsed = max(now - self.start, 1e-9)
        text = f"{self.bytes / 1e6:,.0f} MB read, {self.rate(now)}, {self.bytes / elapsed / 1e6:.1f} MB/s"
        if self.total:
            left = max(self.total - self.bytes, 0) / max(self.bytes / elapsed, 1e-9)
            text += f", {100 * self.bytes / self.total:.0f} %, ETA {left / 60:.1f} min"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
