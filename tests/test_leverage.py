"""Leverage scores (METHOD.md stage 2) against an independent dense SVD, streamed over
real shard files, through the map-reduce commands and the one-process command."""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalselect.cli import main
from scalselect.extract import features
from scalselect.progress import parse_line
from scalselect.score import leverage
from scalselect.score.leverage import Backend, LeverageError, Preprocessing

RNG_SEED = 7


def representations(n: int = 240, d: int = 20, seed: int = RNG_SEED) -> np.ndarray:
    """Float32 rows with a dominant low-rank part, large column means (to expose
    cancellation) and one constant column."""
    rng = np.random.default_rng(seed)
    scales = np.array([12.0, 9.0, 6.0, 4.0, 2.5])
    low_rank = (rng.standard_normal((n, 5)) * scales) @ rng.standard_normal((5, d))
    matrix = 50.0 + rng.standard_normal(d) * 5 + low_rank + 0.3 * rng.standard_normal((n, d))
    matrix[:, 3] = 7.25
    return matrix.astype(np.float32)


def dense_reference(matrix: np.ndarray, prep: Preprocessing, tau: float) -> tuple[np.ndarray, int]:
    """Leverage scores the textbook way: preprocess, thin SVD, sum of squared U columns."""
    r = matrix.astype(np.float64)
    x = r - r.mean(axis=0) if prep.center else r.copy()
    if prep.standardize:
        std = r.std(axis=0)
        std[r.max(axis=0) == r.min(axis=0)] = 1.0
        x = x / std
    if prep.l2_normalize:
        norms = np.linalg.norm(x, axis=1)
        norms[norms == 0] = 1.0
        x = x / norms[:, None]
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    energy = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.argmax(energy >= tau)) + 1
    return (u[:, :k] ** 2).sum(axis=1), k


def write_shards(root: Path, matrix: np.ndarray, ids: list, bounds: list[int],
                 failed: set[int] = frozenset(), manifest: dict | None = None) -> list[Path]:
    """Shard directories holding ``matrix`` split at ``bounds``; rows in ``failed`` are
    extraction failures (zero rows, status not ok); ``manifest``: more manifest fields."""
    dirs = []
    edges = [0, *bounds, len(matrix)]
    for number, (start, stop) in enumerate(itertools.pairwise(edges)):
        index = np.arange(start, stop)
        ok = np.array([i not in failed for i in index])
        rows = pd.DataFrame({
            "index": index.astype(np.int64),
            "id": [features.encode_id(ids[i]) for i in index],
            "status": np.where(ok, "ok", "image_error"),
            "n_vision": np.full(len(index), 4, np.int64),
            "n_kept": np.full(len(index), 2, np.int64),
            "seq_len": np.full(len(index), 12, np.int64),
            "truncated": np.zeros(len(index), bool),
            "detail": ["" if o else "broken image" for o in ok],
        })
        block = np.where(ok[:, None], matrix[start:stop], 0).astype(np.float32)
        directory = root / f"shard-{number}-of-{len(edges) - 1}"
        features.write_shard(directory, rows, block, manifest)
        dirs.append(directory)
    return dirs


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


PREPS = [Preprocessing(*flags) for flags in itertools.product([True, False], repeat=3)]


@pytest.mark.parametrize("prep", PREPS, ids=lambda p: f"c{p.center:d}s{p.standardize:d}l{p.l2_normalize:d}")
def test_scores_equal_dense_svd_for_every_preprocessing(
    tmp_path: Path, prep: Preprocessing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scalselect.progress")
    matrix = representations()
    failed = {5, 100, 101}
    ids = [f"s{i}" for i in range(len(matrix))]
    dirs = write_shards(tmp_path / "extract", matrix, ids, [70, 150], failed)
    ok = np.array([i not in failed for i in range(len(matrix))])
    expected, k = dense_reference(matrix[ok], prep, 0.9)

    table, model = leverage.leverage_scores(
        leverage.open_sources(dirs), prep, 0.9, Backend("numpy"), block_rows=16
    )
    # Every pass counts the ok rows: moments and scores, and the Gram for row-L2.
    passes = 3 if prep.l2_normalize else 2
    reading = parse_line(caplog.records[-1].getMessage())
    assert (reading.done, reading.total, reading.unit) == (passes * ok.sum(),) * 2 + ("rows",)
    assert model.spectrum.k == k
    got = table.sort_values("index")
    np.testing.assert_array_equal(got["index"], np.flatnonzero(ok))
    assert got["id"].map(features.decode_id).tolist() == [ids[i] for i in np.flatnonzero(ok)]
    np.testing.assert_allclose(got["importance"], expected, rtol=1e-6, atol=0)
    assert table["importance"].sum() == pytest.approx(k, rel=1e-9)


def test_several_shards_equal_one_block(tmp_path: Path) -> None:
    matrix = representations(n=300, d=16, seed=3)
    ids = list(range(300))
    one = write_shards(tmp_path / "one", matrix, ids, [])
    many = write_shards(tmp_path / "many", matrix, ids, [1, 90, 91, 250])
    prep = Preprocessing(center=True, standardize=True)
    single, _ = leverage.leverage_scores(leverage.open_sources(one), prep, 0.9, Backend("numpy"), 10_000)
    split, _ = leverage.leverage_scores(leverage.open_sources(many), prep, 0.9, Backend("numpy"), 7)
    np.testing.assert_allclose(
        split.sort_values("index")["importance"], single.sort_values("index")["importance"],
        rtol=1e-10,
    )


def test_torch_backend_matches_numpy(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    dirs = write_shards(tmp_path, representations(), list(range(240)), [100])
    prep = Preprocessing(center=True, standardize=True, l2_normalize=True)
    ours, _ = leverage.leverage_scores(leverage.open_sources(dirs), prep, 0.9, Backend("numpy"), 32)
    torch_cpu = Backend("torch", device="cpu")
    assert torch_cpu.name == "torch:cpu"
    theirs, _ = leverage.leverage_scores(leverage.open_sources(dirs), prep, 0.9, torch_cpu, 32)
    np.testing.assert_allclose(theirs["importance"], ours["importance"], rtol=1e-10)
    assert theirs["index"].tolist() == ours["index"].tolist()


def test_map_reduce_commands_equal_one_process(tmp_path: Path) -> None:
    matrix = representations(n=200, d=12, seed=11)
    ids = [i if i % 3 else f"s{i}" for i in range(200)]
    dirs = write_shards(tmp_path / "extract", matrix, ids, [60, 130], failed={0, 61})
    flags = ["--sv-threshold", "0.8", "--standardize", "--l2-normalize", "--block-rows", "9"]
    partials, parts = [], []
    for shard in dirs:
        partials.append(tmp_path / f"partial-{shard.name}.npz")
        assert main(["score-partial", "--features", str(shard), "--out", str(partials[-1])]) == 0
    spectrum, model = tmp_path / "score/spectrum.json", tmp_path / "score/model.npz"
    assert main([
        "score-fit", "--partials", *map(str, partials), "--features", *map(str, dirs),
        "--spectrum", str(spectrum), "--model", str(model), *flags,
    ]) == 0
    for shard in dirs:
        parts.append(tmp_path / f"part-{shard.name}.parquet")
        assert main([
            "score-apply", "--features", str(shard), "--model", str(model), "--out", str(parts[-1])
        ]) == 0
    merged = tmp_path / "score/importance_scores.jsonl"
    assert main(["score-merge", "--parts", *map(str, parts), "--out", str(merged)]) == 0

    single = tmp_path / "single/importance_scores.jsonl"
    assert main(["score", "--features", str(tmp_path / "extract"), "--out", str(single), *flags]) == 0

    # The workflow's one scoring job writes the same bytes as the three steps apart.
    together = tmp_path / "together"
    assert main([
        "score-shards", "--partials", *map(str, partials), "--features", *map(str, dirs),
        "--spectrum", str(together / "spectrum.json"), "--model", str(together / "model.npz"),
        "--out", str(together / "importance_scores.jsonl"), *flags,
    ]) == 0
    for name in ("spectrum.json", "importance_scores.jsonl", "scores.parquet"):
        assert (together / name).read_bytes() == (merged.parent / name).read_bytes(), name
    # An .npz is a zip: its entries carry the time they were written; compare the arrays.
    with np.load(together / "model.npz") as ours, np.load(merged.parent / "model.npz") as theirs:
        assert ours.files == theirs.files
        for key in ours.files:
            assert ours[key].tobytes() == theirs[key].tobytes(), key

    ok = np.array([i not in {0, 61} for i in range(200)])
    expected, k = dense_reference(matrix[ok], Preprocessing(True, True, True), 0.8)
    lines = read_jsonl(merged)
    assert [line["sample_id"] for line in lines] == [line["sample_id"] for line in read_jsonl(single)]
    by_id = {line["sample_id"]: line["importance"] for line in lines}
    np.testing.assert_allclose(
        [by_id[ids[i]] for i in np.flatnonzero(ok)], expected, rtol=1e-6
    )
    record = json.loads(spectrum.read_text())
    assert record["k"] == k and record["n"] == ok.sum() and record["d"] == 12
    assert record["standardize"] and record["l2_normalize"] and record["center"]
    assert record["cumulative_energy"][k - 1] >= 0.8 > (record["cumulative_energy"][k - 2] if k > 1 else 0)
    table = pd.read_parquet(merged.with_name("scores.parquet"))
    assert table["rank"].tolist() == list(range(1, ok.sum() + 1))
    assert table["importance"].is_monotonic_decreasing
    # Ids keep their type: 7 and "s6" both come back as written.
    assert {type(line["sample_id"]) for line in lines} == {int, str}


def test_original_npz_is_accepted(tmp_path: Path) -> None:
    matrix = representations(n=120, d=10, seed=5)
    path = tmp_path / "all_representations.npz"
    np.savez(path, representations=matrix, sample_ids=np.arange(1000, 1120))
    out = tmp_path / "scores/importance_scores.jsonl"
    assert main(["score", "--features", str(path), "--out", str(out)]) == 0
    expected, k = dense_reference(matrix, Preprocessing(), 0.9)
    lines = read_jsonl(out)
    assert all(set(line) == {"sample_id", "importance"} for line in lines)
    got = {line["sample_id"]: line["importance"] for line in lines}
    np.testing.assert_allclose([got[1000 + i] for i in range(120)], expected, rtol=1e-6)
    assert [line["importance"] for line in lines] == sorted(got.values(), reverse=True)
    assert json.loads((tmp_path / "scores/spectrum.json").read_text())["k"] == k


def test_npz_source_reads_rows_in_file_order(tmp_path: Path) -> None:
    matrix = representations(n=23, d=5, seed=3).astype(np.float64)
    path = tmp_path / "all_representations.npz"
    np.savez(path, representations=matrix, sample_ids=np.array([f"s{i}" for i in range(23)]))
    source = leverage.NpzSource(path)
    assert (source.name, source.rows, source.dim) == (str(path), 23, 5)
    blocks = list(source.blocks(block_rows=7))
    assert [len(b.index) for b in blocks] == [7, 7, 7, 2]
    assert np.concatenate([b.index for b in blocks]).tolist() == list(range(23))
    assert all(b.index.dtype == np.int64 and b.matrix.dtype == np.float32 for b in blocks)
    assert [i for b in blocks for i in b.ids] == [f"s{i}" for i in range(23)]
    assert np.array_equal(np.concatenate([b.matrix for b in blocks]), matrix.astype(np.float32))


def test_npz_source_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, representations=np.zeros((3, 2)))
    with pytest.raises(LeverageError, match=re.escape(f"{path}: missing arrays ['sample_ids']")):
        leverage.NpzSource(path)
    for matrix, ids in ((np.zeros(3), np.arange(3)), (np.zeros((3, 2)), np.arange(4))):
        np.savez(path, representations=matrix, sample_ids=ids)
        with pytest.raises(LeverageError, match=re.escape(
                f"{path}: representations {matrix.shape} does not match {len(ids)} sample_ids")):
            leverage.NpzSource(path)
    # Mixed ids make an object array, which only unpickling would read: refused.
    np.savez(path, representations=np.zeros((2, 2)), sample_ids=np.array([1, "a"], dtype=object))
    with pytest.raises(LeverageError, match="arrays of Python objects are not read"):
        leverage.NpzSource(path)


@pytest.mark.parametrize("center, standardize, l2_normalize", list(itertools.product([False, True], repeat=3)))
def test_model_round_trips_and_spectrum_record(
    tmp_path: Path, center: bool, standardize: bool, l2_normalize: bool
) -> None:
    dirs = write_shards(tmp_path, representations(n=40, d=6), list(range(40)), [])
    prep = Preprocessing(center=center, standardize=standardize, l2_normalize=l2_normalize)
    _, model = leverage.leverage_scores(leverage.open_sources(dirs), prep, 0.85, Backend("numpy"))
    model.save(tmp_path / "model.npz")
    again = leverage.Model.load(tmp_path / "model.npz")
    assert again.prep == prep and again.count == model.count == 40
    assert again.transform.l2_normalize == l2_normalize
    assert np.array_equal(again.transform.shift, model.transform.shift)
    assert np.array_equal(again.transform.scale, model.transform.scale)
    s, t = model.spectrum, again.spectrum
    assert (t.k, t.rank, t.sv_threshold) == (s.k, s.rank, 0.85)
    for name in ("singular_values", "cumulative_energy", "basis"):
        assert np.array_equal(getattr(t, name), getattr(s, name)), name
    assert again.spectrum_record() == {
        "singular_values": s.singular_values.tolist(), "cumulative_energy": s.cumulative_energy.tolist(),
        "k": s.k, "rank": s.rank, "sv_threshold": 0.85, "n": 40, "d": 6,
        "center": center, "standardize": standardize, "l2_normalize": l2_normalize,
    }
    if l2_normalize:
        with pytest.raises(ValueError) as error:
            leverage.preprocessed_gram(None, model.transform)  # refused before the moments are read
        assert str(error.value) == "the Gram of L2-normalised rows needs a pass over the rows"


def test_scores_parquet_has_exactly_the_documented_columns(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    dirs = write_shards(tmp_path, representations(n=30, d=5), list(range(30)), [])
    table, _ = leverage.leverage_scores(leverage.open_sources(dirs), Preprocessing(), 0.9, Backend("numpy"))
    leverage.write_scores(tmp_path / "importance_scores.jsonl", table)
    schema = pq.read_schema(tmp_path / "scores.parquet")
    assert schema.names == ["index", "id", "id_type", "importance", "rank"]


def test_ties_are_ordered_by_dataset_index() -> None:
    parts = [
        pd.DataFrame({"index": [4, 2], "id": ['"a"', '"b"'], "importance": [0.5, 0.25]}),
        pd.DataFrame({"index": [3, 0, 1], "id": ['"c"', '"d"', '"e"'], "importance": [0.5, 0.5, 0.25]}),
    ]
    table = leverage.rank_scores(parts)
    assert table["index"].tolist() == [0, 3, 4, 1, 2]
    assert table["rank"].tolist() == [1, 2, 3, 4, 5]


def test_identical_rows_score_equally_and_keep_dataset_order(tmp_path: Path) -> None:
    matrix = representations(n=50, d=8, seed=2)
    matrix[[10, 30, 31]] = matrix[10]
    dirs = write_shards(tmp_path, matrix, list(range(50)), [31])
    table, _ = leverage.leverage_scores(leverage.open_sources(dirs), Preprocessing(), 0.9, Backend("numpy"), 50)
    tied = table[table["index"].isin([10, 30, 31])]
    assert tied["index"].tolist() == [10, 30, 31]
    assert tied["importance"].max() - tied["importance"].min() <= 1e-12 * tied["importance"].max()


def test_a_shard_given_twice_is_an_error(tmp_path: Path) -> None:
    dirs = write_shards(tmp_path, representations(n=20, d=4), list(range(20)), [])
    with pytest.raises(LeverageError, match="scored twice"):
        leverage.leverage_scores(leverage.open_sources(dirs + dirs), Preprocessing(), 0.9, Backend("numpy"))


def test_fewer_than_two_rows_is_an_error(tmp_path: Path) -> None:
    dirs = write_shards(tmp_path, representations(n=3, d=4), [0, 1, 2], [], failed={0, 2})
    with pytest.raises(LeverageError, match="at least 2 representations to score, got 1"):
        leverage.leverage_scores(leverage.open_sources(dirs), Preprocessing(), 0.9, Backend("numpy"))


def test_non_finite_value_names_the_sample(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    matrix = representations(n=30, d=6)
    matrix[17, 2] = np.nan
    dirs = write_shards(tmp_path / "extract", matrix, [f"x{i}" for i in range(30)], [10])
    with pytest.raises(LeverageError, match=r"dataset index 17 \(id 'x17'\)"):
        leverage.leverage_scores(leverage.open_sources(dirs), Preprocessing(), 0.9, Backend("numpy"))
    # Through the command line: exit code 2 and the message, no traceback.
    code = main(["score", "--features", str(tmp_path / "extract"), "--out", str(tmp_path / "s.jsonl")])
    assert code == 2
    assert "non-finite representation for dataset index 17" in caplog.text
    assert not (tmp_path / "s.jsonl").exists()


def test_score_shards_without_shards_names_the_option(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dirs = write_shards(tmp_path / "extract", representations(n=20, d=4), list(range(20)), [])
    partial = tmp_path / "partial.npz"
    assert main(["score-partial", "--features", str(dirs[0]), "--out", str(partial)]) == 0
    out = tmp_path / "score/importance_scores.jsonl"
    code = main(["score-shards", "--partials", str(partial), "--spectrum",
                 str(tmp_path / "score/spectrum.json"), "--model", str(tmp_path / "score/model.npz"),
                 "--out", str(out)])
    assert code == 2
    assert "score-shards needs --features: the shards to score" in caplog.text
    assert not (tmp_path / "score").exists()


@pytest.mark.parametrize("center", [True, False])
def test_identical_rows_have_no_spectrum_when_centred(tmp_path: Path, center: bool) -> None:
    matrix = np.tile(np.arange(6, dtype=np.float32), (10, 1))
    dirs = write_shards(tmp_path, matrix, list(range(10)), [])
    sources = leverage.open_sources(dirs)
    if center:
        with pytest.raises(LeverageError, match="zero spectral energy"):
            leverage.leverage_scores(sources, Preprocessing(), 0.9, Backend("numpy"))
    else:
        # Without centring the common row is a rank-1 signal: every sample scores 1/n.
        table, model = leverage.leverage_scores(sources, Preprocessing(center=False), 0.9, Backend("numpy"))
        assert model.spectrum.k == 1 and model.spectrum.rank == 1
        np.testing.assert_allclose(table["importance"], 0.1, rtol=1e-12)


def test_rank_below_k_caps_k_at_the_numerical_rank(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    matrix = (rng.standard_normal((40, 2)) @ rng.standard_normal((2, 9))).astype(np.float32)
    matrix[:, 5] = 3.0
    dirs = write_shards(tmp_path, matrix, list(range(40)), [])
    table, model = leverage.leverage_scores(
        leverage.open_sources(dirs), Preprocessing(standardize=True), 1.0, Backend("numpy")
    )
    assert model.spectrum.rank == 2 and model.spectrum.k == 2
    assert np.isfinite(table["importance"]).all()
    assert table["importance"].sum() == pytest.approx(2.0, rel=1e-9)
    u, _, _ = np.linalg.svd(matrix.astype(np.float64) - matrix.mean(0, dtype=np.float64), full_matrices=False)
    np.testing.assert_allclose(
        table.sort_values("index")["importance"], (u[:, :2] ** 2).sum(1), rtol=1e-6
    )


def test_more_columns_than_rows(tmp_path: Path) -> None:
    matrix = representations(n=6, d=30, seed=9)
    dirs = write_shards(tmp_path, matrix, list(range(6)), [3])
    for prep in (Preprocessing(), Preprocessing(True, True, True)):
        table, model = leverage.leverage_scores(leverage.open_sources(dirs), prep, 0.9, Backend("numpy"))
        expected, k = dense_reference(matrix, prep, 0.9)
        assert model.spectrum.k == k and model.spectrum.rank <= 5
        np.testing.assert_allclose(table.sort_values("index")["importance"], expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("energy", "tau", "rank", "k"),
    [([0.5, 0.9, 1.0], 0.9, 3, 2), ([0.5, 0.9, 1.0], 0.95, 3, 3), ([0.5, 1 - 1e-16, 1 - 1e-16], 1.0, 2, 2),
     ([1.0, 1.0], 0.3, 1, 1)],
)
def test_choose_rank(energy: list[float], tau: float, rank: int, k: int) -> None:
    assert leverage.choose_rank(np.array(energy), tau, rank) == k


def test_moments_round_trip_through_a_file(tmp_path: Path) -> None:
    dirs = write_shards(tmp_path / "x", representations(n=30, d=5), list(range(30)), [])
    moments = leverage.source_moments(leverage.open_sources(dirs)[0], Backend("numpy"), 4)
    moments.save(tmp_path / "m.npz")
    again = leverage.Moments.load(tmp_path / "m.npz")
    assert again.count == 30
    np.testing.assert_array_equal(again.scatter, moments.scatter)
    r = representations(n=30, d=5).astype(np.float64)
    np.testing.assert_allclose(again.mean, r.mean(0), rtol=1e-12)
    np.testing.assert_allclose(again.scatter, (r - r.mean(0)).T @ (r - r.mean(0)), rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- boundaries and
# messages found by mutation testing (bench/RESULTS.md, issue 12)


def test_two_rows_are_enough_and_the_threshold_is_checked(tmp_path: Path) -> None:
    dirs = write_shards(tmp_path, representations(n=2, d=5), [0, 1], [])
    sources = leverage.open_sources(dirs)
    table, model = leverage.leverage_scores(sources, Preprocessing(), 0.9, Backend("numpy"))
    # Two centred rows are r and -r: one direction, each row half of it.
    assert model.spectrum.k == 1
    np.testing.assert_allclose(table["importance"], [0.5, 0.5], rtol=1e-12)
    moments = leverage.source_moments(sources[0], Backend("numpy"))
    for tau in (0.0, -0.1, 1.5):
        with pytest.raises(LeverageError, match=re.escape(f"sv_threshold must be in (0, 1], got {tau}")):
            leverage.fit(moments, Preprocessing(), tau, Backend("numpy"))
    leverage.fit(moments, Preprocessing(), 1.0, Backend("numpy"))
    with pytest.raises(ValueError) as error:
        leverage.fit(moments, Preprocessing(l2_normalize=True), 0.9, Backend("numpy"))
    assert str(error.value) == "row L2 normalisation needs the sources for a second pass"


def test_fit_logs_what_it_chose(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dirs = write_shards(tmp_path, representations(), list(range(240)), [])
    with caplog.at_level("INFO", logger="scalselect.score.leverage"):
        _, model = leverage.leverage_scores(leverage.open_sources(dirs), Preprocessing(), 0.9, Backend("numpy"))
    s = model.spectrum
    assert 1 < s.k < s.rank
    line = (
        f"n=240 d=20 k={s.k} (energy {s.cumulative_energy[s.k - 1]:.4f} >= 0.9), "
        f"numerical rank {s.rank}, backend numpy"
    )
    assert line in caplog.messages


class RecordingSource(leverage.NpzSource):
    """An .npz source that records the block size of every pass over it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.requested: list[int] = []

    def blocks(self, block_rows: int = leverage.BLOCK_ROWS):
        self.requested.append(block_rows)
        return super().blocks(block_rows)


def test_every_pass_reads_blocks_of_the_requested_size(tmp_path: Path) -> None:
    path = tmp_path / "r.npz"
    np.savez(path, representations=representations(n=30, d=4), sample_ids=np.arange(30))
    source = RecordingSource(path)
    leverage.leverage_scores([source], Preprocessing(l2_normalize=True), 0.9, Backend("numpy"), 7)
    assert source.requested == [7, 7, 7]  # moments, the Gram of the normalised rows, scores


def test_standardising_divides_by_the_population_std(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    matrix = np.column_stack([
        rng.standard_normal(50) * 1e-3,  # a std far below 1
        rng.standard_normal(50) * 40 + 3,
        np.full(50, 0.1),  # constant: scale 1
    ]).astype(np.float32)
    dirs = write_shards(tmp_path, matrix, list(range(50)), [])
    moments = leverage.source_moments(leverage.open_sources(dirs)[0], Backend("numpy"), 16)
    transform = leverage.make_transform(moments, Preprocessing(center=True, standardize=True))
    r = matrix.astype(np.float64)
    np.testing.assert_allclose(transform.shift, r.mean(0), rtol=1e-12)
    np.testing.assert_allclose(transform.scale, [r[:, 0].std(), r[:, 1].std(), 1.0], rtol=1e-9)
    assert moments.scatter[2, 2] == 0.0  # the constant column's sums are exact in float64


def test_scores_do_not_depend_on_the_scale_of_the_representations(tmp_path: Path) -> None:
    # Total spectral energy far below 1 must not be mistaken for none.
    matrix = representations(n=60, d=6)
    big = write_shards(tmp_path / "big", matrix, list(range(60)), [])
    small = write_shards(tmp_path / "small", matrix * np.float32(1e-4), list(range(60)), [])
    ours, _ = leverage.leverage_scores(leverage.open_sources(big), Preprocessing(), 0.9, Backend("numpy"))
    tiny, model = leverage.leverage_scores(leverage.open_sources(small), Preprocessing(), 0.9, Backend("numpy"))
    assert (model.spectrum.singular_values ** 2).sum() < 1
    np.testing.assert_allclose(tiny["importance"], ours["importance"], rtol=1e-4)


def test_source_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(LeverageError) as error:
        leverage.open_sources([tmp_path / "a.npz", tmp_path / "extract"])
    assert str(error.value) == "an .npz of representations must be the only --features path"
    with pytest.raises(LeverageError, match=re.escape(f"no extraction shards in {tmp_path / 'none'}")):
        leverage.open_sources([tmp_path / "none"])
    narrow = write_shards(tmp_path / "narrow", representations(n=5, d=4), list(range(5)), [])
    wide = write_shards(tmp_path / "wide", representations(n=5, d=6), list(range(5, 10)), [])
    with pytest.raises(LeverageError, match=re.escape("feature dimensions differ between sources: [4, 6]")):
        leverage.open_sources(narrow + wide)
    _, model = leverage.leverage_scores(leverage.open_sources(wide), Preprocessing(), 0.9, Backend("numpy"))
    with pytest.raises(LeverageError, match=re.escape(
            f"{narrow[0]}: dimension 4 differs from the model's 6")):
        leverage.score_source(leverage.open_sources(narrow)[0], model, Backend("numpy"))
    # A matrix stored in Fortran order cannot be read in row blocks.
    np.save(narrow[0] / features.FEATURES, np.asfortranarray(representations(n=5, d=4)))
    with pytest.raises(LeverageError, match=re.escape(f"{narrow[0]}: features are not stored in C order")):
        leverage.ShardSource(narrow[0])


def test_shard_source_reads_past_blocks_without_a_valid_row(tmp_path: Path) -> None:
    matrix = representations(n=30, d=4)
    failed = set(range(0, 8)) | set(range(16, 24))
    (shard,) = write_shards(tmp_path, matrix, [f"s{i}" for i in range(30)], [], failed)
    source = leverage.ShardSource(shard)
    assert (source.name, source.rows, source.dim) == (str(shard), 14, 4)
    blocks = list(source.blocks(block_rows=8))
    assert [b.index.tolist() for b in blocks] == [list(range(8, 16)), list(range(24, 30))]
    assert [b.ids for b in blocks] == [[f"s{i}" for i in range(8, 16)], [f"s{i}" for i in range(24, 30)]]
    np.testing.assert_array_equal(np.concatenate([b.matrix for b in blocks]), matrix[[*range(8, 16), *range(24, 30)]])


def test_a_shard_whose_every_sample_failed_adds_nothing(tmp_path: Path) -> None:
    matrix = representations(n=90, d=5)
    dirs = write_shards(tmp_path / "x", matrix, list(range(90)), [30, 60], failed=set(range(30, 60)))
    sources = leverage.open_sources(dirs)
    empty = leverage.source_moments(sources[1], Backend("numpy"))
    empty.save(tmp_path / "empty.npz")  # what score-partial writes for such a shard
    again = leverage.Moments.load(tmp_path / "empty.npz")
    assert again.count == 0
    np.testing.assert_array_equal(again.mean, np.zeros(5))
    np.testing.assert_array_equal(again.scatter, np.zeros((5, 5)))
    prep = Preprocessing(center=True, standardize=True)
    table, model = leverage.leverage_scores(sources, prep, 0.9, Backend("numpy"))
    ok = np.r_[0:30, 60:90]
    expected, k = dense_reference(matrix[ok], prep, 0.9)
    assert model.count == 60 and model.spectrum.k == k
    np.testing.assert_allclose(table.sort_values("index")["importance"], expected, rtol=1e-6)
    none = leverage.score_source(sources[1], model, Backend("numpy"))
    assert len(none) == 0 and list(none.columns) == list(leverage.SCORE_COLUMNS)
    assert (none["index"].dtype, none["importance"].dtype) == (np.int64, np.float64)


def test_ranked_table_columns_and_the_repeated_index_named() -> None:
    parts = [pd.DataFrame({"index": [4, 2], "id": ['"a"', '"b"'], "importance": [0.5, 0.25]})]
    assert list(leverage.rank_scores(parts).columns) == ["index", "id", "importance", "rank"]
    twice = [*parts, pd.DataFrame({"index": [7, 2], "id": ['"c"', '"b"'], "importance": [0.1, 0.2]})]
    with pytest.raises(LeverageError, match="dataset index 2 is scored twice"):
        leverage.rank_scores(twice)


def test_a_row_at_the_mean_scores_zero_with_row_normalisation(tmp_path: Path) -> None:
    # Rows c + x_i and c - x_i, and c itself, in small integers: the mean is exactly c,
    # so after centring the last row is exactly zero.
    rng = np.random.default_rng(8)
    c = rng.integers(-50, 50, 4)
    x = rng.integers(-20, 20, (10, 4))
    matrix = np.vstack([c + x, c - x, c[None]]).astype(np.float32)
    path = tmp_path / "r.npz"
    np.savez(path, representations=matrix, sample_ids=np.arange(21))
    table, _ = leverage.leverage_scores(
        [leverage.NpzSource(path)], Preprocessing(True, False, True), 0.9, Backend("numpy")
    )
    assert np.isfinite(table["importance"]).all()
    assert table.set_index("index").loc[20, "importance"] == 0.0


def test_backend_choice() -> None:
    assert Backend().name == "numpy"  # no GPU here: "auto" is NumPy
    assert Backend("numpy").name == "numpy"
    with pytest.raises(ValueError, match="unknown backend 'cupy'"):
        Backend("cupy")
    pytest.importorskip("torch")
    assert Backend("torch").name == "torch:cpu"  # torch without a GPU runs on the CPU
