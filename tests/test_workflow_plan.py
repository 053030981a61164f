"""The workflow's decisions (scalselect.workflow.Plan), without running Snakemake: each
configuration below is validated with Snakemake's own schema validation, which fills in
the defaults exactly as the workflow sees them."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from snakemake.utils import validate

from scalselect.workflow import Plan, features_mem_mb

SCHEMA = str(Path(__file__).parents[1] / "config/schema.yaml")


def plan_of(config: dict) -> Plan:
    """The plan of ``config`` as rules/common.smk builds it."""
    overrides = copy.deepcopy(config["runs"])
    config = copy.deepcopy(config)
    validate(config, SCHEMA)
    return Plan(config, overrides)


def run(dataset: str = "data/a.json", **entry) -> dict:
    return {"dataset": dataset, "image_root": "img", "model": {"path": "m", "type": "llava"},
            **entry}


def test_a_run_overrides_only_the_keys_it_names() -> None:
    plan = plan_of({"runs": {"a": run(extract={"layer": 2}), "b": run()},
                    "extract": {"shards": 3, "attention_threshold": 0.8}})
    assert plan.settings("a", "extract")["layer"] == 2
    assert plan.settings("a", "extract")["shards"] == 3
    assert plan.settings("a", "extract")["attention_threshold"] == 0.8
    assert plan.settings("b", "extract")["layer"] == 1
    # Defaults of sections nobody wrote come from the schema.
    assert plan.settings("b", "score")["sv_threshold"] == 0.9


def test_budgets_come_from_the_runs_own_select_section() -> None:
    plan = plan_of({"runs": {"a": run(select={"budgets": [5, "50%"]}), "b": run()},
                    "select": {"budgets": [10, "20%"]}})
    assert plan.budgets("a") == [5, "50%"]
    assert plan.budgets("b") == [10, "20%"]
    assert plan.resolved_budgets("a", 30) == [5, 15]
    # The two runs hold the same data: compared at every budget either asks for.
    assert plan.comparison_groups() == {"a_vs_b": ["a", "b"]}
    assert plan.group_budgets(["a", "b"]) == [5, "50%", 10, "20%"]
    assert plan.group_budgets(["b", "b"]) == [10, "20%"]


def test_selection_files_follow_budgets_seeds_methods_and_the_dataset_format() -> None:
    plan = plan_of({"runs": {"a": run("data/a.jsonl")},
                    "select": {"budgets": [2, "50%"], "random_seeds": [0, 7],
                               "methods": ["scalselect", "random", "kmeans"]}})
    assert plan.selection_files("a", 10) == [
        "results/a/select/top-2.jsonl",
        "results/a/select/random-2-seed0.jsonl",
        "results/a/select/random-2-seed7.jsonl",
        "results/a/select/top-5.jsonl",
        "results/a/select/random-5-seed0.jsonl",
        "results/a/select/random-5-seed7.jsonl",
    ]
    assert plan.baseline_picks("a", 10) == [
        "results/a/select/kmeans-2.jsonl.picks.parquet",
        "results/a/select/kmeans-5.jsonl.picks.parquet",
    ]


def test_without_the_random_method_no_random_subsets_are_made() -> None:
    plan = plan_of({"runs": {"a": run("data/a.parquet")},
                    "select": {"budgets": [3], "methods": ["scalselect"]}})
    assert plan.random_seeds("a") == []
    assert plan.selection_files("a", 10) == ["results/a/select/top-3.parquet"]
    assert plan.baseline_picks("a", 10) == []


def test_shard_files() -> None:
    plan = plan_of({"runs": {"a": run()}, "extract": {"shards": 3}, "validate": {"shards": 2}})
    assert plan.validate_parts("a") == ["results/a/validate/parts/shard-0-of-2.npz",
                                        "results/a/validate/parts/shard-1-of-2.npz"]
    assert plan.shard_dirs("a") == [f"results/a/extract/shard-{i}-of-3" for i in range(3)]
    assert plan.score_partials("a")[2] == "results/a/score/partials/shard-2-of-3.npz"
    assert plan.filtered_index("a") == "results/a/filter/dataset.json.index.npz"


def test_runs_on_the_same_data_are_compared_unless_their_data_stages_differ() -> None:
    plan = plan_of({"runs": {
        "a": run(), "b": run(validate={"shards": 4}),  # speed only: same data
        "c": run(filter={"keep_text_only": True}),  # other filtered data
        "d": run("data/d.json"),
    }})
    assert plan.comparison_groups() == {"a_vs_b": ["a", "b"]}


def test_a_layer_ablation_is_runs_that_differ_only_in_the_layer() -> None:
    plan = plan_of({"runs": {
        "l1": run(), "l2": run(extract={"layer": 2, "shards": 7}),  # shards: speed only
        "tau": run(extract={"layer": 3, "attention_threshold": 0.5}),
        "same": run("data/x.json"),
    }})
    assert plan.layer_groups() == {"l1_vs_l2": ["l1", "l2"]}
    assert plan.layer_runs("l1_vs_l2") == [
        ("l1", 1, "results/l1/score/spectrum.json", "results/l1/score/scores.parquet"),
        ("l2", 2, "results/l2/score/spectrum.json", "results/l2/score/scores.parquet"),
    ]
    assert "results/layers/l1_vs_l2/layer_ablation.tex" in plan.all_targets()


def test_all_targets_cover_every_stage_of_every_run() -> None:
    plan = plan_of({"runs": {"a": run(), "b": run("data/b.jsonl")},
                    "extract": {"shards": 2}, "plots": {"formats": ["svg"]}})
    targets = plan.all_targets()
    assert len(targets) == len(set(targets))
    for name in ("a", "b"):
        assert f"results/{name}/validate/report.json" in targets
        assert f"results/{name}/extract/shard-1-of-2" in targets
        # The cards' digests are their own target: they run beside extraction.
        assert f"results/{name}/select/digests.parquet" in targets
        assert f"results/{name}/select/summary.csv" in targets
        assert f"results/{name}/plots/methods.svg" in targets
        assert f"results/{name}/browse" in targets
    assert "results/b/filter/dataset.jsonl" in targets
    assert not any(t.endswith(".png") for t in targets)
    assert not any(t.startswith(("results/compare", "results/layers")) for t in targets)


def test_options_of_a_rule() -> None:
    plan = plan_of({"runs": {"a": run(format="llava", score={"center": False})},
                    "plots": {"formats": ["pdf", "png"], "dpi": 150}})
    assert plan.options("a", "score", ("sv_threshold", "center")) == "--sv-threshold 0.9 --no-center"
    assert plan.entry_options("a", ("format", "source_field")) == "--format llava"
    assert plan.plot_options() == "--formats pdf png --dpi 150"
    assert plan.cache_dirs("a") == "results/.cache/extract"
    assert plan.helper_gpus("a") == 0


def test_problems_found_before_any_job(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("[]")
    (tmp_path / "img").mkdir()
    good = run(str(tmp_path / "a.json"), image_root=str(tmp_path / "img"),
               model={"path": "resources/demo/models/tiny-llava", "type": "llava"})
    bad = {**good, "extract": {"min_image_tokens": 600, "max_image_tokens": 500},
           "select": {"budgets": ["150%"]}, "dataset": str(tmp_path / "missing.json")}
    assert plan_of({"runs": {"good": good}}).problems() == []
    problems = plan_of({"runs": {"bad": bad}}).problems()
    assert len(problems) == 3, problems
    assert any("missing.json" in p and "does not exist" in p for p in problems)
    assert any("'150%' is more than 100%" in p for p in problems)
    assert any("min_image_tokens (600) is larger than extract.max_image_tokens (500)" in p
               for p in problems)
    assert all(p.startswith("runs.bad: ") for p in problems)


def test_memory_estimate_grows_with_the_features_on_disk(tmp_path: Path) -> None:
    shards = [tmp_path / "s0", tmp_path / "s1", tmp_path / "missing"]
    for shard in shards[:2]:
        shard.mkdir()
        np.save(shard / "features.npy", np.zeros((2**18, 4), np.float32))  # 4 MiB + header
    assert features_mem_mb(shards) == 3 * (2 * (2**22 + 128)) // 2**20 + 2000
    assert features_mem_mb([]) == 2000


def test_a_card_keeps_the_budget_as_asked() -> None:
    plan = plan_of({"runs": {"a": run(select={"budgets": ["16%", 7, "20%"]})}})
    # 16% of 50 is 8; 20% of 50 is 10, as is the count 10 asked on the command line.
    assert plan.asked_budget("a", 8, 50) == "16%"
    assert plan.asked_budget("a", 7, 50) == "7"
    assert plan.asked_budget("a", 10, 50) == "20%"
    assert plan.asked_budget("a", 11, 50) == "11"


def test_card_settings_are_the_result_settings_of_the_data_stages() -> None:
    import json
    import shlex

    plan = plan_of({"runs": {"a": run(validate={"shards": 4, "min_image_side": 30})},
                    "select": {"kmeans_clusters": 5, "budgets": [3]}})
    option, value = shlex.split(plan.card_settings("a", "kmeans"))
    assert option == "--card-settings"
    settings = json.loads(value)
    # Speed settings (validate.shards) are not in a card; k-means' own settings are.
    assert "shards" not in settings["validate"]
    assert settings["validate"]["min_image_side"] == 30
    assert settings["filter"] == {"keep_text_only": False}
    assert settings["select"] == {"kmeans_clusters": 5, "kmeans_seed": 0}
    assert json.loads(shlex.split(plan.card_settings("a", "kcenter"))[1])["select"] == {}


def test_exports_follow_the_runs_budgets_and_formats() -> None:
    plan = plan_of({"runs": {"a": run(select={"export": ["llava", "ids"]}), "b": run()},
                    "select": {"budgets": [2, "50%"]}})
    assert plan.export_dirs("a", 10) == [
        "results/a/export/top-2-llava", "results/a/export/top-2-ids",
        "results/a/export/top-5-llava", "results/a/export/top-5-ids",
    ]
    assert plan.export_dirs("b", 10) == []  # no export unless asked
    assert plan.digests_path("a") == "results/a/select/digests.parquet"
