"""The progress lines: rates, time left and text with a fixed clock; the bar on a terminal."""

from __future__ import annotations

import io
import logging

import pytest

from scalselect.progress import Progress, parse_line


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.progress"]


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.INFO, logger="test.progress")
    return logging.getLogger("test.progress")


def test_lines_at_the_interval_and_on_demand(logger, caplog):
    clock = FakeClock()
    progress = Progress(5000, clock=clock, logger=logger, stream=io.StringIO())
    clock.now = 10.0
    progress.update(600)
    assert lines(caplog) == []  # 10 s < 30 s
    clock.now = 30.0
    progress.update(600)
    # 1200 in 30 s: 40/s in both windows; 3800 left at 40/s = 95 s.
    assert lines(caplog) == [
        "progress: 1200/5000 samples (24.0%), 40.0/s last 30 s, 40.0/s overall, 0:01:35 left"
    ]
    clock.now = 50.0
    progress.note("reused", "12%")
    progress.update(900, images=3000)
    progress.report()
    # Last 20 s: 900 / 20 = 45/s; overall 2100 / 50 = 42/s; 2900 / 42 = 69.05 s;
    # images 3000 / 50 s = 60/s.
    assert lines(caplog)[-1] == (
        "progress: 2100/5000 samples (42.0%), 45.0/s last 20 s, 42.0/s overall,"
        " 0:01:09 left; reused 12%; images 60.0/s"
    )
    clock.now = 60.0
    progress.update(2900)
    progress.close()
    # The last line: 2900 in 10 s, 5000 in 60 s (83.33/s), nothing left.
    assert lines(caplog)[-1].startswith(
        "progress: 5000/5000 samples (100.0%), 290.0/s last 10 s, 83.3/s overall, 0:00:00 left"
    )
    assert len(lines(caplog)) == 3


def test_configurable_interval_and_unknown_total(logger, caplog):
    clock = FakeClock()
    progress = Progress(None, "records", interval=5, clock=clock, logger=logger,
                        stream=io.StringIO())
    clock.now = 4.0
    progress.update(8)
    clock.now = 8.0
    progress.update(8)
    # 16 records in 8 s; no total, so no share and no time left.
    assert lines(caplog) == ["progress: 16 records, 2.0/s last 8 s, 2.0/s overall"]


def test_time_left_unknown_before_anything_is_done(logger, caplog):
    clock = FakeClock()
    progress = Progress(10, clock=clock, logger=logger, stream=io.StringIO())
    clock.now = 31.0
    progress.update(0)
    assert lines(caplog) == [
        "progress: 0/10 samples (0.0%), 0.0/s last 31 s, 0.0/s overall, ? left"
    ]


def test_parse_line_reads_what_progress_writes(logger, caplog):
    clock = FakeClock()
    progress = Progress(5000, clock=clock, logger=logger, stream=io.StringIO())
    progress.note("reused", "12%")
    clock.now = 40.0
    progress.update(1000)
    reading = parse_line(f"03:12:00 INFO scalselect.extract.shard: {lines(caplog)[0]}")
    assert reading is not None
    # 1000 in 40 s = 25/s; 4000 / 25 = 160 s.
    assert (reading.done, reading.total, reading.left, reading.unit) == (1000, 5000, 4000, "samples")
    assert (reading.recent_rate, reading.window, reading.overall_rate) == (25.0, 40, 25.0)
    assert reading.seconds_left == 160
    assert reading.fields == {"reused": "12%"}
    assert parse_line("03:12:00 INFO chunk 3 stored (64 samples, pack x)") is None


def test_a_terminal_gets_a_bar_and_no_lines(logger, caplog):
    clock = FakeClock()
    terminal = Terminal()
    with Progress(100, clock=clock, logger=logger, stream=terminal) as progress:
        clock.now = 60.0
        progress.update(50)
        progress.report()
    assert lines(caplog) == []
    assert "50/100" in terminal.getvalue()
