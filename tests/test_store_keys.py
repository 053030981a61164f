"""The feature store's keys (issue 10): what a sample's and a setting's key depend on,
and what they must not. Pure functions, no model: part of the mutation-tested set."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from scalselect import io
from scalselect.data.records import Message, Sample
from scalselect.extract import store
from scalselect.extract.shard import ShardInput
from scalselect.settings import ExtractSettings

SETTINGS = ExtractSettings(
    model_type="llava", attention_threshold=0.9, dtype="float32", max_length=4096,
    min_image_tokens=256, max_image_tokens=576, trust_remote_code=False, layer=1,
)


def make(*turns: tuple[str, str], images: tuple[str, ...] = ("a.jpg",), index: int = 0,
         sample_id: object = 0, source: str = "src") -> Sample:
    return Sample(index, sample_id, tuple(Message(r, c) for r, c in turns), images, source)


CHAT = (("user", "<image>\nWhat is in the café?"), ("assistant", "A cat."))


def test_sample_key_ignores_where_and_under_which_name_a_sample_is() -> None:
    key = store.sample_key(make(*CHAT), None, ["d1"])
    moved = make(*CHAT, images=("other/dir/b.png",), index=9, sample_id="x-9", source="vg")
    assert store.sample_key(moved, {"id": "x-9"}, ["d1"]) == key


@pytest.mark.parametrize("change", [
    lambda: (make(("user", "<image>\nWhat is in the cafe?"), CHAT[1]), ["d1"]),
    lambda: (make(("system", CHAT[0][1]), CHAT[1]), ["d1"]),
    lambda: (make(("user", "<image>\nWhat is in the café"), ("assistant", "?A cat.")), ["d1"]),
    lambda: (make(*CHAT, ("user", "More?")), ["d1"]),
    lambda: (make(*CHAT), ["d2"]),
    lambda: (make(*CHAT, images=("a.jpg", "b.jpg")), ["d1", "d2"]),
], ids=["content", "role", "turn-boundary", "extra-turn", "image-bytes", "extra-image"])
def test_sample_key_changes_with_what_the_model_sees(change) -> None:
    sample, digests = change()
    assert store.sample_key(sample, None, digests) != store.sample_key(make(*CHAT), None, ["d1"])


def test_sample_key_keeps_image_order() -> None:
    two = make(*CHAT, images=("a.jpg", "b.jpg"))
    assert store.sample_key(two, None, ["d1", "d2"]) != store.sample_key(two, None, ["d2", "d1"])


def test_unreadable_records_are_keyed_by_their_content() -> None:
    record = {"id": 3, "messages": "not a list"}
    assert store.sample_key(None, record, []) == store.sample_key(None, dict(record), [])
    assert store.sample_key(None, record, []) != store.sample_key(None, {**record, "id": 4}, [])
    assert store.sample_key(None, {"messages": []}, []) != store.sample_key(make(*CHAT), None, ["d1"])


def test_sample_key_is_stable_across_releases() -> None:
    # Recorded from this implementation. Every user's store is keyed by it: a change
    # orphans all stored features, so it must come with a new store.STORE_FORMAT.
    assert store.sample_key(make(*CHAT), None, ["d1"]) == (
        "1af84a69af74add911f95e49ee504ba40ba48b7d3b4e7ca1036a807e1ae1c4ad")
    assert store.sample_key(None, {"id": "é"}, []) == (
        "9a6c974293eefcd8d01a0e63fac56860e506e7d0b8604478790450f27ae1f821")


def test_settings_key_covers_every_setting_the_model_and_the_versions(monkeypatch) -> None:
    versions = {"torch": "2.14.1", "transformers": "5.2.0"}
    monkeypatch.setattr(store, "version", versions.__getitem__)
    key, description = store.settings_key("m1", SETTINGS)
    assert description == {
        "store_format": store.STORE_FORMAT, "model": "m1", "settings": dataclasses.asdict(SETTINGS),
        "torch": "2.14.1", "transformers": "5.2.0",
    }
    assert store.settings_key("m1", SETTINGS)[0] == key
    changed = {
        "model_type": "qwen", "attention_threshold": 0.8, "dtype": "bfloat16", "max_length": 2048,
        "min_image_tokens": 64, "max_image_tokens": 1024, "trust_remote_code": True, "layer": 2,
    }
    assert set(changed) == {f.name for f in dataclasses.fields(SETTINGS)}
    keys = {store.settings_key("m1", dataclasses.replace(SETTINGS, **{k: v}))[0] for k, v in changed.items()}
    keys |= {store.settings_key("m2", SETTINGS)[0]}
    for package in versions:
        monkeypatch.setitem(versions, package, versions[package] + ".post1")
        keys.add(store.settings_key("m1", SETTINGS)[0])
    assert len(keys) == len(changed) + 3 and key not in keys
    # Recorded from this implementation (see test_sample_key_is_stable_across_releases).
    assert key == "16d25e858e074a1ccfa7b3b0ac3046572f90268b67ed66530b5856cb1600cfc9"


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    data = os.urandom(io._HASH_BLOCK * 2 + 17)  # more than one read block
    (tmp_path / "f.bin").write_bytes(data)
    assert io.file_digest(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


def test_image_digests_in_order_with_a_marker_for_unreadable_files(tmp_path: Path) -> None:
    paths = []
    for number in range(5):
        paths.append(tmp_path / f"{number}.jpg")
        paths[-1].write_bytes(bytes([number]) * 10)
    paths.insert(2, tmp_path / "gone.jpg")
    expected = [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else
                f"unreadable:{p}:FileNotFoundError:2" for p in paths]
    for threads in (0, 1, 3):
        assert store.image_digests(paths, threads=threads) == expected


def test_model_digest_depends_on_names_and_bytes_not_on_dot_files(tmp_path: Path) -> None:
    model, memo = tmp_path / "model", tmp_path / "memo"
    (model / "sub").mkdir(parents=True)
    memo.mkdir()
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(b"\x00" * 100)
    first = store.model_digest(model, memo)
    assert len(list(memo.iterdir())) == 2  # one memo per file
    (model / ".cache").mkdir()
    (model / ".cache" / "lock").write_text("x")
    (model / ".hidden").write_text("x")
    assert store.model_digest(model, memo) == first
    (model / "sub" / "weights.bin").write_bytes(b"\x01" * 100)  # same size, new bytes
    os.utime(model / "sub" / "weights.bin", ns=(1, 1))
    changed = store.model_digest(model, memo)
    (model / "sub" / "weights.bin").rename(model / "sub" / "other.bin")
    renamed = store.model_digest(model, memo)
    assert len({first, changed, renamed}) == 3
    # The memo is what is read for an unchanged file: weights are hashed once.
    for entry in memo.iterdir():
        entry.write_text("memoised\n")
    assert store.model_digest(model, memo) != renamed


def test_shard_keys_use_each_samples_images_and_the_record_when_unreadable(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(name.encode())
    chat = [{"role": "user", "content": "<image>\nQ"}, {"role": "assistant", "content": "A"}]
    records = [
        {"id": 0, "messages": chat, "images": ["a.jpg"]},
        {"id": 1, "messages": "broken"},
        {"id": 2, "messages": chat, "images": ["b.jpg", "a.jpg"]},
        {"id": 3, "messages": chat},
    ]
    shard = ShardInput.read(records, 0, "sharegpt")
    digest = {n: hashlib.sha256(n.encode()).hexdigest() for n in ("a.jpg", "b.jpg")}
    assert shard.samples[1] is None
    assert store.shard_keys(shard, records, str(tmp_path)) == [
        store.sample_key(shard.samples[0], None, [digest["a.jpg"]]),
        store.sample_key(None, records[1], []),
        store.sample_key(shard.samples[2], None, [digest["b.jpg"], digest["a.jpg"]]),
        store.sample_key(shard.samples[3], None, []),
    ]
    with pytest.raises(ValueError):  # records and samples out of step
        store.shard_keys(shard, records[:-1], str(tmp_path))
