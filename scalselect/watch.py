"""Where a workflow stands (``python -m scalselect status``), read from its files only.

For each run of a configuration, each stage (validate, filter, extract, score, select,
plots, browse) is one of:

- ``done``: every output the default target asks of the stage exists;
- ``failed``: a log of the stage ends in an error (a traceback, an ``Error`` line), or
  Snakemake recorded the job as failed (an ``Error in rule`` block naming the log in
  ``.snakemake/log/``, written after the job's log);
- ``running``: a log, written within the last ``stall`` seconds (or an output Snakemake
  marks incomplete);
- ``stalled``: a running job whose log has not changed for longer than that;
- ``waiting``: no output, no log.

Extraction is shown shard by shard: samples computed and reused (``manifest.json``), or
the last progress line of a running shard's log (:mod:`scalselect.progress`), or the
error line of a failed one; then the combined rate of the running shards and the time
left to the end of extraction at that rate. Nothing is written and Snakemake's lock is
never taken.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from scalselect.config import problem_report, schema_problems
from scalselect.data.index import DatasetIndex, shard_range
from scalselect.errors import UserError
from scalselect.extract import features
from scalselect.progress import Reading, clock_text, parse_line
from scalselect.workflow import Plan

STAGES = ("validate", "filter", "extract", "score", "select", "plots", "browse")
STALL_MINUTES = 20.0
# A job log's line that says it failed.
_ERROR = re.compile(r"Traceback|\bError\b|Error:|error:|non-zero exit")
_TAIL_BYTES = 16_384
_SNAKEMAKE_ERROR = re.compile(r"returned non-zero exit status (\d+)")


def load_plan(configfile: str | Path, workdir: str | Path = ".") -> Plan:
    """The plan of ``configfile``, validated as the workflow does (``config/schema.yaml``
    of ``workdir``: readable problems, then Snakemake's validation filling defaults)."""
    from snakemake.utils import validate

    try:
        config = yaml.safe_load(Path(configfile).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"cannot read the configuration {configfile}: {error}") from None
    schema_path = (Path(workdir) / "config" / "schema.yaml").resolve()
    schema = yaml.safe_load(schema_path.read_text())
    problems = schema_problems(config, schema)
    if problems:
        raise UserError(problem_report(problems, "configuration"))
    overrides = copy.deepcopy(config.get("runs") or {})
    validate(config, str(schema_path))
    return Plan(config, overrides)


def stage_files(plan: Plan, run: str) -> dict[str, tuple[list[str], list[str]]]:
    """Per stage, the outputs the default target asks of it and its logs' patterns."""
    logs = f"results/{run}/logs"
    return {
        "validate": ([f"results/{run}/validate/report.json"],
                     [f"{logs}/validate.log", f"{logs}/validate/*.log"]),
        "filter": ([plan.filtered_path(run)], [f"{logs}/filter.*.log"]),
        "extract": (plan.shard_dirs(run), [f"{logs}/extract/*.log"]),
        "score": ([f"results/{run}/score/importance_scores.jsonl"], [f"{logs}/cur.log"]),
        "select": ([f"results/{run}/select/summary.csv"], [f"{logs}/select/*.log"]),
        "plots": (plan.plot_targets(run), [f"{logs}/plots/*.log"]),
        "browse": ([f"results/{run}/browse"], [f"{logs}/browse.log"]),
    }


@dataclasses.dataclass(frozen=True)
class Failure:
    """A job Snakemake recorded as failed: when (its log's time) and its exit status."""

    when: float
    detail: str


def snakemake_failures(workdir: Path) -> dict[str, Failure]:
    """Job log path -> its latest failure in Snakemake's logs (``.snakemake/log``): the
    ``log:`` of each ``Error in rule`` block, with the exit status reported before it."""
    failures: dict[str, Failure] = {}
    for path in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log")):
        when, status, in_error = path.stat().st_mtime, "", False
        for line in path.read_text(errors="replace").splitlines():
            exit_status = _SNAKEMAKE_ERROR.search(line)
            if exit_status:
                status = f"exit status {exit_status[1]}"
            elif line.startswith("Error in rule "):
                in_error = True
            elif not line[:1].isspace():
                in_error = False
            elif in_error and line.strip().startswith("log: "):
                for log in line.strip()[5:].split(" (")[0].split(", "):
                    failures[log] = Failure(when, status or "Snakemake reports the job failed")
                status = ""
    return failures


def _tail(path: Path) -> list[str]:
    """The lines of a log's last ``_TAIL_BYTES`` bytes."""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
        return handle.read().decode(errors="replace").splitlines()


def error_line(path: Path) -> str | None:
    """The last line of a log's tail that says it failed, else ``None``."""
    found = [line.strip() for line in _tail(path) if _ERROR.search(line)]
    return found[-1] if found else None


def last_reading(path: Path, unit: str = "samples") -> Reading | None:
    """The last progress line counting ``unit`` of a log, parsed (an extract job's key
    pass counts the images it fetches from a URL before its samples)."""
    readings = [reading for line in _tail(path)
                if (reading := parse_line(line)) is not None and reading.unit == unit]
    return readings[-1] if readings else None


def incomplete(workdir: Path, output: str) -> bool:
    """Whether Snakemake marks ``output`` incomplete (its job started, not finished)."""
    name = base64.urlsafe_b64encode(output.encode()).decode()
    return (workdir / ".snakemake" / "incomplete" / name).exists()


@dataclasses.dataclass
class Watcher:
    """What is needed to judge the jobs of a workflow directory at one moment."""

    workdir: Path
    now: float
    stall_seconds: float
    failures: dict[str, Failure]

    def job(self, outputs: Sequence[str], logs: Sequence[Path]) -> tuple[str, str]:
        """``(state, detail)`` of a job (or a stage) from its outputs and logs."""
        if outputs and all((self.workdir / out).exists() for out in outputs):
            return "done", ""
        for log in logs:
            failure = self.failures.get(str(log.relative_to(self.workdir)))
            error = error_line(log)
            if error is None and failure is not None and failure.when >= log.stat().st_mtime:
                error = failure.detail
            if error is not None:
                return "failed", f"{log.relative_to(self.workdir)}: {error}"
        if logs:
            quiet = self.now - max(log.stat().st_mtime for log in logs)
            if quiet > self.stall_seconds:
                return "stalled", f"log unchanged for {clock_text(quiet)}"
            return "running", ""
        if any(incomplete(self.workdir, out) for out in outputs):
            return "running", "outputs marked incomplete"
        return "waiting", ""

    def logs(self, patterns: Sequence[str]) -> list[Path]:
        """The existing logs matching ``patterns`` (relative to the workflow)."""
        return sorted({path for pattern in patterns for path in self.workdir.glob(pattern)})


@dataclasses.dataclass
class Shard:
    """One extraction shard's state."""

    name: str
    state: str
    samples: int | None = None  # the shard's size, when the filtered index tells it
    computed: int | None = None
    reused: int | None = None
    progress: Reading | None = None
    detail: str = ""


def shard_sizes(plan: Plan, run: str, workdir: Path) -> list[int | None]:
    """Each shard's sample count, from the filtered dataset's index (``None`` before
    ``filter`` wrote it)."""
    n = plan.settings(run, "extract")["shards"]
    path = workdir / plan.filtered_index(run)
    if not path.exists():
        return [None] * n
    count = DatasetIndex.load(path).count
    return [len(shard_range(count, i, n)) for i in range(n)]


def extract_shards(plan: Plan, run: str, watcher: Watcher) -> list[Shard]:
    """Every extraction shard of a run, in order."""
    shards = []
    sizes = shard_sizes(plan, run, watcher.workdir)
    for name, directory, size in zip(plan.shard_names(run), plan.shard_dirs(run), sizes,
                                     strict=True):
        manifest = watcher.workdir / directory / features.MANIFEST
        log = watcher.workdir / f"results/{run}/logs/extract/{name}.log"
        if manifest.exists():
            done = json.loads(manifest.read_text())
            shards.append(Shard(name, "done", done["rows"], done["samples_computed"],
                                done["samples_reused"]))
            continue
        state, detail = watcher.job([directory], [log] if log.exists() else [])
        reading = last_reading(log) if state in ("running", "stalled") else None
        shards.append(Shard(name, state, size, progress=reading, detail=detail))
    return shards


def extraction_summary(shards: Sequence[Shard]) -> dict[str, Any]:
    """Shards done, samples computed and reused, the running shards' combined rate and
    the time left to the end of extraction at that rate (``None`` when unknown)."""
    running = [s for s in shards if s.state == "running" and s.progress is not None]
    rate = sum(s.progress.recent_rate for s in running)
    left: int | None = 0
    for shard in shards:
        if shard.state == "done":
            continue
        if shard.progress is not None and shard.progress.left is not None:
            left += shard.progress.left
        elif shard.samples is not None and left is not None:
            left += shard.samples
        else:
            left = None
    return {
        "shards": len(shards),
        "shards_done": sum(s.state == "done" for s in shards),
        "samples_computed": sum(s.computed or 0 for s in shards),
        "samples_reused": sum(s.reused or 0 for s in shards),
        "samples_left": left,
        "rate": round(rate, 1),
        "seconds_left": round(left / rate) if left is not None and rate > 0 else None,
    }


def run_status(plan: Plan, run: str, watcher: Watcher) -> dict[str, Any]:
    """A run's stages (state, detail; extract's from its shards) and its shards."""
    shards = extract_shards(plan, run, watcher)
    extraction = extraction_summary(shards)
    stages = {}
    for stage, (outputs, patterns) in stage_files(plan, run).items():
        if stage == "extract":
            state, detail = _extract_state(shards), _extraction_text(extraction)
        else:
            state, detail = watcher.job(outputs, watcher.logs(patterns))
        stages[stage] = {"state": state, "detail": detail}
    return {"stages": stages, "extraction": extraction,
            "shards": [_shard_record(shard) for shard in shards]}


def _extraction_text(summary: dict[str, Any]) -> str:
    """The extract stage's detail: shards done, samples, rate, time left."""
    text = (f"{summary['shards_done']}/{summary['shards']} shards done;"
            f" {summary['samples_computed']} computed, {summary['samples_reused']} reused")
    if summary["samples_left"]:
        text += f"; {summary['samples_left']} left"
        if summary["seconds_left"] is not None:
            text += f" at {summary['rate']}/s, {clock_text(summary['seconds_left'])} left"
    return text


def _extract_state(shards: Sequence[Shard]) -> str:
    """The extract stage's state from its shards': the first of failed, stalled,
    running, waiting that any shard is in (done when all are)."""
    for state in ("failed", "stalled", "running", "waiting"):
        if any(shard.state == state for shard in shards):
            return state
    return "done"


def _shard_record(shard: Shard) -> dict[str, Any]:
    record = dataclasses.asdict(shard)
    reading = shard.progress
    record["progress"] = None if reading is None else {
        "done": reading.done, "total": reading.total, "left": reading.left,
        "rate": reading.recent_rate, "seconds_left": reading.seconds_left, **reading.fields,
    }
    return record


def status(
    configfile: str | Path,
    workdir: str | Path = ".",
    stall_minutes: float = STALL_MINUTES,
    now: float | None = None,
) -> dict[str, Any]:
    """Where every run of ``configfile`` stands (see the module docstring)."""
    workdir = Path(workdir)
    plan = load_plan(configfile, workdir)
    watcher = Watcher(workdir, time.time() if now is None else now, 60 * stall_minutes,
                      snakemake_failures(workdir))
    locks = workdir / ".snakemake" / "locks"
    return {
        "snakemake_locked": locks.is_dir() and any(locks.iterdir()),
        "runs": {run: run_status(plan, run, watcher) for run in plan.runs},
    }


def _shard_text(shard: dict[str, Any]) -> str:
    """A shard's detail column."""
    if shard["state"] == "done":
        return f"{shard['computed']} computed, {shard['reused']} reused"
    reading = shard["progress"]
    if reading is None:
        return shard["detail"]
    text = f"{reading['done']}/{reading['total']} done, {reading['left']} left, {reading['rate']}/s"
    if reading["seconds_left"] is not None:
        text += f", {clock_text(reading['seconds_left'])} left"
    return "; ".join(part for part in (text, shard["detail"]) if part)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as left-aligned columns, indented by two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def format_status(report: dict[str, Any]) -> str:
    """The plain-text tables of a :func:`status` report: per run, its stages, then its
    extraction shards."""
    lines = ["snakemake: " + ("locked (a run is in progress)" if report["snakemake_locked"]
                              else "not locked")]
    for run, found in report["runs"].items():
        lines += ["", f"run {run}"]
        lines += _table([("stage", "state", "detail"),
                         *((name, s["state"], s["detail"]) for name, s in found["stages"].items())])
        lines += _table([("shard", "state", "samples", "detail"), *(
            (s["name"], s["state"], "?" if s["samples"] is None else str(s["samples"]),
             _shard_text(s)) for s in found["shards"])])
    return "\n".join(lines)
