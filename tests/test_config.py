"""Configuration checks made when the DAG is built (scalselect.config), on real files:
the shipped schema and config, tiny real checkpoints, a real Hugging Face cache layout."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from scalselect.config import (
    budget_problems,
    kmeans_budget_problems,
    model_problems,
    path_problems,
    problem_report,
    run_problems,
    schema_problems,
    shard_group_problems,
)
from scalselect.demo.tinymodels import build_tiny_model

SCHEMA = yaml.safe_load((REPO / "config/schema.yaml").read_text())
DEMO = yaml.safe_load((REPO / "config/config.yaml").read_text())


def with_changes(**sections: dict) -> dict:
    config = copy.deepcopy(DEMO)
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def test_the_shipped_config_is_valid() -> None:
    assert schema_problems(DEMO, SCHEMA) == []


def test_every_misspelt_key_is_reported_with_the_closest_valid_one() -> None:
    config = with_changes(score={"sv_treshold": 0.5}, extract={"batchsize": 4})
    config["runs"]["demo-qwen"]["extract"] = {"min_image_tokns": 64}
    config["plts"] = {}
    assert schema_problems(config, SCHEMA) == [
        "extract.batchsize: unknown key, did you mean 'batch_size'?",
        "plts: unknown key, did you mean 'plots'?",
        "runs.demo-qwen.extract.min_image_tokns: unknown key, did you mean 'min_image_tokens'?",
        "score.sv_treshold: unknown key, did you mean 'sv_threshold'?",
    ]


def test_a_key_like_no_valid_one_lists_the_valid_keys() -> None:
    problems = schema_problems(with_changes(score={"zzz": 1}), SCHEMA)
    assert problems == [
        "score.zzz: unknown key (valid keys here: sv_threshold, center, standardize, l2_normalize)"
    ]


def test_wrong_values_say_what_was_expected_without_the_schema() -> None:
    config = with_changes(score={"sv_threshold": "high"}, select={"budgets": [50, "abc"]})
    config["runs"]["demo-llava"]["model"]["type"] = "lava"
    del config["runs"]["demo-qwen"]["dataset"]
    problems = schema_problems(config, SCHEMA)
    assert problems == [
        "runs.demo-llava.model.type: \"lava\" is not one of llava, qwen, did you mean 'llava'?",
        "runs.demo-qwen: missing key 'dataset'",
        "score.sv_threshold: expected number, got \"high\"",
        'select.budgets[1]: "abc" is not a sample count (50, or "50" as --config passes it)'
        ' or a percentage of the scored samples ("16%")',
    ]
    assert all(len(problem) < 200 for problem in problems)


def test_budgets_as_command_line_strings_are_valid() -> None:
    config = with_changes(select={"budgets": ["50", "20%"], "random_seeds": ["0", "3"]})
    assert schema_problems(config, SCHEMA) == []
    for bad in ("0", "-5", "5.5", "05x"):
        assert schema_problems(with_changes(select={"budgets": [bad]}), SCHEMA), bad


def test_percentages_outside_the_scored_samples_are_named() -> None:
    assert budget_problems([100, "50", "100%", "0.5%"]) == []
    assert budget_problems([50, "150%", "20%", "0%", "0.0%"]) == [
        "'150%' is more than 100% of the scored samples",
        "'0%' is 0% of the scored samples: it selects no sample",
        "'0.0%' is 0% of the scored samples: it selects no sample",
    ]


def test_budgets_below_the_kmeans_clusters_are_named_with_the_fix() -> None:
    """The issue's case: K = 100 on 146 scored samples, budgets 20 and 25% (36.5, rounded
    half up: 37); without the scored count only the count budget can be checked."""
    problems = kmeans_budget_problems(100, [20, "25%", "80%"], 146)
    assert [p.split(":")[0] for p in problems] == [
        "budget 20 picks 20 samples but select.kmeans_clusters is 100",
        "budget 25% picks 37 samples but select.kmeans_clusters is 100",
    ]
    assert "none from the other 80; set select.kmeans_clusters to at most 20" in problems[0]
    assert "none from the other 63; set select.kmeans_clusters to at most 37" in problems[1]
    assert len(kmeans_budget_problems(100, ["20", "25%"])) == 1
    assert kmeans_budget_problems(20, [20, "100%"], 20) == []


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        family: build_tiny_model(family, root / family) for family in ("llava", "qwen2-vl")
    }


def test_model_type_must_match_the_checkpoint(checkpoints: dict[str, Path]) -> None:
    assert model_problems(str(checkpoints["llava"]), "llava") == []
    assert model_problems(str(checkpoints["qwen2-vl"]), "qwen") == []
    (problem,) = model_problems(str(checkpoints["llava"]), "qwen")
    assert problem == (
        f"model.type is 'qwen' but {checkpoints['llava']}/config.json says model_type"
        " 'llava'; set model.type: llava"
    )
    (problem,) = model_problems(str(checkpoints["qwen2-vl"]), "llava")
    assert "says model_type 'qwen2_vl'; set model.type: qwen" in problem


def test_model_path_must_be_a_folder_or_in_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoints: dict[str, Path]
) -> None:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    (problem,) = model_problems("someone/missing-vlm", "llava")
    assert "'someone/missing-vlm' is neither a folder nor a model in the local Hugging" in problem
    assert model_problems(str(tmp_path / "absent"), "llava")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert model_problems(str(empty), "llava") == [
        f"model.path {str(empty)!r} is a folder without config.json"
    ]
    # A model in the cache, laid out as huggingface_hub writes it.
    snapshot = cache / "models--someone--tiny-llava/snapshots/abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_bytes((checkpoints["llava"] / "config.json").read_bytes())
    (cache / "models--someone--tiny-llava/refs").mkdir()
    (cache / "models--someone--tiny-llava/refs/main").write_text("abc123")
    assert model_problems("someone/tiny-llava", "llava") == []
    assert "set model.type: llava" in model_problems("someone/tiny-llava", "qwen")[0]


def test_missing_dataset_and_image_root_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = tmp_path / "d.json"
    entry = {"dataset": str(dataset), "image_root": str(tmp_path / "images")}
    assert path_problems(entry) == [
        f"dataset {str(dataset)!r} does not exist (or is not a file)",
        f"image_root {str(tmp_path / 'images')!r} does not exist (or is not a folder)",
    ]
    dataset.write_text("[]")
    (tmp_path / "images").mkdir()
    assert path_problems(entry) == []
    # Files a rule of the workflow makes (the demo's) are not checked before they exist.
    assert path_problems({"dataset": "resources/demo/x.json", "image_root": "resources/demo/i"}) == []
    # A relative path is looked for in the working directory, and the message says so.
    monkeypatch.chdir(tmp_path)
    assert path_problems({"dataset": "d.json", "image_root": "images"}) == []
    assert path_problems({"dataset": "data/d.json", "image_root": "images"}) == [
        f"dataset 'data/d.json' does not exist in {tmp_path}, the folder Snakemake runs in"
        " (or is not a file)"]


def test_run_problems_name_the_run_and_report_everything(
    tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    entry = {
        "dataset": str(tmp_path / "d.json"),
        "image_root": str(tmp_path),
        "model": {"path": str(checkpoints["llava"]), "type": "qwen"},
    }
    problems = run_problems("mine", entry, {"budgets": [100, "101%"]})
    assert len(problems) == 3 and all(p.startswith("runs.mine: ") for p in problems)
    assert problems[2] == "runs.mine: select.budgets: '101%' is more than 100% of the scored samples"
    report = problem_report(problems, "configuration")
    assert report.startswith("configuration: 3 problems, nothing was run:\n  runs.mine: dataset")


def test_extract_shards_per_job_must_fit_the_job_time_limit() -> None:
    # 4 shards of 3 h fill a 12 h job exactly; one minute more per shard does not fit.
    assert shard_group_problems(4, 180, 720) == []
    assert shard_group_problems(1, 720, 720) == []
    [problem] = shard_group_problems(4, 181, 720)
    assert problem.startswith(
        "SCALSELECT_SHARDS_PER_JOB=4 shards x SCALSELECT_SHARD_RUNTIME=181 min = 724 min"
        " exceeds SCALSELECT_EXTRACT_RUNTIME=12h, the time limit of one extract job:"
        " set SCALSELECT_SHARD_RUNTIME to at most 3h"
    ), problem
    [problem] = shard_group_problems(1, 900, 720)
    assert "= 15h exceeds SCALSELECT_EXTRACT_RUNTIME=12h" in problem
    assert shard_group_problems(0, 60, 720) == ["SCALSELECT_SHARDS_PER_JOB=0: must be 1 or more"]
