"""The README's commands as a new user runs them: a fresh copy of the repository, its own
.venv, a shell where nothing is activated (only /usr/bin:/bin on PATH)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_workflow, tracked_files

from scalselect.data.writers import write_records
from scalselect.demo.build import build_dataset, build_models

# Every test here runs commands in a shell: `make test-fast` leaves them out.
pytestmark = pytest.mark.integration

# The shared environment this test runs in (bootstrap_venv.sh writes the marker).
SHARED_MARKER = Path(sys.prefix) / ".scalselect-shared"

needs_overlay = pytest.mark.skipif(
    not SHARED_MARKER.exists(), reason="the tests do not run in a .venv made by bootstrap_venv.sh"
)


def readme_commands(section: str) -> str:
    """The first bash block of a README section, as written."""
    text = (REPO / "README.md").read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", text, flags=re.DOTALL).group(1)


def clean_shell(workdir: Path, script: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``script`` in bash, in ``workdir``, with an environment a fresh login would have
    and nothing activated. PYTHON only tells bootstrap_venv.sh (if make ran it) which
    interpreter built the shared environment, so that it is reused, not rebuilt."""
    shared_python = Path(SHARED_MARKER.read_text().strip()) / "bin/python"
    env = {"HOME": os.environ["HOME"], "PATH": "/usr/bin:/bin", "PYTHON": str(shared_python)}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the repository with its own .venv, made by the bootstrap script."""
    workdir = copy_workflow(tmp_path_factory.mktemp("clone") / "scalselect")
    result = clean_shell(workdir, "bash scripts/bootstrap_venv.sh")
    assert result.returncode == 0, result.stderr
    return workdir


@needs_overlay
def test_venv_is_this_clones_own_and_runs_its_package_from_any_folder(
    clone: Path, tmp_path: Path
) -> None:
    venv = clone / ".venv"
    assert venv.is_dir() and not venv.is_symlink()
    probe = (
        f"{venv}/bin/python -c 'import sys, scalselect, pandas; "
        "print(sys.prefix); print(scalselect.__file__)'"
    )
    result = clean_shell(tmp_path, probe)
    assert result.returncode == 0, result.stderr
    prefix, package = result.stdout.split()
    assert Path(prefix) == venv
    assert Path(package) == clone / "scalselect/__init__.py"
    for command in (
        f"{venv}/bin/python -m scalselect --help",
        f"{venv}/bin/scalselect --help",
    ):
        result = clean_shell(tmp_path, command)
        assert result.returncode == 0 and "validate" in result.stdout, (command, result.stderr)
    result = clean_shell(tmp_path, f"{venv}/bin/snakemake --version")
    assert result.returncode == 0 and result.stdout.startswith("9."), result.stderr


def own_config(clone: Path, data: Path) -> None:
    """my-config.yaml of the README, pointing at a JSON Lines dataset and a model outside
    the clone."""
    config = {
        "runs": {
            "mine": {
                "dataset": str(data / "dataset.jsonl"),
                "image_root": str(data / "images"),
                "model": {"path": str(data / "models/tiny-llava"), "type": "llava"},
            }
        },
        "extract": {"shards": 1},
        "select": {"budgets": [20, "10%"]},
        "plots": {"formats": ["png"], "dpi": 60},
    }
    (clone / "my-config.yaml").write_text(yaml.safe_dump(config))


@needs_overlay
@pytest.mark.slow
def test_own_data_commands_run_as_written_in_a_clean_shell(clone: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_dataset(data)
    build_models(data)
    records = json.loads((data / "dataset.json").read_text())
    write_records(data / "dataset.jsonl", records)
    own_config(clone, data)
    commands = readme_commands("Your own dataset and model")
    assert ".venv/bin/snakemake --configfile my-config.yaml" in commands
    result = clean_shell(clone, commands)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    # JSON Lines in, JSON Lines out, at every stage.
    lines = (clone / "results/mine/select/top-20.jsonl").read_text().splitlines()
    top = [json.loads(line) for line in lines]
    assert len(top) == 20 and all(record in records for record in top)
    filtered = (clone / "results/mine/filter/dataset.jsonl").read_bytes()
    kept = [json.loads(line) for line in filtered.decode().splitlines()]
    assert kept and all(record in records for record in kept)
    assert not (clone / "results/mine/filter/dataset.json").exists()
    # The shard is bound to the dataset it indexes.
    manifest = json.loads((clone / "results/mine/extract/shard-0-of-1/manifest.json").read_text())
    assert manifest["dataset_sha256"] == hashlib.sha256(filtered).hexdigest()
    assert (clone / "results/mine/plots/attention_gallery.png").exists()
    # Nothing the workflow wrote is a file git would show.
    new = sorted(
        str(path.relative_to(clone)) for path in clone.rglob("*")
        if path.is_file() and ".venv" not in path.parts
    )
    untracked = set(new) - set(tracked_files()) - {"my-config.yaml"}
    assert untracked and not_ignored(untracked) == []


def not_ignored(paths: set[str]) -> list[str]:
    """The paths the repository's .gitignore does not ignore."""
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", "--stdin"],
        cwd=REPO, input="\n".join(sorted(paths)), capture_output=True, text=True,
    )
    return [line.split("\t")[1] for line in result.stdout.splitlines() if line.startswith("::")]


@needs_overlay
def test_slurm_commands_plan_as_written_in_a_clean_shell(clone: Path, tmp_path: Path) -> None:
    own_config(clone, tmp_path / "data")
    (tmp_path / "data/models/tiny-llava").mkdir(parents=True)
    (tmp_path / "data/models/tiny-llava/config.json").write_text('{"model_type": "llava"}')
    (tmp_path / "data/dataset.jsonl").write_text("")
    (tmp_path / "data/images").mkdir()
    commands = readme_commands("Running on SLURM")
    assert commands.rstrip().splitlines()[-1].startswith(".venv/bin/snakemake --profile slurm")
    result = clean_shell(clone, commands.rstrip() + " --dry-run")
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    # (jobs of a group are listed indented under it)
    assert re.search(r"rule extract:\n(?: +.*\n)*? +resources: .*slurm_partition=gpu", result.stdout)
    assert re.search(r"rule validate:\n(?: +.*\n)*? +resources: .*slurm_partition=cpu", result.stdout)


@pytest.mark.slow
def test_demo_leaves_git_status_clean(demo_workflow: Path) -> None:
    written = {
        str(path.relative_to(demo_workflow)) for path in demo_workflow.rglob("*")
        if path.is_file()
    } - set(tracked_files())
    assert "resources/demo/dataset.json" in written
    assert not_ignored(written) == []
