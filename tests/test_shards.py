"""Properties of the extraction's pure planning functions: shard ranges, chunks, batches
and the length estimate (the expected values are written out here, not computed by the
code under test)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalselect.data.index import shard_range
from scalselect.data.records import Message, Sample
from scalselect.extract.shard import length_estimate, plan_chunks, split_batches


@pytest.mark.parametrize(
    ("n_samples", "n_shards", "bounds"),
    # Pinned boundaries: a change would move samples between shards (and their caches).
    [(5, 2, [0, 2, 5]), (10, 3, [0, 3, 6, 10]), (7, 4, [0, 1, 3, 5, 7]), (2, 3, [0, 0, 1, 2]),
     (665298, 64, [i * 665298 // 64 for i in range(65)]), (0, 2, [0, 0, 0])],
)
def test_shard_boundaries_are_pinned(n_samples: int, n_shards: int, bounds: list[int]) -> None:
    for shard in range(n_shards):
        assert shard_range(n_samples, shard, n_shards) == range(bounds[shard], bounds[shard + 1])


@settings(max_examples=300, deadline=None)
@given(n_samples=st.integers(0, 10**6), n_shards=st.integers(1, 200))
def test_shards_cover_are_disjoint_and_within_one(n_samples: int, n_shards: int) -> None:
    ranges = [shard_range(n_samples, shard, n_shards) for shard in range(n_shards)]
    assert ranges[0].start == 0 and ranges[-1].stop == n_samples
    for before, after in zip(ranges, ranges[1:]):
        assert before.stop == after.start  # contiguous and disjoint, in shard order
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n_samples
    assert all(r.step == 1 for r in ranges)
    # Stable: the same arguments give the same range.
    assert shard_range(n_samples, n_shards - 1, n_shards) == ranges[-1]


@pytest.mark.parametrize(("shard", "n_shards"), [(-1, 2), (2, 2), (0, 0), (5, 3)])
def test_a_shard_that_does_not_exist_is_an_error(shard: int, n_shards: int) -> None:
    with pytest.raises(ValueError, match=f"shard {shard} of {n_shards} does not exist"):
        shard_range(10, shard, n_shards)


@settings(max_examples=200, deadline=None)
@given(
    estimates=st.lists(st.integers(0, 20), max_size=60),
    chunk_size=st.integers(1, 12),
    batch_size=st.integers(1, 12),
)
def test_chunks_sort_by_length_ties_by_position(estimates, chunk_size, batch_size) -> None:
    expected_order = sorted(range(len(estimates)), key=lambda p: (estimates[p], p))
    chunks = plan_chunks(estimates, chunk_size)
    assert [c.tolist() for c in chunks] == [
        expected_order[i : i + chunk_size] for i in range(0, len(estimates), chunk_size)
    ]
    for chunk in chunks:
        batches = split_batches(chunk, batch_size)
        assert batches == [
            chunk.tolist()[i : i + batch_size] for i in range(0, len(chunk), batch_size)
        ]
        assert all(isinstance(p, int) for batch in batches for p in batch)


@pytest.mark.parametrize("chunk_size", [0, -3])
def test_chunk_size_below_one_is_an_error(chunk_size: int) -> None:
    with pytest.raises(ValueError, match=f"chunk_size must be at least 1, got {chunk_size}"):
        plan_chunks([1, 2], chunk_size)


def test_plan_chunks_of_nothing_is_empty() -> None:
    assert plan_chunks([], 4) == []
    assert split_batches(np.array([], dtype=np.int64), 3) == []


@pytest.mark.parametrize(
    ("texts", "n_images", "image_tokens", "expected"),
    # Four characters per token, rounded down over the whole conversation, plus the
    # vision tokens of every image.
    [(["x" * 40], 1, 576, 586), (["abc", "defgh"], 2, 10, 22), (["abc"], 0, 576, 0),
     (["x" * 7, "y" * 9], 3, 1, 7), ([], 1, 5, 5)],
)
def test_length_estimate(texts: list[str], n_images: int, image_tokens: int, expected: int) -> None:
    sample = Sample(
        0, 0, tuple(Message("user", text) for text in texts),
        tuple(f"{k}.jpg" for k in range(n_images)), "(root)",
    )
    assert length_estimate(sample, image_tokens) == expected
    assert length_estimate(None, image_tokens) == 0
