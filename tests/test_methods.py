"""The selection methods are listed once (scalselect.methods): the configuration schema,
the workflow's baseline rules and the `select-baseline` command follow that table."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO

from scalselect.cli import build_parser
from scalselect.errors import UserError
from scalselect.methods import BASELINES, METHODS, picks_key, picks_name
from scalselect.report import style


def test_the_schema_offers_exactly_the_registered_methods() -> None:
    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    methods = schema["$defs"]["select"]["properties"]["methods"]
    assert methods["items"]["enum"] == list(METHODS)


def test_every_baseline_has_a_rule_writing_its_selection_and_picks() -> None:
    rules = (REPO / "rules/select.smk").read_text()
    # Each baseline's selection is named as top-N's, in the dataset's format (`{ext}`).
    selections = re.findall(r'selection="results/\{run\}/select/(\w+)-\{N\}\.\{ext\}"', rules)
    assert set(selections) == set(BASELINES) | {"top"}
    # Its picks table beside it, as `picks_name` names it (what the figures and browser read).
    picks = re.findall(r'picks="results/\{run\}/select/([^"]+)"', rules)
    assert picks == [picks_name(m, "{N}", "{ext}") for m in BASELINES]
    assert picks_name("kmeans", 8, "parquet") == "kmeans-8.parquet.picks.parquet"


def test_picks_tables_are_known_by_their_names_alone() -> None:
    assert picks_key("run/select/kcenter-32.jsonl.picks.parquet") == ("kcenter", 32)
    # The selection of a parquet run is not a picks table, nor are other methods' files.
    for name in ("kcenter-32.parquet", "kcenter-32.picks.parquet", "top-32.json.picks.parquet",
                 "kmeans-0.json.picks.parquet", "kmeans-clusters.parquet"):
        with pytest.raises(UserError, match=re.escape(name)):
            picks_key(f"select/{name}")


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


def test_every_method_has_its_own_colour_apart_from_the_sources() -> None:
    assert set(style.METHOD_COLORS) == set(METHODS)
    methods = [c.lower() for c in style.METHOD_COLORS.values()]
    sources = [c.lower() for c in (*style.SOURCE_COLORS, style.OTHER_SOURCES)]
    assert len(set(methods)) == len(methods) and len(set(sources)) == len(sources)
    assert not set(methods) & set(sources)


def test_every_baseline_names_a_picker_that_select_baseline_can_call() -> None:
    """select-baseline dispatches through the registry: each baseline's picker is a
    function of select/baselines.py taking (inputs, budget as asked, N, scores, path)."""
    import inspect

    from scalselect.select import baselines

    for name in BASELINES:
        picker = getattr(baselines, METHODS[name].picker)
        assert list(inspect.signature(picker).parameters) == [
            "inputs", "asked", "budget", "scores", "scores_path"], name
    assert not [m for m in METHODS.values() if m.picker and m.name not in BASELINES]
