"""Progress of a long loop: a log line at a steady interval, or a bar on a terminal.

A :class:`Progress` counts what a loop has done of its ``total`` and, every
``interval`` seconds (and whenever asked, e.g. at each stored chunk), logs one line::

    progress: 1200/5000 samples (24.0%), 41.2/s last 30 s, 38.7/s overall, 0:01:38 left; reused 12%; images 40.1/s

- ``last 30 s``: the rate since the previous line (its window in whole seconds);
- ``overall``: the rate since the start; the time left is ``left / overall rate``
  (``?`` while nothing is done);
- ``; name value`` fields follow: the caller's own (:meth:`Progress.note`, in the order
  first noted), then ``images N/s`` (overall) when images are counted.

Without a total (a stream of unknown length) the line is
``progress: 1200 samples, 41.2/s last 30 s, 38.7/s overall``. :func:`parse_line` reads
a line back (``python -m scalselect status`` does). On an interactive terminal
(``stderr.isatty()``) a tqdm bar replaces the lines; a log file gets lines only. The
clock is injectable, so tests fix every rate.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

log = logging.getLogger(__name__)

INTERVAL = 30.0
PREFIX = "progress: "
_LINE = re.compile(
    r"progress: (?P<done>\d+)(?:/(?P<total>\d+))? (?P<unit>\w+)(?: \([\d.]+%\))?,"
    r" (?P<recent>[\d.]+)/s last (?P<window>\d+) s, (?P<overall>[\d.]+)/s overall"
    r"(?:, (?P<left>[\d:]+|\?) left)?(?P<fields>(?:; [^;]*)*)$"
)


def clock_text(seconds: float) -> str:
    """``h:mm:ss`` (hours unbounded) of a duration, rounded to the second.

    >>> clock_text(98.4), clock_text(90061)
    ('0:01:38', '25:01:01')
    """
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def clock_seconds(text: str) -> int:
    """The seconds of an ``h:mm:ss`` text (:func:`clock_text`'s inverse).

    >>> clock_seconds("25:01:01")
    90061
    """
    hours, minutes, seconds = (int(part) for part in text.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Reading:
    """One progress line, parsed (:func:`parse_line`)."""

    done: int
    total: int | None
    unit: str
    recent_rate: float
    window: int
    overall_rate: float
    seconds_left: int | None  # None: no total, or nothing done yet
    fields: dict[str, str]

    @property
    def left(self) -> int | None:
        """What is left to do, when the total is known."""
        return None if self.total is None else self.total - self.done


def parse_line(line: str) -> Reading | None:
    """The reading of a log line holding a progress line (after any log prefix), else
    ``None``.

    >>> parse_line("12:00:00 INFO x: progress: 3/4 samples (75.0%), 1.5/s last 2 s,"
    ...            " 1.0/s overall, 0:00:01 left; reused 50%").fields
    {'reused': '50%'}
    """
    at = line.find(PREFIX)
    match = _LINE.match(line[at:].rstrip()) if at >= 0 else None
    if match is None:
        return None
    fields = {}
    for field in match["fields"].split("; ")[1:]:
        name, _, value = field.partition(" ")
        fields[name] = value
    left = match["left"]
    return Reading(
        done=int(match["done"]),
        total=None if match["total"] is None else int(match["total"]),
        unit=match["unit"],
        recent_rate=float(match["recent"]),
        window=int(match["window"]),
        overall_rate=float(match["overall"]),
        seconds_left=None if left in (None, "?") else clock_seconds(left),
        fields=fields,
    )


class Progress:
    """Counts a loop's progress and reports it (see the module docstring).

    Parameters
    ----------
    total : int or None
        How many units the loop will do; ``None`` when unknown.
    unit : str
        What is counted (one word): ``samples``, ``rows``, ``records``.
    interval : float
        Seconds between lines (at least; a line is due at the first update after).
    clock : callable
        Seconds, monotonic (``time.monotonic``; tests pass a fake).
    logger : logging.Logger
        Where lines go.
    bar : bool or None
        A tqdm bar instead of lines; ``None``: when ``stream`` is a terminal.
    stream : text stream
        The bar's stream (``sys.stderr``).
    """

    def __init__(
        self,
        total: int | None,
        unit: str = "samples",
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
        bar: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.unit, self.interval = total, unit, interval
        self.clock, self.logger = clock, logger
        self.done = self.images = 0
        self.fields: dict[str, str] = {}
        self.began = self.last_time = clock()
        self.last_done = 0
        stream = sys.stderr if stream is None else stream
        if bar is None:
            bar = stream.isatty()
        self.bar: Any = tqdm(total=total, unit=unit[:-1] if unit.endswith("s") else unit,
                             file=stream, mininterval=1.0) if bar else None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def note(self, name: str, value: str) -> None:
        """Show ``; name value`` in the lines from now on (a later note replaces it)."""
        self.fields[name] = value
        if self.bar is not None:
            self.bar.set_postfix(self.fields, refresh=False)

    def update(self, done: int = 0, images: int = 0) -> None:
        """Count ``done`` more units and ``images`` more images; log a line when due."""
        self.done += done
        self.images += images
        if self.bar is not None:
            self.bar.update(done)
        elif self.clock() - self.last_time >= self.interval:
            self.report()

    def line(self) -> str:
        """The progress line now (and, as its ``last`` window, since the previous one)."""
        now = self.clock()
        overall = _rate(self.done, now - self.began)
        window = now - self.last_time
        recent = _rate(self.done - self.last_done, window)
        head = f"{PREFIX}{self.done}"
        if self.total is not None:
            share = 100 * self.done / self.total if self.total else 100.0
            head += f"/{self.total} {self.unit} ({share:.1f}%)"
        else:
            head += f" {self.unit}"
        text = f"{head}, {recent:.1f}/s last {round(window)} s, {overall:.1f}/s overall"
        if self.total is not None:
            left = self.total - self.done
            text += f", {clock_text(left / overall) if overall > 0 else '?'} left"
        fields = dict(self.fields)
        if self.images:
            fields["images"] = f"{_rate(self.images, now - self.began):.1f}/s"
        return text + "".join(f"; {name} {value}" for name, value in fields.items())

    def report(self) -> None:
        """Log the line now (a bar refreshes instead); the next window starts here."""
        if self.bar is not None:
            self.bar.refresh()
            return
        self.logger.info("%s", self.line())
        self.last_time, self.last_done = self.clock(), self.done

    def close(self) -> None:
        """End: the last line (or close the bar)."""
        if self.bar is not None:
            self.bar.close()
        elif self.done != self.last_done:
            self.report()
