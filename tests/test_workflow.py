"""The workflow as users run it: configuration checks, a real Snakemake run of the demo,
and what reruns when."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_workflow, planned_jobs, snakemake

from scalselect.demo.tinymodels import build_tiny_model

# Every test here runs Snakemake: `make test-fast` leaves them out.
pytestmark = pytest.mark.integration

SNAKEMAKE_BIN = Path(sys.executable).parent


def write_config(workdir: Path, run_overrides: dict | None = None, **changes) -> Path:
    """A config file in ``workdir``: the demo config with top-level ``changes`` and
    ``run_overrides`` ({run: {stage: settings}}) merged into its runs."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(changes)
    for run, sections in (run_overrides or {}).items():
        config["runs"][run].update(sections)
    path = workdir / "test-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path / "workflow")


def test_every_wrong_key_is_reported_in_one_short_message(workflow: Path) -> None:
    config = write_config(
        workflow,
        {"demo-llava": {"extract": {"batchsize": 4}}},
        score={"sv_treshold": 0.5, "center": "yes"},
        plts={},
    )
    result = snakemake(workflow, "--dry-run", "--configfile", str(config), check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert (
        "configuration: 4 problems, nothing was run:\n"
        "  plts: unknown key, did you mean 'plots'?\n"
        "  runs.demo-llava.extract.batchsize: unknown key, did you mean 'batch_size'?\n"
        "  score.center: expected boolean, got \"yes\"\n"
        "  score.sv_treshold: unknown key, did you mean 'sv_threshold'?\n"
    ) in output
    # No dump of the schema (it used to print all of it).
    assert "additionalProperties" not in output and "$defs" not in output
    assert len(output) < 2000, output


def test_run_problems_fail_before_any_job_naming_run_and_key(
    workflow: Path, tmp_path: Path
) -> None:
    model = build_tiny_model("llava", tmp_path / "my-llava")
    dataset = tmp_path / "mine.json"
    dataset.write_text("[]")
    config = workflow / "mine.yaml"
    config.write_text(yaml.safe_dump({
        "runs": {"mine": {
            "dataset": str(dataset),
            "image_root": str(tmp_path / "no-images"),
            "model": {"path": str(model), "type": "qwen"},
        }},
        "select": {"budgets": [10, "150%", "20%"]},
    }))
    result = snakemake(
        workflow, "--dry-run", "--configfile", str(config), "--replace-workflow-config",
        check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert (
        "configuration: 3 problems, nothing was run:\n"
        f"  runs.mine: image_root '{tmp_path / 'no-images'}' does not exist (or is not a folder)\n"
        f"  runs.mine: model.type is 'qwen' but {model}/config.json says model_type 'llava';"
        " set model.type: llava\n"
        "  runs.mine: select.budgets: '150%' is more than 100% of the scored samples\n"
    ) in output
    assert "Job stats" not in output  # nothing was planned


def test_budgets_below_the_kmeans_clusters_are_warned_of_before_any_job(
    workflow: Path,
) -> None:
    """The issue's case: the default 100 clusters and a budget of 20 (the percentage is
    checked once the scored samples are known: tests/test_config.py)."""
    config = write_config(workflow, select={
        "budgets": [20, "25%"], "methods": ["scalselect", "random", "kmeans"],
        "kmeans_clusters": 100})
    result = snakemake(workflow, "--dry-run", "--configfile", str(config))
    out = result.stdout + result.stderr
    assert ("runs.demo-qwen: select: budget 20 picks 20 samples but select.kmeans_clusters"
            " is 100: k-means takes one sample from each of the 20 largest clusters and none"
            " from the other 80; set select.kmeans_clusters to at most 20") in out
    assert out.count("budget 20 picks 20 samples") == 4  # once per run
    config = write_config(workflow, select={"budgets": [20, "25%"], "kmeans_clusters": 100,
                                            "methods": ["scalselect", "random", "kcenter"]})
    result = snakemake(workflow, "--dry-run", "--configfile", str(config))
    assert "picks 20 samples" not in result.stdout + result.stderr  # no k-means, no warning


def test_budgets_on_the_command_line(workflow: Path) -> None:
    # Snakemake's --config passes nested values as strings ('50').
    jobs = planned_jobs(workflow, "--config", 'select={budgets: [50, "20%"], random_seeds: [0]}')
    runs = yaml.safe_load((REPO / "config/config.yaml").read_text())["runs"]
    assert jobs.get("select_summary") == len(runs)


def test_workflow_is_lint_and_format_clean() -> None:
    lint = subprocess.run(
        [str(SNAKEMAKE_BIN / "snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Congratulations, your workflow is in a good condition!" in lint.stdout + lint.stderr
    fmt = subprocess.run(
        [str(SNAKEMAKE_BIN / "snakefmt"), "--check", "Snakefile", "rules"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end(demo_workflow: Path) -> None:
    config = yaml.safe_load((demo_workflow / "config/config.yaml").read_text())
    expected = json.loads((demo_workflow / "resources/demo/EXPECTED_INVALID.json").read_text())
    for run in config["runs"]:
        report = json.loads((demo_workflow / f"results/{run}/validate/report.json").read_text())
        reported = {entry["index"]: entry["reasons"] for entry in report["invalid"]}
        for index, reason in expected.items():
            assert reason in reported[int(index)], (run, index, reason, reported)
        filtered = json.loads((demo_workflow / f"results/{run}/filter/dataset.json").read_text())
        # Valid text-only samples are counted but not kept (filter.keep_text_only is off).
        assert len(filtered) == report["num_valid"] - len(report["text_only"]) > 0
        log = (demo_workflow / f"results/{run}/logs/validate.log").read_text()
        assert "invalid" in log


def expected_scores(features: np.ndarray, sv_threshold: float) -> np.ndarray:
    """Rank-k leverage scores by a dense SVD of the centred matrix (METHOD.md stage 2,
    the demo's preprocessing: centring only)."""
    centred = features - features.mean(axis=0)
    u, sigma, _ = np.linalg.svd(centred, full_matrices=False)
    energy = np.cumsum(sigma**2) / np.sum(sigma**2)
    k = int(np.argmax(energy >= sv_threshold)) + 1
    return (u[:, :k] ** 2).sum(axis=1)


@pytest.mark.slow
def test_demo_outputs_match_an_independent_computation(demo_workflow: Path) -> None:
    config = yaml.safe_load((demo_workflow / "config/config.yaml").read_text())
    for run in config["runs"]:
        results = demo_workflow / f"results/{run}"
        records = json.loads((results / "filter/dataset.json").read_text())
        # The shards, read directly, in shard order.
        shards = sorted((results / "extract").glob("shard-*"), key=lambda d: int(d.name.split("-")[1]))
        shards_of_run = {**config["extract"], **config["runs"][run].get("extract", {})}["shards"]
        assert len(shards) == shards_of_run
        rows = pd.concat([pd.read_parquet(d / "rows.parquet") for d in shards], ignore_index=True)
        matrix = np.concatenate([np.load(d / "features.npy") for d in shards])
        assert rows["index"].tolist() == list(range(len(records)))
        ok = (rows["status"] == "ok").to_numpy()
        expected = expected_scores(matrix[ok].astype(np.float64), config["score"]["sv_threshold"])

        scores = pd.read_parquet(results / "score/scores.parquet")
        by_index = scores.set_index("index")["importance"]
        assert sorted(by_index.index) == rows["index"][ok].tolist()
        np.testing.assert_allclose(
            by_index.loc[rows["index"][ok]].to_numpy(), expected, rtol=1e-6, atol=1e-9
        )

        n_scored = int(ok.sum())
        pool = sorted(by_index.index)
        ranked = sorted(pool, key=lambda i: (-by_index[i], i))
        for budget in config["select"]["budgets"]:
            # A count, or a percentage of the scored samples rounded half up.
            n = int(budget) if not str(budget).endswith("%") else (
                (2 * int(str(budget)[:-1]) * n_scored + 100) // 200
            )
            top = json.loads((results / f"select/top-{n}.json").read_text())
            assert top == [records[i] for i in sorted(ranked[:n])], (run, budget)
            for seed in config["select"]["random_seeds"]:
                order = np.random.default_rng(seed).permutation(n_scored)
                draw = sorted(pool[k] for k in order[:n])
                chosen = json.loads((results / f"select/random-{n}-seed{seed}.json").read_text())
                assert chosen == [records[i] for i in draw], (run, n, seed)


@pytest.mark.slow
def test_percentage_budgets_below_the_kmeans_clusters_are_warned_of_once_scored(
    demo_workflow: Path, tmp_path: Path,
) -> None:
    config = write_config(tmp_path, select={
        "budgets": [20, "25%"], "methods": ["scalselect", "kmeans"], "kmeans_clusters": 100})
    result = snakemake(demo_workflow, "--dry-run", "--configfile", str(config))
    scored = len(pd.read_parquet(demo_workflow / "results/demo-llava/score/scores.parquet"))
    n = (25 * scored + 50) // 100  # 25%, rounded half up
    assert (f"runs.demo-llava: select: budget 25% picks {n} samples but"
            f" select.kmeans_clusters is 100") in result.stdout + result.stderr


@pytest.mark.slow
def test_unchanged_second_run_does_nothing(demo_workflow: Path) -> None:
    assert planned_jobs(demo_workflow) == {}


@pytest.mark.slow
def test_changed_dataset_content_reruns_downstream(demo_workflow: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "workflow"
    shutil.copytree(demo_workflow, workdir, symlinks=True)
    dataset_path = workdir / "resources/demo/dataset.json"
    invalid = json.loads((workdir / "resources/demo/EXPECTED_INVALID.json").read_text())
    records = json.loads(dataset_path.read_text())
    valid = next(i for i in range(len(records)) if str(i) not in invalid and records[i]["images"])
    records[valid]["messages"][-1]["content"] += " Changed."
    dataset_path.write_text(json.dumps(records, indent=1))
    runs = yaml.safe_load((workdir / "config/config.yaml").read_text())["runs"]
    affected = [run for run, entry in runs.items() if entry["dataset"] == "resources/demo/dataset.json"]
    jobs = planned_jobs(workdir)
    assert jobs.get("validate") == jobs.get("filter") == len(affected)
    shards = yaml.safe_load((workdir / "config/config.yaml").read_text())["extract"]["shards"]
    assert jobs.get("extract") == shards * len(affected)
    assert jobs.get("cur") == len(affected)
    assert "demo" not in jobs

    # The rerun recomputes only the shard holding the changed sample; the others come
    # back from the content-keyed extraction cache with identical features.
    before = {
        run: (workdir / f"results/{run}/extract/shard-1-of-{shards}/features.npy").read_bytes()
        for run in affected
    }
    # Only the extraction shards are run: what follows them is the usual downstream.
    snakemake(workdir, "--cores", "2", *(f"results/{run}/extract/shard-{i}-of-{shards}"
                                         for run in affected for i in range(shards)))
    for run in affected:
        logs = sorted((workdir / f"results/{run}/logs/extract").glob("shard-*.log"))
        cached = [log for log in logs if " 0 to compute" in log.read_text()]
        assert len(logs) == shards and len(cached) == shards - 1, run
        after = (workdir / f"results/{run}/extract/shard-1-of-{shards}/features.npy").read_bytes()
        assert after == before[run]


def test_inconsistent_image_token_budget_fails_before_any_job(workflow: Path) -> None:
    config = write_config(workflow, {"demo-qwen": {"extract": {"max_image_tokens": 64}}})
    result = snakemake(workflow, "--dry-run", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert "runs.demo-qwen: extract.min_image_tokens (256) is larger than" in (
        result.stdout + result.stderr
    )


@pytest.mark.slow
def test_more_shards_than_samples_fail_at_filter_before_any_extract_job(
    workflow: Path,
) -> None:
    """300 shards of the demo's 248 filtered samples: filter refuses them, naming both
    numbers and the fix, and no extract job starts (empty shards would each fail alone)."""
    config = write_config(workflow, extract={**yaml.safe_load(
        (REPO / "config/config.yaml").read_text())["extract"], "shards": 300})
    result = snakemake(workflow, "results/demo-llava/score/scores.parquet", "--cores", "2",
                       "--configfile", str(config), check=False)
    assert result.returncode != 0
    log = (workflow / "results/demo-llava/logs/filter.json.log").read_text()
    assert ("extract.shards is 300 but only 248 samples passed the filter: 52 of the shards"
            " would hold no sample; set extract.shards to at most 248") in log
    assert not (workflow / "results/demo-llava/extract").exists()
    assert "rule extract:" not in result.stdout + result.stderr


@pytest.mark.parametrize("keep_text_only", [False, True])
def test_filter_keep_text_only_reaches_the_filter_command(
    workflow: Path, keep_text_only: bool
) -> None:
    config = write_config(workflow, filter={"keep_text_only": keep_text_only})
    target = "results/demo-llava/filter/dataset.json"
    result = snakemake(
        workflow, target, "--dry-run", "--printshellcmds", "--configfile", str(config)
    )
    command = next(
        line for line in result.stdout.splitlines() if "python -m scalselect filter" in line
    )
    assert ("--keep-text-only" in command.split()) is keep_text_only
