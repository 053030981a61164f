"""The extraction pipeline: shards, length-grouped batches, failures, checkpoints, cache, ranks.

Real tiny models (scalselect.demo.tinymodels), real JPEG/PNG files decoded with Pillow, real
shard files. The model math itself is tested in test_representation.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, planned_jobs
from PIL import Image

from scalselect.data.readers import load_dataset, write_index
from scalselect.data.writers import write_records
from scalselect.demo.tinymodels import build_tiny_model
from scalselect.extract import features
from scalselect.extract.maintenance import settings_dirs
from scalselect.extract.shard import (
    Job,
    extract_shard,
    length_estimate,
    plan_chunks,
    read_shard_records,
    shard_range,
    split_batches,
)
from scalselect.extract.store import (
    FeatureStore,
    image_digests,
    model_digest,
    sample_key,
    settings_key,
)
from scalselect.progress import parse_line
from scalselect.settings import ExtractSettings

PYTHON = sys.executable
QWEN_BUDGET = {"min_image_tokens": 4, "max_image_tokens": 48}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {family: build_tiny_model(family, root / family) for family in ("llava", "qwen3-vl")}


def write_dataset(root: Path, n: int, *, seed: int = 0) -> Path:
    """``n`` ShareGPT records with JPEG/PNG images of varied sizes and text lengths."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        height, width = (int(v) for v in rng.integers(40, 160, 2))
        suffix = "png" if i % 4 == 0 else "jpg"
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img" / f"{i}.{suffix}")
        rounds = []
        for r in range(1 + i % 3):
            words = " and".join(["a red cat"] * int(rng.integers(1, 12)))
            rounds += [
                {"role": "user", "content": ("<image>\n" if r == 0 else "") + f"What is there? {words}"},
                {"role": "assistant", "content": f"There is {words}."},
            ]
        records.append({"id": i if i % 3 else f"s{i}", "messages": rounds, "images": [f"img/{i}.{suffix}"]})
    path = root / "dataset.json"
    write_records(path, records)  # one record per line, as `filter` writes it
    return path


def job(models: dict[str, Path], dataset: Path, out: Path, cache: Path, family: str = "qwen3-vl", **kw) -> Job:
    settings = {"model_type": "llava" if family == "llava" else "qwen", "attention_threshold": 0.9,
                "dtype": "float32", "max_length": 4096, **QWEN_BUDGET}
    settings.update({k: kw.pop(k) for k in list(kw) if k in settings or k == "trust_remote_code"})
    settings.setdefault("trust_remote_code", False)
    return Job(dataset=str(dataset), image_root=str(dataset.parent), model=str(models[family]),
               out=str(out), settings=ExtractSettings(**settings), cache_dirs=(str(cache),),
               **{"num_workers": 0, **kw})


def shard_bytes(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in (features.FEATURES, features.ROWS, features.MANIFEST)}


def cli(*args: str) -> list[str]:
    return [PYTHON, "-m", "scalselect", "extract", *args]


def cli_args(models: dict[str, Path], dataset: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["--model", str(models["qwen3-vl"]), "--model-type", "qwen", "--dataset", str(dataset),
            "--image-root", str(dataset.parent), "--out", str(out), "--cache-dir", str(cache),
            "--min-image-tokens", "4", "--max-image-tokens", "48", "--num-workers", "0", *extra]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


# ---------------------------------------------------------------------------------------
# Pure parts


def test_shards_are_contiguous_and_cover_the_dataset() -> None:
    for n_samples in (1, 7, 100):
        for n_shards in range(1, min(n_samples, 9) + 1):
            ranges = [shard_range(n_samples, i, n_shards) for i in range(n_shards)]
            assert [i for r in ranges for i in r] == list(range(n_samples))
            assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    with pytest.raises(ValueError):
        shard_range(10, 3, 3)


def test_chunks_group_by_length_and_do_not_depend_on_batch_size() -> None:
    rng = np.random.default_rng(1)
    estimates = rng.integers(0, 50, 103).tolist()
    chunks = plan_chunks(estimates, 10)
    order = np.concatenate(chunks)
    assert sorted(order.tolist()) == list(range(103))
    assert [estimates[p] for p in order] == sorted(estimates)  # non-decreasing length
    assert [len(c) for c in chunks] == [10] * 10 + [3]
    for batch_size in (1, 4, 32):
        batches = [b for c in chunks for b in split_batches(c, batch_size)]
        assert [p for b in batches for p in b] == order.tolist()
        assert all(len(b) <= batch_size for b in batches)


def test_length_estimate_counts_text_and_images(tmp_path: Path) -> None:
    from scalselect.data.readers import load_dataset

    dataset = load_dataset(write_dataset(tmp_path, 6))
    samples = list(dataset)
    estimates = [length_estimate(s, 10) for s in samples]
    # Sample 2 has three rounds, sample 0 one; both one image.
    assert estimates[2] > estimates[0] >= 10
    assert length_estimate(None, 10) == 0


# ---------------------------------------------------------------------------------------
# Whole shards


def test_rows_follow_dataset_order_and_batch_size_changes_nothing(models, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "data", 14)
    outs = {}
    for batch_size, workers in ((1, 0), (4, 2)):
        out = tmp_path / f"out-{batch_size}"
        extract_shard(job(models, dataset, out, tmp_path / f"cache-{batch_size}", batch_size=batch_size,
                          num_workers=workers, chunk_size=5))
        outs[batch_size] = out
    rows1, m1 = features.open_shard(outs[1])
    rows4, m4 = features.open_shard(outs[4])
    pd.testing.assert_frame_equal(rows1, rows4)
    # Padded batches round differently in the last bits only (the fidelity bar is 1e-5).
    np.testing.assert_allclose(m1, m4, rtol=0, atol=1e-5)
    assert rows1["index"].tolist() == list(range(14))
    assert (rows1["status"] == "ok").all()
    # Different image sizes: different vision-token counts, so batches were padded.
    assert rows1["n_vision"].nunique() > 1
    # Each row is its own sample: compare with the model run on that sample alone.
    from scalselect.data.readers import load_dataset
    from scalselect.extract.representation import Encoder, TruncatedVLM, collate

    encoder = Encoder(models["qwen3-vl"], "qwen", **QWEN_BUDGET)
    model = TruncatedVLM(models["qwen3-vl"], "qwen", dtype="float32", device="cpu")
    data = load_dataset(dataset)
    for index in (0, 5, 13):
        sample = data.sample(index)
        with Image.open(dataset.parent / sample.images[0]) as image:
            encoded = encoder.encode(sample, [image.convert("RGB")])
        result = model.represent(collate([encoded]))[0]
        np.testing.assert_allclose(m4[index], result.vector, rtol=0, atol=1e-5)
        assert rows4.loc[index, "n_kept"] == result.n_kept
        assert rows4.loc[index, "seq_len"] == result.seq_len
    ids, matrix = features.load(outs[4])
    assert ids == [i if i % 3 else f"s{i}" for i in range(14)]


def test_every_failure_kind_is_recorded_and_counted(models, tmp_path: Path, caplog) -> None:
    dataset = write_dataset(tmp_path / "data", 8)
    records = json.loads(dataset.read_text())
    img = dataset.parent / "img"
    records[0]["messages"] = [{"role": "user", "content": "<image>\nWhat is it?"},
                              {"role": "assistant", "content": "A cat."}]
    records[1]["images"] = ["img/missing.jpg"]
    (img / "corrupt.jpg").write_bytes((img / "2.jpg").read_bytes()[:40])
    records[2]["images"] = ["img/corrupt.jpg"]
    (img / "notanimage.png").write_text("plain text")
    records[3]["images"] = ["img/notanimage.png"]
    records[4]["messages"] = [{"role": "assistant", "content": "no question"}]
    records[5] = {"id": 5, "messages": "not a list", "images": []}
    # Three rounds, of which only the first fits in max_length: flagged, not failed.
    long = "a red cat and " * 8
    records[6]["messages"] = [
        {"role": "user", "content": "<image>\nWhat is there?"},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": long}, {"role": "assistant", "content": long},
        {"role": "user", "content": long}, {"role": "assistant", "content": long},
    ]
    # Even the first round is longer than max_length.
    records[7]["messages"][0]["content"] = "<image>\n" + "a red cat and " * 60
    dataset.write_text(json.dumps(records))
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="scalselect.extract.shard"):
        counts = extract_shard(job(models, dataset, out, tmp_path / "cache", family="llava",
                                   max_length=120, batch_size=3))
    rows, matrix = features.open_shard(out)
    status = rows.set_index("index")["status"].to_dict()
    assert status == {0: "ok", 1: "image_unreadable", 2: "image_unreadable", 3: "image_unreadable",
                      4: "no_user_turn", 5: "malformed_record", 6: "ok", 7: "too_long"}
    assert "missing.jpg" in rows.loc[1, "detail"] and "messages" in rows.loc[5, "detail"]
    assert rows["truncated"].tolist() == [False] * 6 + [True, False]
    assert rows.loc[6, "seq_len"] <= 120 and rows.loc[6, "n_vision"] == 36
    failed = (rows["status"] != "ok").to_numpy()
    assert not matrix[failed].any() and np.abs(matrix[~failed]).sum(1).min() > 0
    assert all(rows.loc[failed, "detail"].str.len() > 0)
    assert counts == {"ok": 2, "image_unreadable": 3, "no_user_turn": 1, "malformed_record": 1,
                      "too_long": 1, "truncated": 1, "samples_computed": 8, "samples_reused": 0}
    assert "image_unreadable 3" in caplog.text and "truncated 1" in caplog.text
    manifest = json.loads((out / features.MANIFEST).read_text())
    assert manifest["rows"] == 8 and manifest["settings"]["max_length"] == 120


def test_non_finite_features_are_recorded(models, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken-llava"
    shutil.copytree(models["llava"], broken)
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if "multi_modal_projector" in k and k.endswith("weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    dataset = write_dataset(tmp_path / "data", 3)
    out = tmp_path / "out"
    counts = extract_shard(job({"llava": broken}, dataset, out, tmp_path / "cache", family="llava"))
    rows, matrix = features.open_shard(out)
    assert counts == {"non_finite": 3, "truncated": 0, "samples_computed": 3, "samples_reused": 0}
    assert (rows["status"] == "non_finite").all() and not matrix.any()


def manifest_of(out: Path) -> dict:
    return json.loads((out / features.MANIFEST).read_text())


def test_rerun_after_output_deleted_is_served_from_the_store(models, tmp_path: Path, monkeypatch) -> None:
    dataset = write_dataset(tmp_path / "data", 6)
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    spec = job(models, dataset, out, cache, chunk_size=2, batch_size=2)
    extract_shard(spec)
    first = shard_bytes(out)
    assert (manifest_of(out)["samples_computed"], manifest_of(out)["samples_reused"]) == (6, 0)
    shutil.rmtree(out)
    import scalselect.extract.representation as representation

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every sample was stored")

    monkeypatch.setattr(representation, "TruncatedVLM", no_model)
    began = time.perf_counter()
    # Another batch size, chunk size and worker count: not part of any key.
    extract_shard(job(models, dataset, out, cache, chunk_size=5, batch_size=5, num_workers=1))
    assert time.perf_counter() - began < 10
    again = shard_bytes(out)
    assert again[features.FEATURES] == first[features.FEATURES]
    assert again[features.ROWS] == first[features.ROWS]
    assert (manifest_of(out)["samples_computed"], manifest_of(out)["samples_reused"]) == (0, 6)


def test_a_job_given_the_index_does_not_hash_the_dataset(models, tmp_path: Path,
                                                        monkeypatch) -> None:
    """The manifest's digest of the dataset comes from the filter's index (which hashed
    the bytes it wrote), so a job reads no more of a 10M-record file than its shard."""
    import hashlib

    import scalselect.extract.shard as extraction

    dataset = write_dataset(tmp_path / "data", 4)
    index = tmp_path / "data/dataset.json.index.npz"
    write_index(dataset, index)
    monkeypatch.setattr(extraction, "file_digest",
                        lambda path: pytest.fail(f"{path} was hashed by the job"))
    out = tmp_path / "out"
    extract_shard(job(models, dataset, out, tmp_path / "cache", family="llava", index=str(index)))
    assert manifest_of(out)["dataset_sha256"] == hashlib.sha256(dataset.read_bytes()).hexdigest()


def test_sample_key_depends_on_content_not_place(models, tmp_path: Path) -> None:
    from scalselect.data.readers import load_dataset

    dataset = write_dataset(tmp_path / "data", 3)
    data = load_dataset(dataset)
    images = [dataset.parent / s.images[0] for s in data]

    def key(index=0, data=data):
        sample = data.sample(index)
        return sample_key(sample, None, image_digests([dataset.parent / p for p in sample.images]))

    base = key()
    assert len({key(i) for i in range(3)}) == 3
    # The same content under another id, at another position: the same key.
    records = json.loads(json.dumps(data.records))
    moved = [{**records[1], "id": "other"}, {**records[0], "id": 99}]
    write_records(tmp_path / "moved.json", moved)
    assert key(1, load_dataset(tmp_path / "moved.json")) == base
    # Text changes the key; so does the image's bytes, not its name or time.
    records[0]["messages"][1]["content"] += "!"
    write_records(tmp_path / "edited.json", records)
    assert key(0, load_dataset(tmp_path / "edited.json")) != base
    os.utime(images[0], (1, 1))
    assert key() == base
    with Image.open(images[0]) as image:
        image.rotate(90).save(images[0])
    assert key() != base
    # A missing image names the file, so two different missing files do not collide.
    missing = image_digests([tmp_path / "a.jpg", tmp_path / "b.jpg"])
    assert missing[0] != missing[1] and missing[0].startswith("unreadable:")


def test_settings_key_covers_model_and_every_setting(models, tmp_path: Path) -> None:
    settings = ExtractSettings("qwen", 0.9, "float32", 4096, 4, 48, False)
    model = model_digest(models["qwen3-vl"], tmp_path / "memo")
    base, description = settings_key(model, settings)
    assert settings_key(model, settings)[0] == base
    assert description["settings"]["attention_threshold"] == 0.9 and "torch" in description
    for field, value in (("attention_threshold", 0.8), ("dtype", "bfloat16"), ("max_length", 2048),
                         ("min_image_tokens", 8), ("max_image_tokens", 64), ("model_type", "llava"),
                         ("trust_remote_code", True)):
        changed = ExtractSettings(**{**description["settings"], field: value})
        assert settings_key(model, changed)[0] != base, field
    # Model files: digests are memoised by path, size and time; a changed config counts.
    copy = shutil.copytree(models["qwen3-vl"], tmp_path / "model-copy")
    assert model_digest(copy, tmp_path / "memo") == model
    config = json.loads((copy / "config.json").read_text())
    config["text_config"]["rms_norm_eps"] = 1e-5
    (copy / "config.json").write_text(json.dumps(config))
    assert settings_key(model_digest(copy, tmp_path / "memo"), settings)[0] != base


def test_shard_reads_only_its_lines(tmp_path: Path) -> None:
    records = [{"id": i, "messages": [{"role": "user", "content": f"q{i}"}], "images": []}
               for i in range(10)]
    array = tmp_path / "array.json"
    write_records(array, records)
    lines = tmp_path / "lines.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" + ("\n" if i == 4 else "") for i, r in enumerate(records)))
    for path in (array, lines):
        for n in (1, 3, 4):
            got = [read_shard_records(path, i, n) for i in range(n)]
            assert [r for _, part in got for r in part] == records
            assert [list(ix) for ix, _ in got] == [list(shard_range(10, i, n)) for i in range(n)]
    # A corrupt record outside the shard is never parsed (so never paid for) ...
    text = array.read_text().splitlines()
    text[9] = '{"id": 8, "broken": }' + ","
    array.write_text("\n".join(text) + "\n")
    assert read_shard_records(array, 0, 2)[1] == records[:5]
    # ... and one inside names its index.
    from scalselect.data.records import DatasetError

    with pytest.raises(DatasetError, match="record 8 is not valid JSON"):
        read_shard_records(array, 1, 2)
    # Other layouts (a record over several lines, all on one line) are read whole.
    for layout in (json.dumps(records, indent=2), json.dumps(records)):
        array.write_text(layout)
        assert read_shard_records(array, 1, 3) == (range(3, 6), records[3:6])


def reused(out: Path) -> tuple[int, int]:
    manifest = manifest_of(out)
    return manifest["samples_computed"], manifest["samples_reused"]


def extract_all(models, dataset: Path, out: Path, cache: Path, shards: int, **kw) -> tuple[int, np.ndarray]:
    """Extract every shard; the total computed and the assembled matrix in dataset order."""
    computed = 0
    for i in range(shards):
        extract_shard(job(models, dataset, out / f"shard-{i}-of-{shards}", cache, shard=i,
                          num_shards=shards, chunk_size=3, batch_size=2, **kw))
        computed += reused(out / f"shard-{i}-of-{shards}")[0]
    return computed, features.load(out)[1]


@pytest.mark.parametrize("family", ["qwen3-vl", "llava"])
def test_reuse_follows_sample_content(models, tmp_path: Path, family: str) -> None:
    """Re-shard, a record removed, records appended, another file format, a changed
    image: only samples whose content is new run the model."""
    dataset = write_dataset(tmp_path / "data", 16)
    records = json.loads(json.dumps(load_dataset(dataset).records))
    # Two samples share image 5; sample 7 duplicates sample 6 (computed once).
    records[9]["images"] = records[5]["images"]
    records[7] = {**records[6], "id": "dup"}
    write_records(dataset, records)
    cache = tmp_path / "cache"
    computed, base = extract_all(models, dataset, tmp_path / "four", cache, 4, family=family)
    assert computed == 15
    # (1) Another shard count: nothing computed, the same bits.
    computed, matrix = extract_all(models, dataset, tmp_path / "three", cache, 3, family=family)
    assert computed == 0 and matrix.tobytes() == base.tobytes()
    # (2) The first record removed: every boundary moves, nothing computed.
    write_records(tmp_path / "data/dropped.json", records[1:])
    computed, matrix = extract_all(models, tmp_path / "data/dropped.json", tmp_path / "dropped", cache, 4,
                                   family=family)
    assert computed == 0 and matrix.tobytes() == base[1:].tobytes()
    # (3) Five records with new text appended: exactly five computed.
    extra = [{**records[i], "id": f"new{i}",
              "messages": [{"role": "user", "content": f"<image>\nNew question {i}?"},
                           {"role": "assistant", "content": f"New answer {i}."}]} for i in range(5)]
    write_records(tmp_path / "data/appended.json", records + extra)
    computed, matrix = extract_all(models, tmp_path / "data/appended.json", tmp_path / "appended", cache,
                                   4, family=family)
    assert computed == 5 and matrix[:16].tobytes() == base.tobytes()
    # (4) The same samples in LLaVA-665K's format: nothing computed.
    llava = [{"id": r["id"], "image": r["images"][0],
              "conversations": [{"from": {"user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]}
                                for m in r["messages"]]} for r in records]
    write_records(tmp_path / "data/llava.json", llava)
    computed, matrix = extract_all(models, tmp_path / "data/llava.json", tmp_path / "llava", cache, 2,
                                   family=family)
    assert computed == 0 and matrix.tobytes() == base.tobytes()
    # (5) One image's bytes changed: exactly the two samples using it computed.
    image = dataset.parent / records[5]["images"][0]
    with Image.open(image) as opened:
        opened.rotate(180).save(image)
    computed, matrix = extract_all(models, dataset, tmp_path / "changed", cache, 4, family=family)
    assert computed == 2
    same = [i for i in range(16) if i not in (5, 9)]
    assert matrix[same].tobytes() == base[same].tobytes()
    assert not np.array_equal(matrix[5], base[5])


def test_failures_are_stored_and_not_retried(models, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "data", 4)
    records = json.loads(json.dumps(load_dataset(dataset).records))
    corrupt = dataset.parent / "img/corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    records[1]["images"] = ["img/corrupt.jpg"]
    write_records(dataset, records)
    cache = tmp_path / "cache"
    extract_shard(job(models, dataset, tmp_path / "a", cache))
    assert reused(tmp_path / "a") == (4, 0)
    extract_shard(job(models, dataset, tmp_path / "b", cache))
    assert reused(tmp_path / "b") == (0, 4)
    rows, _ = features.open_shard(tmp_path / "b")
    assert rows.loc[1, "status"] == "image_unreadable" and "corrupt.jpg" in rows.loc[1, "detail"]
    # The image repaired: its bytes changed, so that sample alone is computed again.
    shutil.copy(dataset.parent / records[2]["images"][0], corrupt)
    extract_shard(job(models, dataset, tmp_path / "c", cache))
    assert reused(tmp_path / "c") == (1, 3)
    assert features.open_shard(tmp_path / "c")[0].loc[1, "status"] == "ok"


def test_cache_info_and_prune(models, tmp_path: Path, capsys) -> None:
    from scalselect.cli import main

    dataset = write_dataset(tmp_path / "data", 6)
    cache, results = tmp_path / "cache", tmp_path / "results"
    out = results / "run-a/extract/shard-0-of-1"
    extract_shard(job(models, dataset, out, cache, chunk_size=2))
    # Another threshold: a second settings folder, referenced by no shard once deleted.
    extract_shard(job(models, dataset, tmp_path / "gone", cache, attention_threshold=0.5, chunk_size=4))
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    info = capsys.readouterr().out
    assert info.count("6 samples, 6 entries in") == 2 and "3 packs" in info and "2 packs" in info
    assert "attention_threshold=0.5" in info
    # Two packs of the first folder that no shard uses (a leftover of an old layout).
    store = FeatureStore(cache, manifest_of(out)["store"]["settings_key"])
    kept = store.pack_names()
    stale = store.write_pack(*store.read_pack(kept[0]))
    before = sorted(p for p in cache.rglob("*") if p.is_file())
    assert main(["cache", "prune", "--cache-dir", str(cache), "--results", str(results), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert sorted(p for p in cache.rglob("*") if p.is_file()) == before
    assert stale in listed and len(settings_dirs(cache)) == 2
    assert main(["cache", "prune", "--cache-dir", str(cache), "--results", str(results)]) == 0
    assert store.pack_names() == kept and len(settings_dirs(cache)) == 1
    # What the shard needs is still there: a rerun computes nothing.
    shutil.rmtree(out)
    extract_shard(job(models, dataset, out, cache, chunk_size=2))
    assert reused(out) == (0, 6)
    assert main(["cache", "prune", "--cache-dir", str(cache), "--results", str(tmp_path / "none")]) == 2


# ---------------------------------------------------------------------------------------
# Processes: SIGKILL and resume, two ranks


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stored_packs(cache: Path) -> list[Path]:
    return sorted(cache.glob("features/*/packs/*.parquet"))


@pytest.mark.slow
def test_killed_job_resumes_with_identical_output(models, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "data", 30)
    reference = tmp_path / "reference"
    extract_shard(job(models, dataset, reference, tmp_path / "cache-ref", chunk_size=3, batch_size=1))
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = cli_args(models, dataset, out, cache, "--chunk-size", "3", "--batch-size", "1")
    # The child SIGKILLs itself right after storing its 4th chunk: no polling race.
    killed = subprocess.run(cli(*args), env={**subprocess_env(), "SCALSELECT_TEST_KILL_AFTER_PACKS": "4"},
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    finished = stored_packs(cache)
    assert len(finished) == 4
    done = {p: p.stat().st_mtime_ns for q in finished for p in (q, q.with_suffix(".npy"))}
    assert not (out / features.MANIFEST).exists()
    with pytest.raises(FileNotFoundError):
        features.load(out)
    result = subprocess.run(cli(*args), env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # At most the chunk in progress was lost: exactly the 18 samples not stored ran.
    assert "12 stored, 18 to compute in 6 chunks" in result.stderr
    assert "18 samples computed, 12 reused from the store" in result.stderr
    assert reused(out) == (18, 12)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items()), "stored chunks were redone"
    # Batch size 1: no padding, so the resumed shard equals the uninterrupted one bit for bit.
    assert shard_bytes(out)[features.FEATURES] == shard_bytes(reference)[features.FEATURES]
    assert shard_bytes(out)[features.ROWS] == shard_bytes(reference)[features.ROWS]


@pytest.mark.slow
def test_two_ranks_give_the_output_of_one(models, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "data", 12)
    one = tmp_path / "one"
    extract_shard(job(models, dataset, one, tmp_path / "c1", chunk_size=2, batch_size=2,
                      shard=1, num_shards=2))
    two = tmp_path / "two"
    launch = [PYTHON, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), "-m", "scalselect", "extract"]
    args = cli_args(models, dataset, two, tmp_path / "c2", "--chunk-size", "2", "--batch-size", "2",
                    "--shard", "1", "--num-shards", "2")
    result = subprocess.run(launch + args, env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0: 2 chunks" in result.stderr and "rank 1: 1 chunks" in result.stderr
    assert shard_bytes(two)[features.FEATURES] == shard_bytes(one)[features.FEATURES]
    assert shard_bytes(two)[features.ROWS] == shard_bytes(one)[features.ROWS]
    assert reused(two) == (6, 0) and len(stored_packs(tmp_path / "c2")) == 3
    rows, _ = features.open_shard(two)
    assert rows["index"].tolist() == list(range(6, 12))


@pytest.mark.slow
def test_concurrent_jobs_on_overlapping_samples(models, tmp_path: Path) -> None:
    """Two processes computing the same samples into one store at once both finish with
    correct shards, and the store stays consistent."""
    dataset = write_dataset(tmp_path / "data", 16)
    # The second job's file holds samples 4..15 of the first (and its shards differ).
    records = json.loads(json.dumps(load_dataset(dataset).records))
    write_records(tmp_path / "data/tail.json", records[4:])
    cache = tmp_path / "cache"
    reference = tmp_path / "reference"
    extract_shard(job(models, dataset, reference, tmp_path / "cache-ref", chunk_size=2, batch_size=1))
    outs = [tmp_path / "a", tmp_path / "b"]
    processes = [
        subprocess.Popen(cli(*cli_args(models, path, out, cache, "--chunk-size", "2", "--batch-size", "1")),
                         env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for path, out in ((dataset, outs[0]), (tmp_path / "data/tail.json", outs[1]))
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    expected = features.load(reference)[1]
    assert features.load(outs[0])[1].tobytes() == expected.tobytes()
    assert features.load(outs[1])[1].tobytes() == expected[4:].tobytes()
    # Every pack is complete and readable; a third job finds every sample.
    store = FeatureStore(cache, manifest_of(outs[0])["store"]["settings_key"])
    for name in store.pack_names():
        table, matrix = store.read_pack(name)
        assert len(table) == len(matrix) > 0
    assert not list(cache.rglob(".*.tmp"))
    extract_shard(job(models, dataset, tmp_path / "c", cache, chunk_size=2))
    assert reused(tmp_path / "c") == (0, 16)


# ---------------------------------------------------------------------------------------
# export-npz and the command line


def test_export_npz_writes_the_original_arrays(models, tmp_path: Path) -> None:
    from scalselect.cli import main

    dataset = write_dataset(tmp_path / "data", 6)
    records = json.loads(dataset.read_text())
    records[2]["images"] = ["img/missing.png"]
    dataset.write_text(json.dumps(records))
    for shard in range(2):
        assert main(["extract", *cli_args(models, dataset, tmp_path / "x" / f"shard-{shard}-of-2",
                                          tmp_path / "cache", "--shard", str(shard),
                                          "--num-shards", "2")]) == 0
    out = tmp_path / "all_representations.npz"
    assert main(["export-npz", "--features", str(tmp_path / "x"), "--out", str(out)]) == 0
    with np.load(out) as npz:
        ids, matrix = features.load(tmp_path / "x")
        np.testing.assert_array_equal(npz["representations"], matrix)
        assert npz["representations"].dtype == np.float32 and matrix.shape[0] == 5
        # Mixed int and str ids: written as strings.
        assert npz["sample_ids"].tolist() == ["s0", "1", "s3", "4", "5"] == [str(i) for i in ids]
    assert main(["export-npz", "--features", str(tmp_path / "nothing"), "--out", str(out)]) == 2


def test_cli_rejects_bad_options(models, tmp_path: Path) -> None:
    from scalselect.cli import main

    dataset = write_dataset(tmp_path / "data", 2)
    base = cli_args(models, dataset, tmp_path / "out", tmp_path / "cache")
    assert main(["extract", *base, "--shard", "2", "--num-shards", "2"]) == 2
    assert main(["extract", *base, "--min-image-tokens", "50", "--max-image-tokens", "10"]) == 2
    assert main(["extract", *base, "--num-shards", "3"]) == 2  # shard 0 of 3 of 2 samples is empty
    assert not (tmp_path / "out").exists()


def test_an_empty_shard_names_the_dataset_size(models, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Shard 4 of 8 of a 6-sample dataset is empty (it would start and stop at record
    4 * 6 // 8 = 5 * 6 // 8 = 3): the message gives the dataset's 6 samples, not the 3
    where the shard stops."""
    from scalselect.cli import main

    dataset = write_dataset(tmp_path / "data", 6)
    base = cli_args(models, dataset, tmp_path / "out", tmp_path / "cache")
    assert main(["extract", *base, "--shard", "4", "--num-shards", "8"]) == 2
    assert "shard 4 of 8 is empty: " in caplog.text
    assert "holds only 6 samples; use at most 6 shards" in caplog.text


# ---------------------------------------------------------------------------------------
# The rule


@pytest.mark.slow
def test_speed_settings_do_not_rerun_finished_shards(demo_workflow: Path, tmp_path: Path) -> None:
    shards = [str(p.relative_to(demo_workflow)) for p in demo_workflow.glob("results/*/extract/shard-*")]
    assert len(shards) >= 8
    speed = tmp_path / "speed.yaml"
    speed.write_text("extract: {batch_size: 3, num_workers: 0, chunk_size: 7, gpus: 1, cache_dirs: [x]}\n")
    # `--configfile=X`: the option takes several files, the targets must not follow it bare.
    assert "extract" not in planned_jobs(demo_workflow, f"--configfile={speed}", *shards)
    tau = tmp_path / "tau.yaml"
    tau.write_text("extract: {attention_threshold: 0.8}\n")
    assert planned_jobs(demo_workflow, f"--configfile={tau}", *shards)["extract"] == len(shards)


def demo_shards(workdir: Path, run: str, n: int) -> list[Path]:
    return [workdir / f"results/{run}/extract/shard-{i}-of-{n}" for i in range(n)]


def assembled(shards: list[Path]) -> np.ndarray:
    return np.concatenate([np.load(s / features.FEATURES) for s in shards])


@pytest.mark.slow
def test_demo_reshard_and_format_change_compute_nothing(demo_workflow: Path, tmp_path: Path) -> None:
    from conftest import snakemake

    workdir = tmp_path / "workflow"
    shutil.copytree(demo_workflow, workdir, symlinks=True)
    runs = ("demo-llava", "demo-qwen")  # one of each model family
    # (1) 4 -> 5 shards: every extract job reruns, none runs the model, same bits.
    config = tmp_path / "five.yaml"
    config.write_text("extract: {shards: 5}\n")
    targets = [str(s.relative_to(workdir)) for run in runs for s in demo_shards(workdir, run, 5)]
    snakemake(workdir, "--cores", "2", *targets, f"--configfile={config}")
    for run in runs:
        assert [reused(s)[0] for s in demo_shards(workdir, run, 5)] == [0] * 5, run
        assert (assembled(demo_shards(workdir, run, 5)).tobytes()
                == assembled(demo_shards(workdir, run, 4)).tobytes()), run
    log = (workdir / "results/demo-qwen/logs/extract/shard-0-of-5.log").read_text()
    assert "0 samples computed" in log
    # (4) The LLaVA-format run after the ShareGPT run, into an empty store: nothing computed.
    config = tmp_path / "fresh.yaml"
    config.write_text(f"extract: {{cache_dirs: [{tmp_path / 'fresh-store'}]}}\n")
    for run in ("demo-llava", "demo-llava-format"):
        for shard in demo_shards(workdir, run, 4):
            shutil.rmtree(shard)
    first = [str(s.relative_to(workdir)) for s in demo_shards(workdir, "demo-llava", 4)]
    snakemake(workdir, "--cores", "2", *first, f"--configfile={config}")
    computed = sum(reused(s)[0] for s in demo_shards(workdir, "demo-llava", 4))
    rows = sum(manifest_of(s)["rows"] for s in demo_shards(workdir, "demo-llava", 4))
    assert 0 < computed <= rows
    second = [str(s.relative_to(workdir)) for s in demo_shards(workdir, "demo-llava-format", 4)]
    snakemake(workdir, "--cores", "2", *second, f"--configfile={config}")
    assert [reused(s) for s in demo_shards(workdir, "demo-llava-format", 4)] == [
        (0, manifest_of(s)["rows"]) for s in demo_shards(workdir, "demo-llava-format", 4)]
    assert (assembled(demo_shards(workdir, "demo-llava-format", 4)).tobytes()
            == assembled(demo_shards(workdir, "demo-llava", 4)).tobytes())


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_failed_launch_logs_its_own_error_without_the_launcher_traceback(
    models, processes: int, tmp_path: Path
) -> None:
    """What the extract rule runs: a process's own error reaches the log, the launcher's
    traceback (which repeats the whole command line) does not."""
    dataset = write_dataset(tmp_path / "data", 4)
    args = cli_args(models, dataset, tmp_path / "out", tmp_path / "cache")
    args[args.index("--model") + 1] = str(tmp_path / "no-such-model")
    result = subprocess.run([PYTHON, "-m", "scalselect.launch", "--processes", str(processes),
                             "extract", *args], env=subprocess_env(), capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count("no-such-model' is not a local directory") == processes, output
    assert "Traceback" not in output and "CalledProcessError" not in output, output
    if processes > 1:
        # The first process to fail stops the other (SIGTERM, exit status -15) when it is
        # still running; the line lists the processes in rank order, so either may be first.
        assert re.search(r"extract failed in (process [01] \(exit status -?\d+\), )?"
                         r"process [01] \(exit status 2\)(, process [01] \(exit status -?\d+\))? of 2;",
                         output), output
    assert not (tmp_path / "out").exists()


def test_embedded_images_are_keyed_and_decoded_as_their_files(models, tmp_path: Path) -> None:
    """A parquet dataset embedding the image bytes (as Hugging Face datasets store them)
    gives the store keys and the vectors of the same samples with image files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dataset = write_dataset(tmp_path, 6)
    records = json.loads(dataset.read_text())
    # Parquet columns hold one type: the ids become strings.
    rows = [dict(r, id=str(r["id"]), images=[{"bytes": (tmp_path / p).read_bytes(), "path": None}
                            for p in r["images"]]) for r in records]
    embedded = tmp_path / "dataset.parquet"
    pq.write_table(pa.Table.from_pylist(rows), embedded)
    from_files = extract_shard(job(models, dataset, tmp_path / "files", tmp_path / "cache"))
    assert from_files["samples_computed"] == 6
    # Decoded from the records (a cold store), the vectors are those of the files.
    cold = extract_shard(job(models, embedded, tmp_path / "cold", tmp_path / "cache-2"))
    assert cold["samples_computed"] == 6 and cold["ok"] == 6
    assert shard_bytes(tmp_path / "cold")[features.FEATURES] == shard_bytes(tmp_path / "files")[features.FEATURES]
    # Same keys: the store of the file run has every sample.
    warm = extract_shard(job(models, embedded, tmp_path / "warm", tmp_path / "cache"))
    assert (warm["samples_computed"], warm["samples_reused"]) == (0, 6)
    assert shard_bytes(tmp_path / "warm")[features.FEATURES] == shard_bytes(tmp_path / "files")[features.FEATURES]


def test_a_progress_line_at_each_stored_chunk(models, tmp_path: Path, caplog) -> None:
    dataset = write_dataset(tmp_path / "data", 8)
    cache = tmp_path / "cache"
    # The first 2 samples stored beforehand: 2 of 8 reused (25%), 6 to compute in 3 chunks.
    first = tmp_path / "first" / "dataset.json"
    shutil.copytree(dataset.parent / "img", first.parent / "img")
    write_records(first, json.loads(dataset.read_text())[:2])
    extract_shard(job(models, first, tmp_path / "out0", cache))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scalselect.progress"):
        extract_shard(job(models, dataset, tmp_path / "out", cache, chunk_size=2, batch_size=1))
    readings = [parse_line(r.getMessage()) for r in caplog.records if r.name == "scalselect.progress"]
    # A line at each chunk (the interval is 30 s); every sample has one image.
    assert [(r.done, r.total, r.left) for r in readings] == [(2, 6, 4), (4, 6, 2), (6, 6, 0)]
    assert all(r.fields["reused"] == "25%" for r in readings)
    assert all("images" in r.fields for r in readings)
    assert manifest_of(tmp_path / "out")["samples_reused"] == 2
