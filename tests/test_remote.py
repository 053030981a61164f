"""Datasets and images read from URLs (issue 31): the same records, bytes, checks and
digests as from local disk, ranged reads, retries through an outage, clear errors.

Remote stores are real servers on local ports, started here: an HTTP file server with
ranged requests (``FileServer``, standing in for the Hub's HTTPS files) and moto's
S3-compatible server (``S3Server``), as a client sees them through fsspec and s3fs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from s3fs import S3FileSystem

from scalselect import locations
from scalselect.config import path_problems
from scalselect.data.images import ImageChecker, check_image
from scalselect.data.readers import build_index, iter_records
from scalselect.data.writers import write_records
from scalselect.demo.servers import FileServer, S3Server, free_port
from scalselect.extract.store import image_digests, spooled
from scalselect.io import file_digest


@pytest.fixture(autouse=True)
def fresh_clients() -> None:
    """Each test's server has its own port: forget the S3 clients of earlier tests (fsspec
    keeps one per process, which in a real job never changes endpoint)."""
    S3FileSystem.clear_instance_cache()


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries that give up in well under a second (unreachable servers in tests)."""
    monkeypatch.setattr(locations, "ATTEMPTS", 2)
    monkeypatch.setattr(locations, "FIRST_WAIT_S", 0.01)


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    """A folder with a JSON Lines pool, the same records as a JSON array, and images."""
    root = tmp_path / "pool"
    (root / "images" / "coco").mkdir(parents=True)
    records = []
    for number in range(400):
        image = f"coco/{number % 20:03d}.png"
        records.append({"id": f"s{number}", "image": image, "conversations": [
            {"from": "human", "value": f"<image>\nWhat is shown in picture {number}?"},
            {"from": "gpt", "value": "A test pattern " + "with stripes " * (number % 7)}]})
    for number in range(20):
        Image.new("RGB", (40 + number, 32), (number * 10, 80, 200)).save(
            root / "images" / "coco" / f"{number:03d}.png")
    write_records(root / "pool.jsonl", records)
    write_records(root / "pool.json", records)
    pq.write_table(pa.Table.from_pylist(records), root / "pool.parquet", row_group_size=100)
    return root


def test_a_pool_over_http_reads_as_from_disk(pool: Path) -> None:
    with FileServer(pool) as server:
        for name in ("pool.jsonl", "pool.json", "pool.parquet"):
            local, remote = pool / name, f"{server.url}/{name}"
            assert list(iter_records(remote)) == list(iter_records(local))
            assert list(iter_records(remote, 250, 260)) == list(iter_records(local, 250, 260))
            index, local_index = build_index(remote), build_index(local)
            assert (index.count, index.sha256, index.size, index.layout) == (
                local_index.count, local_index.sha256, local_index.size, local_index.layout)
            assert list(index.offsets) == list(local_index.offsets)
            assert index.sha256 == file_digest(local)


def test_a_shard_is_read_with_ranged_requests_not_the_whole_object(
        pool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locations, "BLOCK_SIZE", 4096)
    local = pool / "pool.jsonl"
    index = build_index(local)
    with FileServer(pool) as server:
        before = server.bytes_sent
        tail = list(iter_records(f"{server.url}/pool.jsonl", 390, 400, index=index))
        sent = server.bytes_sent - before
    assert tail == list(iter_records(local, 390, 400, index=index))
    assert [number for number, _ in tail] == list(range(390, 400))
    # The last 10 of 400 records: a block or two, not the file (~80 KB).
    size = local.stat().st_size
    assert sent <= 3 * 4096 < size / 4, (sent, size)


def test_a_file_url_reads_as_the_path(pool: Path) -> None:
    url = (pool / "pool.json").as_uri()
    assert url.startswith("file://")
    assert list(iter_records(url)) == list(iter_records(pool / "pool.json"))
    build_index(url).check(url)  # the size, asked of the URL, is the indexed one


def test_images_over_http_check_and_hash_as_files(pool: Path, tmp_path: Path) -> None:
    names = sorted(p.relative_to(pool).as_posix() for p in (pool / "images").rglob("*.png"))
    with FileServer(pool, latency=0.01) as server:
        urls = [f"{server.url}/{name}" for name in names]
        missing = f"{server.url}/images/coco/nothing.png"
        with ImageChecker(2, True, 16, 20.0) as checker:
            remote = list(checker.check([*urls, missing]))
        local = [check_image(pool / name, True, 16, 20.0) for name in names]
        assert remote[:-1] == local and all(c.reason is None for c in local)
        assert remote[-1].reason == "missing_image" and "nothing.png" in remote[-1].detail
        spool = tmp_path / "spool"
        assert image_digests(urls, spool=spool) == image_digests([pool / n for n in names])
        for url, name in zip(urls, names, strict=True):
            assert spooled(spool, url).read_bytes() == (pool / name).read_bytes()
        # One GET per image and pass (the checks, then the hashes), and one for the missing.
        assert server.requests == 2 * len(names) + 1


def test_an_unreachable_image_is_a_counted_reason_not_a_crash(quick_retries: None) -> None:
    url = f"http://127.0.0.1:{free_port()}/images/a.png"
    found = check_image(url)
    assert found.reason == "unreachable_image"
    assert "127.0.0.1" in found.detail and "a.png" in found.detail
    assert image_digests([url])[0] == f"unreadable:{url}:unreachable"


def test_urls_are_joined_redacted_and_refused_with_credentials() -> None:
    assert locations.join("hf://datasets/org/pool/", "images/1.jpg") == (
        "hf://datasets/org/pool/images/1.jpg")
    assert locations.redact("https://user:pw@host/a.json?token=t") == "https://host/a.json?..."
    problems = path_problems({"dataset": "https://user:pw@host/a.json",
                              "image_root": "s3://bucket/images?X-Amz-Signature=abc"})
    assert len(problems) == 2
    assert all("carries a credential" in p for p in problems)
    assert not any("pw" in p or "abc" in p for p in problems)


def test_the_configuration_check_names_what_is_wrong_with_a_url(
        pool: Path, quick_retries: None) -> None:
    with S3Server() as server, pytest.MonkeyPatch.context() as patch:
        for name, value in server.environment().items():
            patch.setenv(name, value)
        server.upload(pool, "pool")
        assert path_problems({"dataset": "s3://pool/pool.jsonl",
                              "image_root": "s3://pool/images"}) == []
        problems = path_problems({"dataset": "s3://pool/gone.jsonl",
                                  "image_root": "s3://pool/images"})
        assert problems == ["dataset: s3://pool/gone.jsonl: not found"]
        problems = path_problems({"dataset": "s3://other/pool.jsonl",
                                  "image_root": "s3://pool/images/coco/000.png"})
        assert problems[0] == "dataset: s3://other/pool.jsonl: not found"
        assert problems[1] == "image_root: s3://pool/images/coco/000.png is a file, not a folder"
        patch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        S3FileSystem.clear_instance_cache()  # as a new process would start
        began = time.monotonic()
        problems = path_problems({"dataset": "s3://pool/pool.jsonl", "image_root": "."})
        assert len(problems) == 1 and "s3://pool/pool.jsonl: cannot be reached" in problems[0]
        assert "Traceback" not in problems[0] and time.monotonic() - began < 60


@pytest.mark.integration
def test_wrong_credentials_are_found_before_any_job(tmp_path: Path) -> None:
    """A server that checks credentials (moto with authentication on) refuses ours."""
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-p",
                               str(port)], env=env, stderr=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL)
    try:
        script = ("from scalselect.config import path_problems;"
                  "print(path_problems({'dataset': 's3://pool/pool.jsonl', 'image_root': '.'}))")
        client_env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
                          AWS_ACCESS_KEY_ID="AKIAWRONGKEY", AWS_SECRET_ACCESS_KEY="wrong-secret",
                          AWS_DEFAULT_REGION="us-east-1")
        for _ in range(50):  # the server takes a moment to listen
            out = subprocess.run([sys.executable, "-c", script], env=client_env,
                                 capture_output=True, text=True, check=True).stdout
            if "cannot be reached" not in out:
                break
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait()
    assert "s3://pool/pool.jsonl: access denied" in out
    assert "check the credentials" in out and "wrong-secret" not in out


def test_reads_survive_the_store_going_away_for_seconds(
        pool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locations, "BLOCK_SIZE", 4096)
    names = sorted(p.relative_to(pool).as_posix() for p in (pool / "images").rglob("*.png"))
    local = (pool / "pool.jsonl").read_bytes()
    with S3Server() as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        server.upload(pool, "pool")
        server.outage(2.0)  # down when the dataset is opened
        records = list(iter_records("s3://pool/pool.jsonl"))
        server.outage_after(4, 2.0)  # down in the middle of a stream of ranged reads
        with locations.open_binary("s3://pool/pool.jsonl") as handle:
            streamed = b"".join(iter(lambda: handle.read(4096), b""))
        server.outage(2.0)  # down when the images are asked for
        digests = image_digests([f"s3://pool/{n}" for n in names])
        assert server.outages == 3
    assert records == list(iter_records(pool / "pool.jsonl"))
    assert streamed == local and len(local) > 10 * 4096
    assert digests == image_digests([pool / n for n in names])


def test_a_changed_object_changes_its_version(pool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with S3Server() as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        server.upload(pool, "pool")
        first = locations.version("s3://pool/pool.json")
        assert locations.version("s3://pool/pool.json") == first
        records = json.loads((pool / "pool.json").read_text())
        records[0]["id"] = "changed"
        (pool / "pool.json").write_text(json.dumps(records))
        server.upload(pool, "pool")
        assert locations.version("s3://pool/pool.json") != first


def test_the_key_pass_logs_its_fetches_and_status_keeps_to_samples(
        pool: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An extract job's key pass over URLs writes `images` progress lines; status reads a
    shard's progress from its `samples` lines only."""
    from scalselect.data.records import ShardInput
    from scalselect.extract.store import shard_keys
    from scalselect.watch import last_reading

    records = [json.loads(line) for line in (pool / "pool.jsonl").read_text().splitlines()][:30]
    shard = ShardInput.read(records, 0, "llava")
    with FileServer(pool) as server, caplog.at_level("INFO"):
        remote = shard_keys(shard, records, f"{server.url}/images")
    assert remote == shard_keys(shard, records, str(pool / "images"))
    lines = [r.getMessage() for r in caplog.records if "progress:" in r.getMessage()]
    assert lines and lines[-1].startswith("progress: 30/30 images (100.0%)")
    log = tmp_path / "shard.log"
    samples = "progress: 10/40 samples (25.0%), 2.0/s last 5 s, 2.0/s overall, 0:00:15 left"
    log.write_text(f"{samples}\n{lines[-1]}\n")
    reading = last_reading(log)
    assert (reading.unit, reading.done, reading.total) == ("samples", 10, 40)


def test_the_readme_states_the_loaders_numbers_as_the_code_has_them() -> None:
    text = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    waits = sum(locations.FIRST_WAIT_S * 2**n for n in range(locations.ATTEMPTS - 1))
    assert f"ranged requests of {locations.BLOCK_SIZE >> 20} MiB" in text
    assert f"images {locations.FETCH_THREADS} at a time" in text
    assert f"{locations.ATTEMPTS} tries over about {round(waits, -1):.0f} s" in text
