"""Selection (METHOD.md stage 3): budgets, top-N, random baselines, summary, and the
command line on real dataset and score files."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import copy_workflow, planned_jobs, snakemake
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_leverage import write_shards

from scalselect.budgets import BudgetError, resolve_budget
from scalselect.cli import main
from scalselect.data.readers import load_dataset
from scalselect.data.records import DatasetError
from scalselect.data.writers import copy_records, write_records
from scalselect.progress import parse_line
from scalselect.score import leverage
from scalselect.select import selection


def sharegpt_records(n: int) -> list[dict]:
    """Records with repeated ids and varied content (unicode, nested fields)."""
    return [
        {
            "id": i // 2 if i % 5 else f"rec-{i}",
            "messages": [
                {"role": "user", "content": f"<image>\nWhat is in picture {i}? é"},
                {"role": "assistant", "content": f"Answer {i}."},
            ],
            "images": [f"coco/{i:04d}.jpg"],
            "meta": {"n": i, "tags": ["a", i]},
        }
        for i in range(n)
    ]


def score_table(importance: list[float], index: list[int] | None = None) -> pd.DataFrame:
    """A ranked score table as scoring writes it."""
    index = list(range(len(importance))) if index is None else index
    part = pd.DataFrame({
        "index": np.asarray(index, np.int64),
        "id": [json.dumps(i) for i in index],
        "importance": np.asarray(importance, float),
    })
    return leverage.rank_scores([part])


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, list[dict], pd.DataFrame]:
    """A dataset of 40 records; 30 of them scored (10 extraction failures)."""
    records = sharegpt_records(40)
    dataset = tmp_path / "filter/dataset.json"
    write_records(dataset, records)
    scored = [i for i in range(40) if i % 4]
    rng = np.random.default_rng(1)
    importance = rng.random(len(scored)).round(2)  # rounding makes ties
    table = score_table(importance.tolist(), scored)
    # Scores carry the ids of the dataset they index (select checks them).
    table["id"] = [json.dumps(records[i]["id"]) for i in table["index"]]
    scores = leverage.write_scores(tmp_path / "score/importance_scores.jsonl", table)
    return dataset, scores, records, table


@pytest.mark.parametrize(
    ("budget", "n_valid", "n"),
    [(5, 30, 5), ("5", 30, 5), ("16%", 1001, 160), ("50%", 3, 2), ("2.5%", 200, 5),
     ("100%", 7, 7), ("0.05%", 1000, 1)],
)
def test_resolve_budget(budget: int | str, n_valid: int, n: int) -> None:
    assert resolve_budget(budget, n_valid) == n


@pytest.mark.parametrize(
    ("budget", "message"),
    [(31, "asks for 31 samples but only 30 were scored"), ("101%", "more than 100%"),
     ("1%", "selects no sample"), ("many", "neither a count nor a percentage"), (0, "selects no sample")],
)
def test_bad_budgets_are_clear_errors(budget: int | str, message: str) -> None:
    with pytest.raises(BudgetError, match=message):
        resolve_budget(budget, 30)


@pytest.mark.parametrize(
    ("budget", "n_valid", "n"),
    # Shares ending in exactly .5 from percentages that binary floats cannot hold: float
    # arithmetic rounds each of the first five one too low (34, 61, 161, 484, 589).
    [("1.15%", 3000, 35), ("2.05%", 3000, 62), ("16.15%", 1000, 162), ("16.15%", 3000, 485),
     ("19.65%", 3000, 590), ("2.675%", 200, 5), ("12.5%", 4, 1), ("37.5%", 4, 2)],
)
def test_percentages_are_exact_decimals_rounded_half_up(budget: str, n_valid: int, n: int) -> None:
    assert resolve_budget(budget, n_valid) == n


@pytest.mark.parametrize("budget", ["nan%", "inf%", "1/3%", "%", "1.5", "16 %%", "ten%"])
def test_only_decimal_percentages_and_integer_counts_are_budgets(budget: str) -> None:
    with pytest.raises(BudgetError, match="neither a count nor a percentage"):
        resolve_budget(budget, 100)


def expected_count(mantissa: int, places: int, n_valid: int) -> int:
    """``mantissa / 10**places`` percent of ``n_valid``, rounded half up, in integers."""
    denominator = 100 * 10**places
    return (2 * mantissa * n_valid + denominator) // (2 * denominator)


@settings(max_examples=300, deadline=None)
@example(mantissa=115, places=2, n_valid=3000).via("float arithmetic gives 34")
@example(mantissa=1965, places=2, n_valid=3000).via("float arithmetic gives 589")
@given(
    mantissa=st.integers(0, 10**6), places=st.integers(0, 4), n_valid=st.integers(1, 10**7)
)
def test_percentage_budgets_property(mantissa: int, places: int, n_valid: int) -> None:
    text = f"{mantissa // 10**places}.{mantissa % 10**places:0{places}d}%" if places else f"{mantissa}%"
    n = expected_count(mantissa, places, n_valid)
    if mantissa > 100 * 10**places:
        with pytest.raises(BudgetError, match="more than 100%"):
            resolve_budget(text, n_valid)
    elif n < 1:
        with pytest.raises(BudgetError, match="selects no sample"):
            resolve_budget(text, n_valid)
    else:
        assert resolve_budget(text, n_valid) == n
        assert resolve_budget(f" {text} ", n_valid) == n


@settings(max_examples=200, deadline=None)
@given(count=st.integers(-5, 60), n_valid=st.integers(1, 50))
def test_count_budgets_property(count: int, n_valid: int) -> None:
    for budget in (count, str(count)):
        if 1 <= count <= n_valid:
            assert resolve_budget(budget, n_valid) == count
        else:
            with pytest.raises(BudgetError, match="selects no sample|only"):
                resolve_budget(budget, n_valid)


@settings(max_examples=200, deadline=None)
@given(
    importance=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]), min_size=1, max_size=30),
    data=st.data(),
)
def test_top_n_is_the_n_highest_ties_by_dataset_index_property(importance, data) -> None:
    index = data.draw(st.permutations(range(0, 3 * len(importance), 3)))
    n = data.draw(st.integers(1, len(importance)))
    table = score_table(importance, list(index))
    by_rank = sorted(zip(importance, index), key=lambda pair: (-pair[0], pair[1]))
    assert selection.top_indices(table, n).tolist() == sorted(i for _, i in by_rank[:n])


def test_top_n_breaks_ties_by_dataset_index() -> None:
    table = score_table([0.5, 0.9, 0.5, 0.1, 0.5])
    assert selection.top_indices(table, 1).tolist() == [1]
    assert selection.top_indices(table, 3).tolist() == [0, 1, 2]
    assert selection.top_indices(table, 4).tolist() == [0, 1, 2, 4]


def test_random_baseline_is_deterministic_nested_and_seed_dependent(files) -> None:
    _, _, _, table = files
    first = selection.random_indices(table, 12, seed=0)
    assert first.tolist() == selection.random_indices(table, 12, seed=0).tolist()
    assert first.tolist() != selection.random_indices(table, 12, seed=1).tolist()
    assert set(selection.random_indices(table, 5, seed=0)) <= set(first)
    assert set(first) <= set(table["index"]) and len(set(first)) == 12
    assert np.all(np.diff(first) > 0)


def seeded_draw(pool: list[int], n: int, seed: int) -> list[int]:
    """The random baseline as specified: the first ``n`` of NumPy's seeded permutation of
    the scored dataset indices (in dataset order), returned in dataset order."""
    order = np.random.default_rng(seed).permutation(len(pool))
    return sorted(sorted(pool)[k] for k in order[:n])


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_baseline_is_a_seeded_permutation_of_dataset_indices(files, seed: int) -> None:
    _, _, _, table = files
    pool = table["index"].tolist()
    for n in (1, 12, 30):
        assert selection.random_indices(table, n, seed).tolist() == seeded_draw(pool, n, seed)


def test_random_baseline_does_not_depend_on_the_scores(files) -> None:
    _, _, _, table = files
    pool = table["index"].tolist()
    reversed_scores = score_table((-table["importance"]).tolist(), pool)
    assert reversed_scores["index"].tolist() != pool  # a different ranking
    for seed in (0, 3):
        assert (selection.random_indices(reversed_scores, 10, seed).tolist()
                == selection.random_indices(table, 10, seed).tolist())


def test_select_command_writes_top_records_unchanged_in_dataset_order(
    files, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dataset, scores, records, table = files
    out = tmp_path / "select/top-10.json"
    caplog.set_level(logging.INFO, logger="scalselect.progress")
    assert main(["select", "--dataset", str(dataset), "--scores", str(scores), "--num", "10",
                 "--out", str(out)]) == 0
    # Every record of the pool is streamed and counted (40, of which 30 scored): the
    # total is unknown in advance.
    progress = [parse_line(r.getMessage()) for r in caplog.records if r.name == "scalselect.progress"]
    assert (progress[-1].done, progress[-1].total) == (40, None)
    chosen = sorted(table["index"][:10])
    assert json.loads(out.read_text()) == [records[i] for i in chosen]
    assert load_dataset(out).records == [records[i] for i in chosen]


def test_select_command_percentage_and_random(files, tmp_path: Path) -> None:
    dataset, scores, records, table = files
    out = tmp_path / "select/random.json"
    assert main(["select", "--dataset", str(dataset), "--scores", str(scores), "--num", "50%",
                 "--out", str(out), "--random", "--seed", "3"]) == 0
    expected = seeded_draw(table["index"].tolist(), 15, 3)
    assert json.loads(out.read_text()) == [records[i] for i in expected]


def test_select_command_rejects_a_budget_above_the_scored_samples(
    files, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dataset, scores, _, _ = files
    out = tmp_path / "select/top-31.json"
    assert main(["select", "--dataset", str(dataset), "--scores", str(scores), "--num", "31",
                 "--out", str(out)]) == 2
    assert "asks for 31 samples but only 30 were scored" in caplog.text
    assert not out.exists()


def test_original_jsonl_selects_by_id_when_ids_are_unique(tmp_path: Path) -> None:
    records = [{"id": f"q{i}", "messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": str(i)}]}
               for i in range(8)]
    dataset = tmp_path / "dataset.json"
    write_records(dataset, records)
    jsonl = tmp_path / "importance_scores.jsonl"
    jsonl.write_text("".join(
        json.dumps({"sample_id": f"q{i}", "importance": s}) + "\n"
        for i, s in [(6, 0.9), (2, 0.8), (5, 0.8), (0, 0.1)]
    ))
    out = tmp_path / "top.json"
    assert main(["select", "--dataset", str(dataset), "--scores", str(jsonl), "--num", "3",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == [records[2], records[5], records[6]]


def test_original_jsonl_with_repeated_dataset_ids_is_an_error(files) -> None:
    dataset, scores, records, _ = files
    with pytest.raises(selection.SelectionError, match="occurs twice in the dataset"):
        selection.scores_from_jsonl(scores.with_name("importance_scores.jsonl"), dataset)


def test_scores_of_another_dataset_are_an_error(files, tmp_path: Path) -> None:
    _, scores, records, table = files
    shorter = tmp_path / "shorter.json"
    write_records(shorter, records[:20])
    check = selection.ScoresCheck(scores, shorter)
    with pytest.raises(selection.SelectionError, match=re.escape(
            f"{scores} does not belong to {shorter}: it scores dataset index 39 but the"
            " dataset has 20 records")):
        copy_records(shorter, tmp_path / "out.json", keep=selection.top_indices(table, 3),
                     check=check, finish=check.finish)
    assert not (tmp_path / "out.json").exists()


def test_read_scores_gives_the_ranked_table_only(tmp_path: Path) -> None:
    table = score_table([0.1, 0.7, 0.4, 0.9])
    written = pd.read_parquet(leverage.write_scores(tmp_path / "importance_scores.jsonl", table))
    written.iloc[[2, 0, 3, 1]].assign(extra=1).to_parquet(tmp_path / "scores.parquet", index=False)
    read = selection.read_scores(tmp_path / "scores.parquet")
    assert list(read.columns) == ["index", "id", "id_type", "importance", "rank"]
    assert read.index.tolist() == [0, 1, 2, 3]
    assert read["rank"].tolist() == [1, 2, 3, 4] and read["index"].tolist() == [3, 1, 2, 0]


def test_original_jsonl_table_is_ranked_with_its_ids(tmp_path: Path) -> None:
    records = tmp_path / "d.jsonl"
    write_records(records, [{"id": f"q{i}"} for i in range(4)] + ["not a record", {"id": 7}])
    jsonl = tmp_path / "importance_scores.jsonl"
    jsonl.write_text(
        '{"sample_id": "q1", "importance": 0.5}\n\n'
        '{"sample_id": 7, "importance": 0.5}\n{"sample_id": "q3", "importance": 0.9}\n'
    )
    table = selection.scores_from_jsonl(jsonl, records)
    assert list(table.columns) == ["index", "id", "importance", "rank"]
    assert table["index"].tolist() == [3, 1, 5] and table.index.tolist() == [0, 1, 2]
    assert table["id"].tolist() == ['"q3"', '"q1"', "7"]
    assert table["rank"].tolist() == [1, 2, 3] and table["rank"].dtype == np.int64
    assert table["importance"].tolist() == [0.9, 0.5, 0.5]
    jsonl.write_text('{"sample_id": "q1", "importance": 0.5}\n\n{"sample_id": "q9", "importance": 1}\n')
    with pytest.raises(selection.SelectionError, match=r"importance_scores.jsonl:3: sample_id \"q9\" is not in the dataset"):
        selection.scores_from_jsonl(jsonl, records)


def test_copy_records_bounds(tmp_path: Path) -> None:
    records = [{"id": i} for i in range(5)]
    source = tmp_path / "d.jsonl"
    write_records(source, records)
    out = tmp_path / "out.json"
    assert copy_records(source, out, keep=np.array([0, 4])) == 5
    assert json.loads(out.read_text()) == [records[0], records[4]]
    copy_records(source, out, keep=np.array([], dtype=np.int64))
    assert out.read_text() == "[\n]\n"
    for bad, shown in (([-1, 2], -1), ([1, 5], 5), ([0, 5], 5), ([2, 3, 9], 9)):
        with pytest.raises(DatasetError, match=f"dataset index {shown} is not in .*, which has 5 records"):
            copy_records(source, tmp_path / "bad.json", keep=np.array(bad))
    assert not (tmp_path / "bad.json").exists()


def test_scores_check_matches_index_id_and_id_type(tmp_path: Path) -> None:
    records = [{"id": 7}, {"id": "b"}, "not a record", {"id": None}]

    def check(*rows: tuple[int, str | None, str]) -> None:
        path = tmp_path / "s.parquet"
        pd.DataFrame(rows, columns=["index", "id", "id_type"]).to_parquet(path)
        checker = selection.ScoresCheck(path, "d.json")
        for number, record in enumerate(records):
            checker(number, record.get("id") if isinstance(record, dict) else None)
        checker.finish(len(records))

    # The first and last index are in range; a record without an id (or not a record)
    # holds the null id.
    check((3, None, "null"), (0, "7", "int"), (1, "b", "str"), (2, None, "null"))
    for index in (-1, 4):
        with pytest.raises(selection.SelectionError, match=re.escape(
                f"s.parquet does not belong to d.json: it scores dataset index {index}"
                " but the dataset has 4 records")):
            check((index, "7", "int"), (1, "b", "str"))
    # The same text but another type (the int 7 against the string "7") does not match.
    for wrong in ((0, "7", "str"), (1, "c", "str"), (3, "None", "str")):
        with pytest.raises(selection.SelectionError, match=re.escape(
                f"s.parquet does not belong to d.json: dataset index {wrong[0]} holds id"
                f" {records[wrong[0]]['id']!r} but the scores have id {wrong[1]!r} ({wrong[2]})"
                " there (scores of another dataset, or of these records in another order)")):
            check(wrong)


def test_summary_of_no_budget_has_the_columns(files) -> None:
    _, _, _, table = files
    assert list(selection.summary(table, []).columns) == list(selection.SUMMARY_COLUMNS)


def test_summary_command(files, tmp_path: Path) -> None:
    _, scores, _, table = files
    out = tmp_path / "select/summary.csv"
    assert main(["select-summary", "--scores", str(scores), "--budgets", "3", "16%", "30",
                 "--out", str(out)]) == 0
    summary = pd.read_csv(out, dtype={"budget": str})
    assert list(summary.columns) == list(selection.SUMMARY_COLUMNS)
    assert summary["budget"].tolist() == ["3", "16%", "30"]
    assert summary["n"].tolist() == [3, 5, 30]
    np.testing.assert_allclose(summary["fraction"], [0.1, 5 / 30, 1.0])
    ranked = table["importance"].to_numpy()
    np.testing.assert_allclose(summary["score_threshold"], [ranked[2], ranked[4], ranked[29]])


# --------------------------------------------------------------------------- workflow

RUN = "t"


def plan(workdir: Path, target: str) -> dict[str, int]:
    """Jobs a dry run for ``target`` would execute (``--cores`` ends ``--quiet``'s list)."""
    return planned_jobs(workdir, "--cores", "1", target)


def write_workflow_config(workdir: Path, **changes) -> None:
    """One run on the prepared dataset, with ``changes`` to the stage sections."""
    config = {
        "runs": {RUN: {"dataset": "data/dataset.json", "image_root": "data",
                       "model": {"path": "data/model", "type": "llava"}}},
        "extract": {"shards": 2},
        "score": {"sv_threshold": 0.9},
        "select": {"budgets": [3, "50%"], "random_seeds": [0, 1]},
        **changes,
    }
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def scored_workflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workflow where validate and filter ran for real, the two extraction
    shards were written from the filtered dataset (one sample failed), and then the
    scoring and selection rules ran."""
    from PIL import Image

    from scalselect.demo.tinymodels import build_tiny_model

    workdir = copy_workflow(tmp_path_factory.mktemp("select") / "workflow")
    data = workdir / "data"
    records = sharegpt_records(24)
    for number, record in enumerate(records):
        record["id"] = number if number % 2 else f"s{number}"  # validation wants unique ids
        path = data / record["images"][0]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 32), (number * 10, 80, 160)).save(path)
    write_records(data / "dataset.json", records)
    build_tiny_model("llava", data / "model")
    write_workflow_config(workdir)
    snakemake(workdir, "--cores", "2", f"results/{RUN}/filter/dataset.json")

    filtered = json.loads((workdir / f"results/{RUN}/filter/dataset.json").read_text())
    assert len(filtered) == 24
    matrix = np.random.default_rng(4).standard_normal((24, 8)).astype(np.float32) + 3
    # What an extract job's manifest says (the selection cards read it).
    manifest = {
        "model": "data/model", "model_sha256": "ab" * 32,
        "settings": {"model_type": "llava", "attention_threshold": 0.9, "dtype": "float32",
                     "max_length": 4096, "min_image_tokens": 256, "max_image_tokens": 576,
                     "trust_remote_code": False, "layer": 1},
        "versions": {"torch": "t", "transformers": "x"},
        "store": {"settings_key": "cd" * 32, "packs": []},
        "dataset_sha256": hashlib.sha256(
            (workdir / f"results/{RUN}/filter/dataset.json").read_bytes()).hexdigest(),
    }
    shards = write_shards(workdir / f"results/{RUN}/extract", matrix,
                          [r["id"] for r in filtered], [12], failed={5}, manifest=manifest)
    # The second output of each extract job: the shard's moments.
    for shard in shards:
        partial = workdir / f"results/{RUN}/score/partials/{shard.name}.npz"
        assert main(["score-partial", "--features", str(shard), "--out", str(partial)]) == 0
    snakemake(workdir, "--cores", "2", f"results/{RUN}/select/summary.csv")
    return workdir


@pytest.mark.slow
def test_workflow_scores_and_selects(scored_workflow: Path) -> None:
    results = scored_workflow / f"results/{RUN}"
    single = results.parent / "single/importance_scores.jsonl"
    assert main(["score", "--features", str(results / "extract"), "--out", str(single)]) == 0
    merged = (results / "score/importance_scores.jsonl").read_text().splitlines()
    assert merged == single.read_text().splitlines()
    assert len(merged) == 23
    records = json.loads((results / "filter/dataset.json").read_text())
    table = selection.read_scores(results / "score/scores.parquet")
    assert 5 not in set(table["index"])
    # 50% of the 23 scored samples is 11.5 -> 12.
    for n in (3, 12):
        top = json.loads((results / f"select/top-{n}.json").read_text())
        assert top == [records[i] for i in sorted(table["index"][:n])]
        for seed in (0, 1):
            chosen = json.loads((results / f"select/random-{n}-seed{seed}.json").read_text())
            assert chosen == [records[i] for i in seeded_draw(table["index"].tolist(), n, seed)]
    summary = pd.read_csv(results / "select/summary.csv", dtype={"budget": str})
    assert summary["budget"].tolist() == ["3", "50%"] and summary["n"].tolist() == [3, 12]
    # Beside each selection its card: the budget as asked, the selected ids.
    for n, budget in ((3, "3"), (12, "50%")):
        card = json.loads((results / f"select/top-{n}.json.card.json").read_text())
        assert (card["selection"]["budget"], card["selection"]["n"]) == (budget, n)
        assert card["model"]["sha256"] == "ab" * 32
        assert sorted(map(str, (r["id"] for r in card["selection"]["records"]))) == sorted(
            str(records[i]["id"]) for i in table["index"][:n])
    for rule in ("cur", "select/top-3.json"):
        assert (results / f"benchmarks/{rule}.tsv").exists()


@pytest.mark.slow
def test_new_budgets_rerun_only_selection(scored_workflow: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "workflow"
    shutil.copytree(scored_workflow, workdir, symlinks=True)
    target = f"results/{RUN}/select/summary.csv"
    assert plan(workdir, target) == {}
    write_workflow_config(workdir, select={"budgets": [3, 5, "25%"], "random_seeds": [0, 1]})
    # New counts 5 and round(5.75) = 6: two top-N files, four random ones, the summary.
    assert plan(workdir, target) == {"select": 2, "select_random": 4, "select_summary": 1}
    # Any budget as a target of its own, with nothing upstream.
    assert plan(workdir, f"results/{RUN}/select/top-17.json") == {"select": 1}
    too_many = snakemake(workdir, "--dry-run", f"results/{RUN}/select/top-24.json", check=False)
    assert too_many.returncode == 0  # the plan is fine; the job itself reports the error
    result = snakemake(workdir, "--cores", "1", f"results/{RUN}/select/top-24.json", check=False)
    assert result.returncode != 0
    assert "asks for 24 samples but only 23 were scored" in result.stdout + result.stderr


@pytest.mark.slow
def test_new_rank_threshold_reuses_the_partials(scored_workflow: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "workflow"
    shutil.copytree(scored_workflow, workdir, symlinks=True)
    write_workflow_config(workdir, score={"sv_threshold": 0.5})
    jobs = plan(workdir, f"results/{RUN}/select/summary.csv")
    # The moments come from the extract jobs, which do not rerun: `cur` alone refits,
    # rescores and reranks.
    assert "extract" not in jobs and "filter" not in jobs
    assert jobs["cur"] == 1


def test_the_scored_count_is_the_tables_rows(tmp_path: Path) -> None:
    """What the workflow resolves percentages against, read from the table's footer."""
    path = tmp_path / "scores.parquet"
    pd.DataFrame({"index": range(7), "importance": np.linspace(1, 0, 7)}).to_parquet(
        path, row_group_size=3)
    assert selection.scored_count(path) == 7
