"""The selection methods are listed once (scalselect.methods): the configuration schema,
the workflow's baseline rules and the `select-baseline` command follow that table."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO

from scalselect.cli import build_parser
from scalselect.methods import BASELINES, METHODS


def test_the_schema_offers_exactly_the_registered_methods() -> None:
    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    methods = schema["$defs"]["select"]["properties"]["methods"]
    assert methods["items"]["enum"] == list(METHODS)


def test_every_baseline_has_a_rule_writing_its_picks() -> None:
    rules = (REPO / "rules/select.smk").read_text()
    written = set(re.findall(r'picks="results/\{run\}/select/(\w+)-\{N\}\.parquet"', rules))
    assert written == set(BASELINES)


def test_select_baseline_accepts_the_baselines_only() -> None:
    parser = build_parser("select-baseline")
    base = ["select-baseline", "--dataset", "d", "--scores", "s", "--num", "3", "--out", "o",
            "--picks", "p"]
    for name in METHODS:
        words = [*base, "--method", name]
        if name in BASELINES:
            assert parser.parse_args(words).method == name
        else:
            with pytest.raises(SystemExit):
                parser.parse_args(words)
