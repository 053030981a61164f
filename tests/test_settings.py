"""The extraction settings are defined once (scalselect.settings): the configuration
schema, the command lines of `extract` and `plot gallery`, the workflow's params and the
store key all follow that one definition. A setting added in one place only fails here."""

from __future__ import annotations

import dataclasses
import shlex

import pytest
import yaml
from conftest import REPO

from scalselect import settings
from scalselect.cli import build_parser
from scalselect.errors import UserError
from scalselect.extract.store import settings_key
from scalselect.settings import RESULT_KEYS, Settings

SCHEMA = yaml.safe_load((REPO / "config/schema.yaml").read_text())
EXTRACT = SCHEMA["$defs"]["extract"]["properties"]
SPEED_NOTE = "Does not change results."


def test_every_result_setting_is_in_the_schema_with_the_same_default() -> None:
    for key in RESULT_KEYS:
        assert key in EXTRACT, f"extract.{key} is a Settings field but not in config/schema.yaml"
        assert EXTRACT[key]["default"] == getattr(Settings, key), key
        assert SPEED_NOTE not in EXTRACT[key]["description"], key


def test_every_other_schema_setting_says_it_does_not_change_results() -> None:
    # A result-affecting key added to the schema alone would never reach the store key.
    for key in set(EXTRACT) - set(RESULT_KEYS):
        assert SPEED_NOTE in " ".join(EXTRACT[key]["description"].split()), key


def test_the_model_type_comes_from_the_run_not_the_extract_section() -> None:
    assert RESULT_KEYS == tuple(f.name for f in dataclasses.fields(Settings))[1:]
    assert "model_type" not in EXTRACT
    model = SCHEMA["$defs"]["run"]["properties"]["model"]["properties"]["type"]
    assert model["enum"] == list(settings.MODEL_TYPES)


def workflow_options(values: dict) -> list[str]:
    """The options the rules pass (rules/common.smk `cli_option`), here written anew."""
    words = []
    for key in RESULT_KEYS:
        flag = "--" + key.replace("_", "-")
        value = values[key]
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        else:
            words += [flag, shlex.quote(str(value))]
    return words


@pytest.mark.parametrize("command", [["extract", "--dataset", "d", "--out", "o"],
                                     ["plot", "gallery", "--dataset", "d", "--image-root", "r",
                                      "--scores", "s", "--out-dir", "o"]])
def test_the_schema_defaults_reach_both_command_lines_as_the_same_settings(command) -> None:
    defaults = {key: EXTRACT[key]["default"] for key in RESULT_KEYS}
    words = [*command, "--model", "m", "--model-type", "qwen", *workflow_options(defaults)]
    args = build_parser(command[0]).parse_args(words)
    assert settings.from_arguments(args) == Settings("qwen", **defaults)
    # and a command line without them means the same
    bare = build_parser(command[0]).parse_args([*command, "--model", "m", "--model-type", "qwen"])
    assert settings.from_arguments(bare) == Settings("qwen", **defaults)


def test_changed_options_reach_the_settings_and_the_store_key() -> None:
    changed = {"attention_threshold": 0.5, "dtype": "float16", "max_length": 77,
               "min_image_tokens": 3, "max_image_tokens": 9, "trust_remote_code": True, "layer": 3}
    assert set(changed) == set(RESULT_KEYS)
    base = ["extract", "--dataset", "d", "--out", "o", "--model", "m", "--model-type", "llava"]
    parsed = settings.from_arguments(build_parser("extract").parse_args(
        base + workflow_options(changed)))
    assert parsed == Settings("llava", **changed)
    keys = {settings_key("m", dataclasses.replace(Settings("llava"), **{k: v}))[0]
            for k, v in changed.items()}
    assert len(keys | {settings_key("m", Settings("llava"))[0]}) == len(changed) + 1


@pytest.mark.parametrize(("option", "message"), [
    (["--layer", "0"], "--layer must be at least 1, got 0"),
    (["--max-length", "0"], "--max-length must be at least 1, got 0"),
    (["--attention-threshold", "1.5"], "--attention-threshold must be in (0, 1], got 1.5"),
    (["--attention-threshold", "0"], "--attention-threshold must be in (0, 1], got 0.0"),
    (["--min-image-tokens", "0"], "need 1 <= --min-image-tokens (0) <= --max-image-tokens (576)"),
])
def test_out_of_range_settings_are_user_errors(option: list[str], message: str) -> None:
    args = build_parser("extract").parse_args(
        ["extract", "--dataset", "d", "--out", "o", "--model", "m", "--model-type", "qwen", *option])
    with pytest.raises(UserError) as error:
        settings.from_arguments(args)
    assert str(error.value) == message
