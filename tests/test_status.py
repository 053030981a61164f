"""`python -m scalselect status`: stages and extraction shards read from a workflow's
files: done, running with its progress and time left, stalled, failed with its error."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_workflow, snakemake, workflow_env

from scalselect.cli import main
from scalselect.data.readers import write_index
from scalselect.data.writers import write_records
from scalselect.progress import Progress
from scalselect.watch import status

RUN = "r"
LOGS = f"results/{RUN}/logs"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def progress_log(path: Path, total: int, steps: list[tuple[float, int]]) -> None:
    """A job log holding the lines a Progress writes, with a fixed clock: at each
    ``(time, done)`` step the count grows by ``done`` (a line when 30 s have passed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"test.status.{path}")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    clock = FakeClock()
    progress = Progress(total, clock=clock, logger=logger, bar=False)
    progress.note("reused", "20%")
    for moment, done in steps:
        clock.now = moment
        progress.update(done)
    handler.close()
    logger.removeHandler(handler)


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    """A workflow directory with one run of 30 samples in 3 extraction shards, its
    validation done and its filtered dataset (and index) written; nothing else."""
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "schema.yaml", tmp_path / "config" / "schema.yaml")
    config = {"runs": {RUN: {"dataset": "data.jsonl", "image_root": "img",
                             "model": {"path": "m", "type": "qwen"}}},
              "extract": {"shards": 3}}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / f"results/{RUN}/validate").mkdir(parents=True)
    (tmp_path / f"results/{RUN}/validate/report.json").write_text("{}")
    filtered = tmp_path / f"results/{RUN}/filter/dataset.jsonl"
    filtered.parent.mkdir(parents=True)
    write_records(filtered, [{"id": i} for i in range(30)])
    write_index(filtered, f"{filtered}.index.npz")
    # Shard 0 done: 7 computed, 3 reused.
    shard = tmp_path / f"results/{RUN}/extract/shard-0-of-3"
    shard.mkdir(parents=True)
    (shard / "manifest.json").write_text(
        json.dumps({"rows": 10, "samples_computed": 7, "samples_reused": 3}))
    return tmp_path


def read(workflow: Path, **kw) -> dict:
    return status(workflow / "config" / "config.yaml", workflow, **kw)["runs"][RUN]


def test_done_running_and_waiting_with_the_time_left(workflow: Path) -> None:
    # Shard 1: 8 of its 10 samples to compute; 4 done after 40 s (one line, at 40 s).
    progress_log(workflow / f"{LOGS}/extract/shard-1-of-3.log", 8, [(20, 2), (40, 2)])
    found = read(workflow)
    assert {n: s["state"] for n, s in found["stages"].items()} == {
        "validate": "done", "filter": "done", "extract": "running", "score": "waiting",
        "select": "waiting", "plots": "waiting", "browse": "waiting"}
    shards = {s["name"]: s for s in found["shards"]}
    assert [s["state"] for s in shards.values()] == ["done", "running", "waiting"]
    assert (shards["shard-0-of-3"]["computed"], shards["shard-0-of-3"]["reused"]) == (7, 3)
    # 4 in 40 s: 0.1/s, 4 left: 40 s.
    assert shards["shard-1-of-3"]["progress"] == {
        "done": 4, "total": 8, "left": 4, "rate": 0.1, "seconds_left": 40, "reused": "20%"}
    assert shards["shard-2-of-3"]["samples"] == 10
    # Left: 4 of shard 1 and all 10 of shard 2; at 0.1/s, 140 s.
    assert found["extraction"] == {
        "shards": 3, "shards_done": 1, "samples_computed": 7, "samples_reused": 3,
        "samples_left": 14, "rate": 0.1, "seconds_left": 140}
    assert found["stages"]["extract"]["detail"] == (
        "1/3 shards done; 7 computed, 3 reused; 14 left at 0.1/s, 0:02:20 left")


def test_a_quiet_log_is_stalled(workflow: Path) -> None:
    log = workflow / f"{LOGS}/extract/shard-1-of-3.log"
    progress_log(log, 8, [(40, 4)])
    old = time.time() - 25 * 60
    os.utime(log, (old, old))
    found = read(workflow, now=old + 25 * 60, stall_minutes=20)
    shard = found["shards"][1]
    assert (shard["state"], shard["detail"]) == ("stalled", "log unchanged for 0:25:00")
    assert found["stages"]["extract"]["state"] == "stalled"
    # No running shard: no rate, no time left.
    assert (found["extraction"]["rate"], found["extraction"]["seconds_left"]) == (0, None)
    # With a longer patience the same log is running.
    assert read(workflow, now=old + 25 * 60, stall_minutes=30)["shards"][1]["state"] == "running"


def test_failed_by_its_log_or_by_snakemake(workflow: Path) -> None:
    log = workflow / f"{LOGS}/extract/shard-1-of-3.log"
    log.parent.mkdir(parents=True)
    log.write_text("03:00:00 INFO chunk 0 stored\nTraceback (most recent call last):\n"
                   '  File "x.py", line 1\nRuntimeError: CUDA error: device-side assert\n')
    select_log = workflow / f"{LOGS}/select/top-32.jsonl.log"
    select_log.parent.mkdir(parents=True)
    select_log.write_text("budgets: ok\n")
    # Snakemake's record of the select job's failure (a SIGKILL leaves no error in the
    # job's own log), written after it.
    record = workflow / ".snakemake/log/2026-01-01T000000.000000.snakemake.log"
    record.parent.mkdir(parents=True)
    record.write_text(
        # Every job's description names its log: only those of an error count.
        "rule extract:\n    jobid: 3\n"
        f"    log: {LOGS}/extract/shard-0-of-3.log\n"
        "Command 'python -m scalselect select' returned non-zero exit status 137.\n"
        "Error in rule select_top:\n    jobid: 4\n"
        f"    log: {LOGS}/select/top-32.jsonl.log (check log file(s) for error details)\n")
    shard_0 = workflow / f"{LOGS}/extract/shard-0-of-3.log"
    shard_0.write_text("done\n")
    os.utime(shard_0, (0, 0))  # older than the record
    shutil.rmtree(workflow / f"results/{RUN}/extract/shard-0-of-3")
    found = read(workflow)
    assert found["shards"][0]["state"] == "stalled"  # not failed
    assert found["shards"][1]["state"] == "failed"
    assert found["shards"][1]["detail"] == (
        f"{LOGS}/extract/shard-1-of-3.log: RuntimeError: CUDA error: device-side assert")
    assert found["stages"]["extract"]["state"] == "failed"
    assert found["stages"]["select"] == {
        "state": "failed", "detail": f"{LOGS}/select/top-32.jsonl.log: exit status 137"}
    # A rerun writes the job's log after Snakemake's record: running again.
    later = record.stat().st_mtime + 60
    os.utime(select_log, (later, later))
    assert read(workflow, now=later)["stages"]["select"]["state"] == "running"


def test_cli_text_and_json(workflow: Path, capsys: pytest.CaptureFixture) -> None:
    progress_log(workflow / f"{LOGS}/extract/shard-1-of-3.log", 8, [(40, 4)])
    config = str(workflow / "config" / "config.yaml")
    assert main(["status", "--configfile", config, "--directory", str(workflow), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["snakemake_locked"] is False
    assert report["runs"][RUN]["extraction"]["samples_left"] == 14
    assert main(["status", "--configfile", config, "--directory", str(workflow)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert "  extract   running  1/3 shards done; 7 computed, 3 reused; 14 left at 0.1/s," \
           " 0:02:20 left" in text
    assert "  shard-1-of-3  running  10       4/8 done, 4 left, 0.1/s, 0:00:40 left" in text
    assert "  shard-2-of-3  waiting  10" in text


def test_a_wrong_configuration_is_a_user_error(workflow: Path, caplog) -> None:
    (workflow / "config" / "config.yaml").write_text("runs: {r: {dataset: 3}}\n")
    assert main(["status", "--configfile", str(workflow / "config" / "config.yaml"),
                 "--directory", str(workflow)]) != 0
    assert "runs.r.dataset: expected string, got 3" in caplog.text


def status_json(workdir: Path, *args: str) -> dict:
    """``python -m scalselect status --json`` run in the workflow directory."""
    result = subprocess.run(
        [sys.executable, "-m", "scalselect", "status", "--configfile", "config/config.yaml",
         "--json", *args], cwd=workdir, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.slow
def test_status_of_a_real_run_with_a_killed_shard(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "workflow")
    run, shards = "demo-qwen", [f"results/demo-qwen/extract/shard-{i}-of-4" for i in range(4)]
    snakemake(workdir, "--cores", "2", *shards[:2])
    # Shard 2's job killed (SIGKILL) once its first chunk is stored: no error in its log.
    env_run = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--cores", "1", shards[2]],
        cwd=workdir, env={**workflow_env(), "SCALSELECT_TEST_KILL_AFTER_PACKS": "1"},
        capture_output=True, text=True)
    assert env_run.returncode != 0
    filtered = json.loads((workdir / f"results/{run}/filter/dataset.json").read_text())
    assert len(filtered) % 4 == 0
    size = len(filtered) // 4  # four equal shards
    found = status_json(workdir)["runs"][run]
    states = {s["name"]: s for s in found["shards"]}
    assert [s["state"] for s in states.values()] == ["done", "done", "failed", "waiting"]
    for name in ("shard-0-of-4", "shard-1-of-4"):
        assert states[name]["computed"] + states[name]["reused"] == size
    assert states["shard-2-of-4"]["detail"] == (
        f"results/{run}/logs/extract/shard-2-of-4.log: exit status 137")
    assert states["shard-3-of-4"]["samples"] == size
    assert [found["stages"][s]["state"] for s in ("validate", "filter", "extract", "score")] == [
        "done", "done", "failed", "waiting"]
    # Half-finished: shard 1 running again, 30 of its samples done in 60 s (0.5/s).
    shutil.rmtree(workdir / shards[1])
    log = workdir / f"results/{run}/logs/extract/shard-1-of-4.log"
    log.unlink()
    progress_log(log, size, [(60, 30)])
    found = status_json(workdir)["runs"][run]
    assert found["shards"][1]["state"] == "running"
    assert found["shards"][1]["progress"]["left"] == size - 30
    # Left: the rest of shard 1 and all of shards 2 (to rerun) and 3, at 0.5/s.
    left = size - 30 + 2 * size
    assert (found["extraction"]["samples_left"], found["extraction"]["seconds_left"]) == (
        left, round(left / 0.5))
    # The same log untouched for an hour: stalled.
    old = time.time() - 3600
    os.utime(log, (old, old))
    assert status_json(workdir, "--stall-minutes", "30")["runs"][run]["shards"][1]["state"] == (
        "stalled")
