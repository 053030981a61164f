"""Shared test helpers: copies of the workflow in temporary directories and Snakemake runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import tqdm

REPO = Path(__file__).resolve().parents[1]

# tqdm's default write lock holds a multiprocessing semaphore that every process forked
# from this one shares: a forked test process killed while holding it (a mutant timed out
# by `make mutation`) leaves it locked, and every later bar waits forever. A thread lock
# is copied, not shared, by fork.
tqdm.tqdm.set_lock(threading.RLock())


def tracked_files() -> list[str]:
    """The repository's files as git sees them (tracked plus untracked, not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
    return [line for line in out.splitlines() if (REPO / line).is_file()]


def copy_workflow(dest: Path) -> Path:
    """Copy the workflow (no results, no resources) into ``dest``; link the environment."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in tracked_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


def workflow_env() -> dict[str, str]:
    """Environment for Snakemake subprocesses: jobs find this interpreter's `python`."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``snakemake ARGS`` in ``workdir`` (the workflow profile applies as for users)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), *args],
        cwd=workdir, env=workflow_env(), capture_output=True, text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
        )
    return result


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule name -> job count that a dry run of ``snakemake ARGS`` would execute."""
    # Targets first: `--quiet` takes several values and would swallow them.
    out = snakemake(workdir, *args, "--dry-run", "--quiet", "rules").stdout
    jobs: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def demo_parquet(demo: Path) -> Path:
    """The demo's LLaVA-OneVision-style parquet pool (written by the demo's builder): each
    image embedded as {"bytes", "path"} where its file exists, else given by path."""
    path = demo / "dataset.parquet"
    assert path.is_file(), f"{path}: the demo builder writes it"
    return path


@pytest.fixture(scope="session")
def demo_workflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow on which the whole demo has run once (shared by tests that
    only read its results or dry-run on top of it; do not modify it — copy it)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("demo") / "workflow")
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture(autouse=True)
def simulated_auto_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``SCALSELECT_TEST_AUTO_DTYPE=bfloat16`` in the environment, ``dtype: auto``
    resolves to that dtype on the CPU too, as it does on a CUDA machine: ``make test``
    then runs as it would on a GPU. Only in the test process; the subprocesses of
    Snakemake and accelerate keep the machine's own default."""
    forced = os.environ.get("SCALSELECT_TEST_AUTO_DTYPE")
    if not forced:
        return
    import torch

    from scalselect.extract import reference, representation
    from scalselect.extract import shard as extraction

    original = representation.resolve_dtype

    def resolve(dtype: str, device: torch.device) -> torch.dtype:
        return original(forced if dtype == "auto" else dtype, device)

    monkeypatch.setattr(representation, "resolve_dtype", resolve)
    monkeypatch.setattr(reference, "resolve_dtype", resolve)
    monkeypatch.setattr(extraction, "resolve_dtype", resolve)
