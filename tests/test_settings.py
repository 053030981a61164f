"""Every setting is declared once (scalselect.settings): the configuration schema, the
README's table, the stages' command lines, the workflow's params and the store key all
follow its declaration. A setting changed or added in one place only fails here."""

from __future__ import annotations

import dataclasses
import importlib.util
import shlex

import pytest
import yaml
from conftest import REPO

from scalselect import settings
from scalselect.cli import build_parser
from scalselect.errors import UserError
from scalselect.extract.store import settings_key
from scalselect.settings import (
    STAGES,
    ExtractSettings,
    FilterSettings,
    PlotSettings,
    ScoreSettings,
    SelectSettings,
    ValidateSettings,
    declared,
    result_keys,
)

SCHEMA = yaml.safe_load((REPO / "config/schema.yaml").read_text())
DEFS = SCHEMA["$defs"]
SPEED_NOTE = "Does not change results."
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", tuple: "array"}
# Keys of a run entry that are not stage settings: they say what the run reads (its
# dataset, image folder, record format and source label) and with which model; each
# command takes them as inputs. model.type is checked against ExtractSettings below.
RUN_ENTRY_KEYS = {"dataset", "image_root", "format", "source_field", "model"}


def section(stage: str) -> dict:
    """The declared settings of a configuration section (model_type is the run's)."""
    return {n: s for n, s in declared(STAGES[stage]).items() if not s.from_run}


def every_key() -> list[tuple[str, str]]:
    return [(stage, name) for stage in STAGES for name in section(stage)]


def item_bound(schema: dict, bound: str) -> float | None:
    """A bound of a list's items: on the items, or on their integer alternative (budgets
    and seeds also take digit strings and percentages, as --config passes them)."""
    items = schema["items"]
    numbers = [items, *(a for a in items.get("anyOf", []) if a.get("type") == "integer")]
    return next((alt[bound] for alt in numbers if bound in alt), None)


# --------------------------------------------------------------------------- the schema


@pytest.mark.parametrize("stage", STAGES)
def test_each_schema_section_has_exactly_the_declared_keys(stage: str) -> None:
    assert set(DEFS[stage]["properties"]) == set(section(stage))


@pytest.mark.parametrize(("stage", "name"), every_key())
def test_the_schema_states_each_declared_default_type_range_and_choices(stage, name) -> None:
    schema, setting = DEFS[stage]["properties"][name], section(stage)[name]
    default = setting.default
    assert schema["default"] == (list(default) if isinstance(default, tuple) else default)
    if isinstance(default, tuple):
        assert schema["type"] == "array"
        assert schema["items"].get("enum") == (list(setting.choices) if setting.choices else None)
        assert item_bound(schema, "minimum") == setting.minimum
        assert item_bound(schema, "maximum") == setting.maximum
        return
    if setting.choices is not None:
        assert schema["enum"] == list(setting.choices) and "type" not in schema
    else:
        assert schema["type"] == JSON_TYPES[type(default)]
    for bound in ("minimum", "exclusiveMinimum", "maximum"):
        attribute = {"exclusiveMinimum": "exclusive_minimum"}.get(bound, bound)
        assert schema.get(bound) == getattr(setting, attribute), bound
    assert "exclusiveMaximum" not in schema  # not declarable: add it to Setting first


@pytest.mark.parametrize(("stage", "name"), every_key())
def test_speed_only_keys_and_no_others_say_so_in_the_schema(stage: str, name: str) -> None:
    # A result-changing key described as speed-only would be left out of the params.
    description = " ".join(DEFS[stage]["properties"][name]["description"].split())
    assert (SPEED_NOTE in description) is not section(stage)[name].changes_results


def test_the_model_type_is_the_runs_not_a_key_of_the_extract_section() -> None:
    model_type = declared(ExtractSettings)["model_type"]
    assert model_type.from_run and model_type.changes_results
    assert DEFS["run"]["properties"]["model"]["properties"]["type"]["enum"] == list(
        model_type.choices) == ["llava", "qwen"]
    assert "model_type" not in result_keys("extract")


def test_runs_override_the_stage_sections_and_nothing_else_is_a_setting() -> None:
    run = DEFS["run"]["properties"]
    assert set(run) == RUN_ENTRY_KEYS | set(STAGES)
    for stage in STAGES:
        assert SCHEMA["properties"][stage] == {"$ref": f"#/$defs/{stage}", "default": {}}
        expected = "#/$defs/run_plots" if stage == "plots" else f"#/$defs/{stage}"
        assert run[stage] == {"$ref": expected}
    # A run chooses only its gallery size: formats and dpi name the files of every run.
    assert DEFS["run_plots"]["properties"] == {
        "gallery_samples": {"$ref": "#/$defs/plots/properties/gallery_samples"}}


def test_the_classes_hold_what_changes_results_and_speed_sits_apart() -> None:
    # The fields are what a stage's code receives and records (the store key, the
    # validation report); a speed knob there would change both.
    for stage in STAGES.values():
        assert all(declared(stage)[f.name].changes_results for f in dataclasses.fields(stage))
        assert not any(s.changes_results for s in getattr(stage, "SPEED", ()))


# --------------------------------------------------------------------------- the README


def test_the_readme_table_is_the_one_made_from_the_declarations() -> None:
    spec = importlib.util.spec_from_file_location("config_table", REPO / "scripts/config_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    _, block, _ = table.readme_parts((REPO / "README.md").read_text(encoding="utf-8"))
    assert block == table.table(), "run: python scripts/config_table.py --write"
    # Every key has its row; spot checks of what a row says, written out here.
    keys = [line.split("|")[1].strip().strip("`") for line in block.splitlines()[2:]]
    assert keys == [f"{stage}.{name}" for stage, name in every_key()]
    assert "| `extract.max_length` | `4096` | at least 16 | yes |" in block
    assert "| `extract.cache_dirs` | `[results/.cache/extract]` |  | no |" in block
    assert "| `plots.formats` | `[pdf, png]` | each one of pdf, png, svg | yes |" in block
    assert "| `score.sv_threshold` | `0.9` | in (0, 1] | yes |" in block


# --------------------------------------------------------------------------- the params


def test_result_keys_keep_the_order_of_the_rules_params() -> None:
    # The rules join these into params strings; a new order is a new string, and a new
    # string reruns every job of the rule and everything downstream.
    assert result_keys("extract") == ("attention_threshold", "dtype", "max_length",
                                      "min_image_tokens", "max_image_tokens",
                                      "trust_remote_code", "layer")
    assert result_keys("score") == ("sv_threshold", "center", "standardize", "l2_normalize")
    assert result_keys("validate") == ("decode_images", "min_image_side", "max_aspect_ratio",
                                       "allow_duplicate_ids")
    assert result_keys("filter") == ("keep_text_only",)
    for stage in STAGES:  # speed-only keys never
        assert not {"shards", "batch_size", "num_workers", "gpus", "chunk_size",
                    "cache_dirs"} & set(result_keys(stage))


def workflow_options(values: dict) -> list[str]:
    """The options the rules pass (rules/common.smk `cli_option`), here written anew."""
    words = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            words += [flag, *map(str, value)]
        else:
            words += [flag, shlex.quote(str(value))]
    return words


def test_the_demo_extract_params_are_the_recorded_string() -> None:
    values = {key: DEFS["extract"]["properties"][key]["default"] for key in result_keys("extract")}
    assert " ".join(workflow_options(values)) == (  # recorded from a demo run's extract jobs
        "--attention-threshold 0.9 --dtype auto --max-length 4096 --min-image-tokens 256"
        " --max-image-tokens 576 --no-trust-remote-code --layer 1")


# Each stage's commands (their required options) and settings unlike the defaults, as
# the rules pass them: a command gets the stage's other fields at their defaults.
VALIDATE = ["validate", "--dataset", "d", "--out", "o"]
EXTRACT = ["extract", "--dataset", "d", "--out", "o", "--model", "m", "--model-type", "qwen"]
GALLERY = ["plot", "gallery", "--dataset", "d", "--image-root", "r", "--scores", "s",
           "--out-dir", "o", "--model", "m", "--model-type", "qwen"]
SCORE = ["score", "--features", "f", "--out", "o"]
KMEANS = ["kmeans-clusters", "--features", "f", "--model", "m", "--scores", "s", "--out", "o"]
PLOT = ["plot", "scores", "--scores", "s", "--spectrum", "p", "--out-dir", "o"]
COMMANDS = [
    (ValidateSettings, VALIDATE,
     {"decode_images": False, "min_image_side": 5, "max_aspect_ratio": 7.5,
      "allow_duplicate_ids": True}),
    (ValidateSettings, ["validate-merge", "--dataset", "d", "--index", "i", "--parts", "p",
                        "--out", "o"], {"min_image_side": 50, "allow_duplicate_ids": True}),
    (FilterSettings, ["filter", "--dataset", "d", "--report", "r", "--out", "o"],
     {"keep_text_only": True}),
    (ExtractSettings, EXTRACT,
     {"attention_threshold": 0.5, "dtype": "float16", "max_length": 77, "min_image_tokens": 3,
      "max_image_tokens": 9, "trust_remote_code": True, "layer": 3}),
    (ExtractSettings, GALLERY, {"max_length": 16, "layer": 2}),
    (ScoreSettings, SCORE,
     {"sv_threshold": 0.5, "center": False, "standardize": True, "l2_normalize": True}),
    (ScoreSettings, ["score-fit", "--partials", "p", "--spectrum", "s", "--model", "m"],
     {"sv_threshold": 1.0}),
    (ScoreSettings, ["score-shards", "--partials", "p", "--spectrum", "s", "--model", "m",
                     "--out", "o"], {"center": False}),
    (SelectSettings, KMEANS, {"kmeans_clusters": 7, "kmeans_seed": 3}),
    (PlotSettings, PLOT, {"formats": ("svg",), "dpi": 150}),
    (PlotSettings, ["plot-compare", "--run", "a", "s", "d", "--budgets", "5", "--out-dir", "o"],
     {"formats": ("png", "pdf"), "dpi": 50}),
]


def schema_defaults(stage: type) -> dict:
    name = next(key for key, value in STAGES.items() if value is stage)
    properties = DEFS[name]["properties"]
    fields = [f.name for f in dataclasses.fields(stage) if f.name in properties]
    return {k: tuple(v) if isinstance(v, list) else v
            for k, v in ((k, properties[k]["default"]) for k in fields)}


@pytest.mark.parametrize(("stage", "command", "changed"), COMMANDS,
                         ids=[" ".join(c[1][:2]) for c in COMMANDS])
def test_each_command_reads_the_schema_defaults_and_the_rules_options(stage, command,
                                                                      changed) -> None:
    model = {"model_type": "qwen"} if stage is ExtractSettings else {}
    bare = build_parser(command[0]).parse_args(command)
    assert settings.from_arguments(stage, bare) == stage(**model, **schema_defaults(stage))
    given = build_parser(command[0]).parse_args([*command, *workflow_options(changed)])
    expected = stage(**model, **{**schema_defaults(stage), **changed})
    assert settings.from_arguments(stage, given) == expected


def test_the_gallery_size_is_the_samples_option_the_rule_passes() -> None:
    # rules/plots.smk passes `--samples {params.samples}` (kept: its command is unchanged).
    args = build_parser("plot").parse_args([*GALLERY, "--samples", "6"])
    assert settings.from_arguments(PlotSettings, args).gallery_samples == 6


def test_the_extract_command_takes_the_speed_settings_apart_and_the_stores_as_cache_dir() -> None:
    args = build_parser("extract").parse_args(
        ["extract", "--dataset", "d", "--out", "o", "--model", "m", "--model-type", "llava",
         "--batch-size", "3", "--num-workers", "0", "--chunk-size", "9", "--cache-dir", "a", "b"])
    assert (args.batch_size, args.num_workers, args.chunk_size, args.cache_dirs) == (
        3, 0, 9, ["a", "b"])
    assert not hasattr(args, "shards") and not hasattr(args, "gpus")  # the workflow's own
    assert settings.from_arguments(ExtractSettings, args) == ExtractSettings("llava")


def test_every_extract_setting_changes_the_store_key() -> None:
    changed = {"model_type": "qwen", "attention_threshold": 0.5, "dtype": "float16",
               "max_length": 77, "min_image_tokens": 3, "max_image_tokens": 9,
               "trust_remote_code": True, "layer": 3}
    assert set(changed) == {f.name for f in dataclasses.fields(ExtractSettings)}
    keys = {settings_key("m", dataclasses.replace(ExtractSettings("llava"), **{k: v}))[0]
            for k, v in changed.items()}
    assert len(keys | {settings_key("m", ExtractSettings("llava"))[0]}) == len(changed) + 1


# --------------------------------------------------------------------------- the checks


@pytest.mark.parametrize(("stage", "command", "option", "message"), [
    (ExtractSettings, EXTRACT, ["--layer", "0"], "--layer must be at least 1, got 0"),
    (ExtractSettings, EXTRACT, ["--max-length", "15"], "--max-length must be at least 16, got 15"),
    (ExtractSettings, EXTRACT, ["--attention-threshold", "1.5"],
     "--attention-threshold must be in (0, 1], got 1.5"),
    (ExtractSettings, EXTRACT, ["--attention-threshold", "0"],
     "--attention-threshold must be in (0, 1], got 0.0"),
    (ExtractSettings, EXTRACT, ["--min-image-tokens", "0"],
     "--min-image-tokens must be at least 1, got 0"),
    (ExtractSettings, EXTRACT, ["--min-image-tokens", "600"],
     "--min-image-tokens (600) is larger than --max-image-tokens (576)"),
    (ExtractSettings, EXTRACT, ["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (ExtractSettings, EXTRACT, ["--num-workers", "-1"], "--num-workers must be at least 0, got -1"),
    (ExtractSettings, GALLERY, ["--layer", "0", "--max-length", "2"],
     "--max-length must be at least 16, got 2; --layer must be at least 1, got 0"),
    (PlotSettings, GALLERY, ["--samples", "9"], "--samples must be in [1, 8], got 9"),
    (PlotSettings, PLOT, ["--dpi", "49"], "--dpi must be in [50, 1200], got 49"),
    (ValidateSettings, VALIDATE, ["--min-image-side", "0"],
     "--min-image-side must be at least 1, got 0"),
    (ValidateSettings, VALIDATE, ["--max-aspect-ratio", "1"],
     "--max-aspect-ratio must be above 1, got 1.0"),
    (ScoreSettings, SCORE, ["--sv-threshold", "0"], "--sv-threshold must be in (0, 1], got 0.0"),
    (SelectSettings, KMEANS, ["--kmeans-clusters", "0"],
     "--kmeans-clusters must be at least 1, got 0"),
    (SelectSettings, KMEANS, ["--kmeans-seed", "-2"], "--kmeans-seed must be at least 0, got -2"),
])
def test_out_of_range_options_are_user_errors(stage, command, option, message) -> None:
    args = build_parser(command[0]).parse_args([*command, *option])
    with pytest.raises(UserError) as error:
        settings.from_arguments(stage, args)
    assert str(error.value) == message


def test_the_workflow_check_names_config_keys() -> None:
    assert settings.config_problems("extract", {"min_image_tokens": 600,
                                                "max_image_tokens": 576}) == [
        "extract.min_image_tokens (600) is larger than extract.max_image_tokens (576)"]
    assert settings.config_problems("extract", {"min_image_tokens": 576,
                                                "max_image_tokens": 576, "shards": 2}) == []
    assert settings.config_problems("plots", {"dpi": 10, "formats": ["png", "gif"]}) == [
        "plots.dpi must be in [50, 1200], got 10",
        "each of plots.formats must be one of pdf, png, svg, got gif"]
    assert settings.config_problems("select", {"budgets": [5, "16%", "7"],
                                               "random_seeds": [0, -1]}) == [
        "each of select.random_seeds must be at least 0, got -1"]
