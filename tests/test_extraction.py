"""The extraction pipeline: shards, length-grouped batches, failures, checkpoints, cache, ranks.

Real tiny models (scalselect.tinymodels), real JPEG/PNG files decoded with Pillow, real
shard files. The model math itself is tested in test_representation.py.
"""

from __future__ import annotations

import json
import logging
import os
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

from scalselect import features
from scalselect.extraction import (
    CacheEntry,
    Job,
    Settings,
    content_key,
    extract_shard,
    image_digests,
    length_estimate,
    model_digest,
    plan_chunks,
    shard_range,
    split_batches,
)
from scalselect.tinymodels import build_tiny_model

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
    path.write_text(json.dumps(records))
    return path


def job(models: dict[str, Path], dataset: Path, out: Path, cache: Path, family: str = "qwen3-vl", **kw) -> Job:
    settings = {"model_type": "llava" if family == "llava" else "qwen", "attention_threshold": 0.9,
                "dtype": "float32", "max_length": 4096, **QWEN_BUDGET}
    settings.update({k: kw.pop(k) for k in list(kw) if k in settings or k == "trust_remote_code"})
    settings.setdefault("trust_remote_code", False)
    return Job(dataset=str(dataset), image_root=str(dataset.parent), model=str(models[family]),
               out=str(out), settings_requested=settings, cache_dir=str(cache),
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
    from scalselect.dataset import load_dataset

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
    from scalselect.dataset import load_dataset
    from scalselect.representation import Encoder, FirstLayerModel, collate

    encoder = Encoder(models["qwen3-vl"], "qwen", **QWEN_BUDGET)
    model = FirstLayerModel(models["qwen3-vl"], "qwen", dtype="float32", device="cpu")
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
    with caplog.at_level(logging.INFO, logger="scalselect.extraction"):
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
                      "too_long": 1, "truncated": 1}
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
    assert counts == {"non_finite": 3, "truncated": 0}
    assert (rows["status"] == "non_finite").all() and not matrix.any()


def test_rerun_after_output_deleted_is_served_from_the_cache(models, tmp_path: Path, monkeypatch) -> None:
    dataset = write_dataset(tmp_path / "data", 6)
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    spec = job(models, dataset, out, cache, chunk_size=2, batch_size=2)
    extract_shard(spec)
    first = shard_bytes(out)
    shutil.rmtree(out)
    import scalselect.representation as representation

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every chunk was cached")

    monkeypatch.setattr(representation, "FirstLayerModel", no_model)
    began = time.perf_counter()
    # Another batch size and worker count: not part of the key.
    extract_shard(job(models, dataset, out, cache, chunk_size=2, batch_size=5, num_workers=1))
    assert time.perf_counter() - began < 10
    assert shard_bytes(out) == first


def test_content_key_changes_with_content_only(models, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "data", 3)
    records = json.loads(dataset.read_text())
    images = sorted((dataset.parent / "img").iterdir())
    settings = Settings("qwen", 0.9, "float32", 4096, 4, 48, False)
    model = model_digest(models["qwen3-vl"], tmp_path / "memo")

    def key(records=records, images=images, settings=settings, model=model, start=0, chunk_size=4):
        return content_key(records, "sharegpt", start, image_digests(images), model, settings, chunk_size)

    base = key()
    assert key() == base
    edited = json.loads(json.dumps(records))
    edited[1]["messages"][1]["content"] += "!"
    assert key(records=edited) != base
    assert key(start=3) != base
    assert key(settings=Settings("qwen", 0.8, "float32", 4096, 4, 48, False)) != base
    assert key(settings=Settings("qwen", 0.9, "bfloat16", 4096, 4, 48, False)) != base
    assert key(settings=Settings("qwen", 0.9, "float32", 4096, 4, 64, False)) != base
    # Image bytes, not names or times: a touched file keeps its key, a changed one does not.
    os.utime(images[0], (1, 1))
    assert key() == base
    with Image.open(images[0]) as image:
        image.rotate(90).save(images[0])
    assert key() != base
    # Model files: digests are memoised by path, size and time; a changed config counts.
    copy = shutil.copytree(models["qwen3-vl"], tmp_path / "model-copy")
    assert model_digest(copy, tmp_path / "memo") == model
    config = json.loads((copy / "config.json").read_text())
    config["text_config"]["rms_norm_eps"] = 1e-5
    (copy / "config.json").write_text(json.dumps(config))
    assert model_digest(copy, tmp_path / "memo") != model


# ---------------------------------------------------------------------------------------
# Processes: SIGKILL and resume, two ranks


@pytest.mark.slow
def test_killed_job_resumes_with_identical_output(models, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "data", 30)
    reference = tmp_path / "reference"
    extract_shard(job(models, dataset, reference, tmp_path / "cache-ref", chunk_size=3, batch_size=1))
    cache, out = tmp_path / "cache", tmp_path / "out"
    args = cli_args(models, dataset, out, cache, "--chunk-size", "3", "--batch-size", "1")
    process = subprocess.Popen(cli(*args), env=subprocess_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(list(cache.glob("*/chunk-*.parquet"))) < 3:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    finished = sorted(cache.glob("*/chunk-*.parquet"))
    done = {p: p.stat().st_mtime_ns for q in finished for p in (q, q.with_suffix(".npy"))}
    assert 3 <= len(finished) < 10, "killed after some chunks, before the last"
    assert not (out / features.MANIFEST).exists()
    with pytest.raises(FileNotFoundError):
        features.load(out)
    result = subprocess.run(cli(*args), env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{10 - len(finished)} to compute" in result.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in done.items()), "finished chunks were redone"
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
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
              "scalselect", "extract"]
    args = cli_args(models, dataset, two, tmp_path / "c2", "--chunk-size", "2", "--batch-size", "2",
                    "--shard", "1", "--num-shards", "2")
    result = subprocess.run(launch + args, env=subprocess_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0: 2 chunks" in result.stderr and "rank 1: 1 chunks" in result.stderr
    assert shard_bytes(two) == shard_bytes(one)
    rows, _ = features.open_shard(two)
    assert rows["index"].tolist() == list(range(6, 12))


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


# ---------------------------------------------------------------------------------------
# The rule


@pytest.mark.slow
def test_speed_settings_do_not_rerun_finished_shards(demo_workflow: Path, tmp_path: Path) -> None:
    shards = [str(p.relative_to(demo_workflow)) for p in demo_workflow.glob("results/*/extract/shard-*")]
    assert len(shards) >= 8
    speed = tmp_path / "speed.yaml"
    speed.write_text("extract: {batch_size: 3, num_workers: 0, chunk_size: 7, gpus: 1, cache_dir: x}\n")
    # `--configfile=X`: the option takes several files, the targets must not follow it bare.
    assert "extract" not in planned_jobs(demo_workflow, f"--configfile={speed}", *shards)
    tau = tmp_path / "tau.yaml"
    tau.write_text("extract: {attention_threshold: 0.8}\n")
    assert planned_jobs(demo_workflow, f"--configfile={tau}", *shards)["extract"] == len(shards)
