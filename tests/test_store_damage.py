"""The feature store survives damage (issue 24) and its look-up reads a compacted key
index (issue 20, point 4).

Each fault is injected into a copy of a store that a real extraction (tiny Qwen3-VL, real
images) filled; the shard extracted afterwards must hold the same bytes as the undamaged
run (batch size 1: recomputed samples round exactly as before). Read-only stores are
read-only bind mounts and the full disk a small tmpfs, where this machine allows mounts
(tests run as root, where `chmod -w` does not stop writes); elsewhere the refusal is
injected at the write as the OSError the kernel would raise.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_extraction import job, manifest_of, models, shard_bytes, write_dataset  # noqa: F401

from scalselect.cli import main
from scalselect.errors import UserError
from scalselect.extract import features, shard, store, store_index
from scalselect.extract import packs as pack_files
from scalselect.extract.maintenance import settings_dirs, verify_store
from scalselect.extract.packs import check_pack, pack_names
from scalselect.extract.shard import extract_shard
from scalselect.extract.store import FeatureStore, compact_folder

N = 12  # samples; chunks of 3: four packs


def spec(models, data: Path, out: Path, cache, **kw):
    kw = {"chunk_size": 3, "batch_size": 1, **kw}
    return job(models, data / "dataset.json", out, Path(cache), **kw)


@pytest.fixture(scope="module")
def reference(models, tmp_path_factory) -> dict:
    """The undamaged run: its dataset, store folder, shard bytes and sample keys."""
    root = tmp_path_factory.mktemp("reference")
    write_dataset(root / "data", N)
    extract_shard(spec(models, root / "data", root / "out", root / "cache"))
    key = manifest_of(root / "out")["store"]["settings_key"]
    table = pd.concat(pd.read_parquet(p) for p in sorted((root / "cache/features" / key / "packs").glob("*.parquet")))
    return {"data": root / "data", "cache": root / "cache", "key": key, "bytes": shard_bytes(root / "out"),
            "keys": set(table["key"])}


def copy_store(reference, dest: Path) -> tuple[Path, Path]:
    """A copy of the reference store; returns it and its packs folder."""
    shutil.copytree(reference["cache"], dest)
    return dest, dest / "features" / reference["key"] / "packs"


def assert_same_shard(out: Path, reference) -> None:
    got = shard_bytes(out)
    assert got[features.FEATURES] == reference["bytes"][features.FEATURES]
    assert got[features.ROWS] == reference["bytes"][features.ROWS]


# ---------------------------------------------------------------------------------------
# Damaged packs


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def flip_matrix_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # inside the last row, not the header
    path.write_bytes(bytes(data))


def drop_table_row(path: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)  # keeps the recorded metadata


FAULTS = {
    "truncated-matrix": (lambda packs, name: truncate(packs / f"{name}.npy"), ".npy", 3),
    "flipped-byte": (lambda packs, name: flip_matrix_byte(packs / f"{name}.npy"), ".npy", 3),
    "truncated-table": (lambda packs, name: truncate(packs / f"{name}.parquet"), ".parquet", 0),
    "rows-disagree": (lambda packs, name: drop_table_row(packs / f"{name}.parquet"), ".npy", 2),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_damaged_pack_costs_its_samples_not_the_run(models, reference, tmp_path, caplog, capsys, fault) -> None:
    cache, packs = copy_store(reference, tmp_path / "cache")
    victim = pack_names(packs)[1]
    inject, named, counted = FAULTS[fault]
    inject(packs, victim)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        extract_shard(spec(models, reference["data"], out, cache))
    assert_same_shard(out, reference)
    manifest = manifest_of(out)
    # The victim's three samples were computed again; the others were reused.
    assert (manifest["samples_computed"], manifest["samples_reused"]) == (3, N - 3)
    # Counted as damaged when the table still says which samples the pack held.
    assert manifest["samples_recomputed_damaged"] == counted
    assert victim not in manifest["store"]["packs"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "scalselect.extract.store"]
    assert len(warnings) == 1 and f"{victim}{named}" in warnings[0], warnings
    # verify lists exactly that pack; --fix moves it aside, deletes nothing.
    capsys.readouterr()
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 1
    listed = capsys.readouterr().out
    assert listed.count("damaged:") == 1 and victim in listed
    before = {p.name: p.read_bytes() for p in packs.iterdir() if p.name.startswith(victim)}
    assert main(["cache", "verify", "--cache-dir", str(cache), "--fix"]) == 0
    aside = packs.parent / "damaged"
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0
    # The recomputed pack was stored: a rerun computes nothing and says nothing.
    caplog.clear()
    shutil.rmtree(out)
    with caplog.at_level(logging.WARNING):
        extract_shard(spec(models, reference["data"], out, cache))
    assert (manifest_of(out)["samples_computed"], manifest_of(out)["samples_recomputed_damaged"]) == (0, 0)
    assert_same_shard(out, reference)
    assert "damaged" not in caplog.text


def test_foreign_files_in_packs_are_skipped(models, reference, tmp_path, caplog) -> None:
    cache, packs = copy_store(reference, tmp_path / "cache")
    (packs / "notes.txt").write_text("copied here by hand\n")
    (packs / "stray.parquet").write_bytes(b"PAR1 not really")
    pd.DataFrame({"a": [1, 2]}).to_parquet(packs / "other.parquet")  # a table, not a pack
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        extract_shard(spec(models, reference["data"], out, cache))
    assert_same_shard(out, reference)
    assert (manifest_of(out)["samples_computed"], manifest_of(out)["samples_recomputed_damaged"]) == (0, 0)
    assert "stray.parquet" in caplog.text and "notes.txt" not in caplog.text
    damage, counts = verify_store(cache)
    assert sorted(d.files[0].name for d in damage) == ["notes.txt", "other.parquet", "stray.parquet"]
    assert counts["packs"] == 6 and counts["legacy"] == 0


def test_packs_without_recorded_checksums_still_serve(reference, tmp_path) -> None:
    """Packs written before checksums were recorded: used, with their sizes checked."""
    cache, packs = copy_store(reference, tmp_path / "cache")
    for table in packs.glob("*.parquet"):
        pd.read_parquet(table).to_parquet(table, index=False)  # as the previous release wrote it
    found = FeatureStore(cache, reference["key"]).lookup(reference["keys"])
    assert set(found.found) == reference["keys"] and not found.damaged
    assert verify_store(cache)[1]["legacy"] == 4 and not verify_store(cache)[0]
    name = pack_names(packs)[0]
    truncate(packs / f"{name}.npy")
    assert "truncated" in check_pack(packs, name).problem


# ---------------------------------------------------------------------------------------
# Read-only stores, a full disk


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[bool]:
    """``path`` remounted read-only over itself; yields False where mounts are refused."""
    bound = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
    if bound and subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", str(path)], check=True)
        bound = False
    try:
        yield bound
    finally:
        if bound:
            subprocess.run(["umount", str(path)], check=True)


def refuse_writes_under(monkeypatch, path: Path, code: int) -> None:
    """Where mounts are refused: the write raises what the kernel would."""
    original = store.write_pack_files

    def write(packs, table, matrix):
        if str(packs).startswith(str(path)):
            raise OSError(code, os.strerror(code), str(packs))
        return original(packs, table, matrix)

    monkeypatch.setattr(store, "write_pack_files", write)


@pytest.mark.integration  # bind-mounts a read-only store
def test_a_read_only_store_is_reused_and_a_second_store_takes_the_new_packs(
        models, reference, tmp_path, caplog, monkeypatch) -> None:
    shared, packs = copy_store(reference, tmp_path / "shared")
    removed = pack_names(packs)[0]
    for path in packs.glob(f"{removed}.*"):
        path.unlink()
    listing = sorted(p.relative_to(shared) for p in shared.rglob("*"))
    mine = tmp_path / "mine"
    with read_only(shared) as mounted:
        if not mounted:
            refuse_writes_under(monkeypatch, shared, errno.EROFS)
        # The shared store alone: its packs reused, the rest computed, said once.
        out = tmp_path / "alone"
        with caplog.at_level(logging.WARNING):
            extract_shard(spec(models, reference["data"], out, shared, chunk_size=1))
        assert_same_shard(out, reference)
        assert (manifest_of(out)["samples_computed"], manifest_of(out)["samples_reused"]) == (3, N - 3)
        said = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
        assert len(said) == 1 and str(shared) in said[0] and "cache_dirs" in said[0]
        assert not (out / shard.SCRATCH_DIR).exists()
        # Mine first, then the shared one (the command line a rule runs): the new packs go to mine.
        args = ["extract", "--model", str(models["qwen3-vl"]), "--model-type", "qwen",
                "--dataset", str(reference["data"] / "dataset.json"), "--image-root", str(reference["data"]),
                "--min-image-tokens", "4", "--max-image-tokens", "48", "--num-workers", "0",
                "--batch-size", "1", "--cache-dir", str(mine), str(shared)]
        results = tmp_path / "results"
        for run in ("first", "second"):
            out = results / run / "extract/shard-0-of-1"
            assert main([*args, "--out", str(out)]) == 0
            assert_same_shard(out, reference)
        assert manifest_of(results / "first/extract/shard-0-of-1")["samples_computed"] == 3
        assert manifest_of(results / "second/extract/shard-0-of-1")["samples_computed"] == 0
        assert len(pack_names(mine / "features" / reference["key"] / "packs")) == 1
        assert sorted(p.relative_to(shared) for p in shared.rglob("*")) == listing
        # prune keeps what the shards use, wherever it lies.
        assert main(["cache", "prune", "--cache-dir", str(mine), "--results", str(results)]) == 0
        assert len(pack_names(mine / "features" / reference["key"] / "packs")) == 1


@pytest.mark.integration  # mounts a small tmpfs
def test_a_full_disk_stops_the_job_clearly_and_the_rerun_resumes(models, reference, tmp_path, monkeypatch) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True).returncode == 0
    original = store.write_pack_files
    calls = []

    def fill_after_first(packs, table, matrix):
        """The disk fills up while the job runs: after its first pack."""
        if calls:
            if not mounted:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(packs))
            with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:
                while True:
                    filler.write(b"\0" * 65536)
        calls.append(1)
        return original(packs, table, matrix)

    try:
        monkeypatch.setattr(store, "write_pack_files", fill_after_first)
        out = tmp_path / "out"
        with pytest.raises(UserError) as error:
            extract_shard(spec(models, reference["data"], out, disk))
        message = str(error.value)
        assert str(disk / "features" / reference["key"]) in message and "needs about" in message
        packs = disk / "features" / reference["key"] / "packs"
        # Nothing partial: one complete pack, no orphan matrix, no temporary file.
        assert sorted(p.suffix for p in packs.iterdir()) == [".npy", ".parquet"]
        assert not list(disk.rglob("*.tmp"))
        assert check_pack(packs, pack_names(packs)[0]).problem is None
        # Space freed: the rerun reuses the stored pack and computes the rest.
        (disk / "filler").unlink(missing_ok=True)
        monkeypatch.setattr(store, "write_pack_files", original)
        extract_shard(spec(models, reference["data"], out, disk))
        assert (manifest_of(out)["samples_computed"], manifest_of(out)["samples_reused"]) == (N - 3, 3)
        assert_same_shard(out, reference)
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


# ---------------------------------------------------------------------------------------
# kill -9 during `cache prune`


def prune_killed_after(k: int, cache: Path, results: Path) -> int:
    """`cache prune` in a forked process that SIGKILLs itself right after its k-th
    deletion; returns its exit status, or minus the signal that ended it."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest teardown, whatever happens
        code = 1
        try:
            os.environ["SCALSELECT_TEST_KILL_AFTER_DELETES"] = str(k)
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                code = main(["cache", "prune", "--cache-dir", str(cache), "--results", str(results)])
        finally:
            os._exit(code)
    status = os.waitpid(pid, 0)[1]
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def test_prune_killed_at_any_point_leaves_only_complete_packs(models, reference, tmp_path) -> None:
    source, packs = copy_store(reference, tmp_path / "source")
    compact_folder(packs.parent)
    # A second settings folder nobody uses (removed whole) and a shard using two packs.
    shutil.copytree(packs.parent, source / "features" / ("0" * 64))
    kept = pack_names(packs)[:2]
    manifest = tmp_path / "results/run/extract/shard-0-of-1/manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"store": {"settings_key": reference["key"], "packs": kept}}))
    # Killed right after its k-th deletion, for every k until prune finishes unkilled.
    for k in range(1, 40):
        cache = tmp_path / f"cache-{k}"
        shutil.copytree(source, cache)
        code = prune_killed_after(k, cache, tmp_path / "results")
        assert not verify_store(cache)[0], k
        assert set(kept) <= set(pack_names(cache / "features" / reference["key"] / "packs"))
        if code == 0:
            break
        assert code == -signal.SIGKILL
        # A prune after the killed one finishes the work.
        assert main(["cache", "prune", "--cache-dir", str(cache), "--results", str(tmp_path / "results")]) == 0
        assert pack_names(cache / "features" / reference["key"] / "packs") == kept
        shutil.rmtree(cache)
    # Three index files and four tables of the unused folder, then the folder; three
    # index files, two tables and two matrices of the other.
    assert k == 16 and settings_dirs(cache) == [cache / "features" / reference["key"]]
    # The pruned samples are computed again, with the same bytes.
    out = tmp_path / "out"
    extract_shard(spec(models, reference["data"], out, cache))
    assert manifest_of(out)["samples_computed"] == 6
    assert_same_shard(out, reference)


# ---------------------------------------------------------------------------------------
# The compacted index


def synthetic_store(root: Path, packs: int, rows: int, seed: int = 0) -> tuple[FeatureStore, list[list[str]]]:
    """Packs of random keys, each sharing some keys with earlier packs; returns the keys."""
    rng = np.random.default_rng(seed)
    fs = FeatureStore(root, "k" * 64)
    written = []
    for _ in range(packs):
        keys = [bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex() for _ in range(rows)]
        if written:
            keys[: rows // 4] = rng.choice(sum(written, []), rows // 4, replace=False).tolist()
        table = pd.DataFrame({"key": keys, "status": "ok", "detail": "", "n_vision": 0, "n_kept": 0,
                              "seq_len": 0, "truncated": False}, columns=list(pack_files.PACK_COLUMNS))
        fs.write_pack(table, rng.standard_normal((rows, 4)).astype(np.float32))
        written.append(keys)
    return fs, written


def first_wins(fs: FeatureStore) -> dict[str, tuple[str, int]]:
    """Independently of the look-up: each key's first pack in name order, first row."""
    expected: dict[str, tuple[str, int]] = {}
    for name in sorted(pack_names(fs.roots[0] / "packs")):
        for row, key in enumerate(pd.read_parquet(fs.roots[0] / "packs" / f"{name}.parquet")["key"]):
            expected.setdefault(key, (name, row))
    return expected


def located(lookup) -> dict[str, tuple[str, int]]:
    return {k: (v.pack, v.row) for k, v in lookup.found.items()}


def test_the_index_finds_what_the_scan_finds(tmp_path, monkeypatch) -> None:
    fs, written = synthetic_store(tmp_path, 12, 40)
    folder = fs.roots[0]
    wanted = set(sum(written, [])) | {"f" * 64, "0" * 64}
    scan = located(fs.lookup(wanted))
    assert scan == first_wins(fs)
    compact_folder(folder)
    # A pack the index does not cover but whose name sorts first (a job that started
    # before the compaction and finished after): it still wins its keys.
    late = synthetic_store(tmp_path / "late", 1, 40, seed=1)[0]
    late_name = pack_names(late.roots[0] / "packs")[0]
    table = pd.read_parquet(late.roots[0] / "packs" / f"{late_name}.parquet")
    table.loc[:9, "key"] = written[3][:10]
    early = "0" * 20 + late_name[20:]
    fs.write_pack(table, np.load(late.roots[0] / "packs" / f"{late_name}.npy"))
    newest = pack_names(folder / "packs")[-1]
    for suffix in (".npy", ".parquet"):
        os.replace(folder / "packs" / f"{newest}{suffix}", folder / "packs" / f"{early}{suffix}")
    expected = first_wins(fs)
    assert all(expected[k][0] == early for k in written[3][:10])
    indexed = located(FeatureStore(tmp_path, "k" * 64).lookup(wanted | set(table["key"])))
    assert indexed == expected
    # Only the uncovered pack's key column is read; after compacting again, none.
    calls: list[str] = []
    real = pack_files._pack_keys
    monkeypatch.setattr(pack_files, "_pack_keys", lambda packs, name: calls.append(name) or real(packs, name))
    FeatureStore(tmp_path, "k" * 64).lookup(wanted)
    assert calls == [early]
    compact_folder(folder)
    calls.clear()
    assert located(FeatureStore(tmp_path, "k" * 64).lookup(wanted | set(table["key"]))) == expected
    assert calls == []
    assert len(store_index.index_names(folder / "index")) == 2  # the newest and the one it merged


INDEX_FAULTS = {
    "flipped-key": lambda d, n: flip_matrix_byte(d / f"{n}.keys.npy"),
    "flipped-location": lambda d, n: flip_matrix_byte(d / f"{n}.where.npy"),
    "truncated": lambda d, n: truncate(d / f"{n}.keys.npy"),
    "pack-list": lambda d, n: (d / f"{n}.json").write_text((d / f"{n}.json").read_text().replace('"packs": ["', '"packs": ["1')),
    "not-json": lambda d, n: (d / f"{n}.json").write_text("{"),
}


@pytest.mark.parametrize("fault", list(INDEX_FAULTS))
def test_a_damaged_index_is_ignored_and_the_packs_read(tmp_path, caplog, fault) -> None:
    fs, written = synthetic_store(tmp_path, 6, 300)
    expected = first_wins(fs)
    name, entries = compact_folder(fs.roots[0])
    assert entries == 6 * 300
    INDEX_FAULTS[fault](fs.roots[0] / "index", name)
    wanted = set(expected) | {"e" * 64}
    with caplog.at_level(logging.WARNING):
        # Every key, so that the damaged entry is among those read.
        got = located(FeatureStore(tmp_path, "k" * 64).lookup(wanted))
    assert got == expected
    assert f"{name}.json" in caplog.text and "ignored" in caplog.text
    assert [d.files[0].name for d in verify_store(tmp_path)[0]] == [f"{name}.json"]
    # A compaction does not build on it.
    assert compact_folder(fs.roots[0])[1] == 6 * 300


def test_one_compaction_at_a_time_and_a_stale_lock_is_taken_over(tmp_path) -> None:
    fs, _ = synthetic_store(tmp_path, 3, 10)
    lock = fs.roots[0] / "index" / ".compact.lock"
    lock.parent.mkdir()
    lock.write_text("other-host 1\n")
    assert compact_folder(fs.roots[0]) == (None, 0)
    os.utime(lock, (0, 0))
    assert compact_folder(fs.roots[0])[1] == 30 and not lock.exists()


def test_reshard_from_an_index_computes_nothing_and_jobs_compact(models, reference, tmp_path, monkeypatch) -> None:
    cache, packs = copy_store(reference, tmp_path / "cache")
    monkeypatch.setattr(shard, "COMPACT_AFTER", 2)
    outs = [tmp_path / f"out/shard-{i}-of-2" for i in range(2)]
    extract_shard(spec(models, reference["data"], outs[0], cache, shard=0, num_shards=2))
    # The job found four packs no index covered, and indexed them.
    index_dir = packs.parent / "index"
    (name,) = store_index.index_names(index_dir)
    assert sorted(store_index.load_index(index_dir, name).packs) == pack_names(packs)

    def no_scan(*args):
        raise AssertionError("a pack's key column was read although the index covers it")

    monkeypatch.setattr(pack_files, "_pack_keys", no_scan)
    extract_shard(spec(models, reference["data"], outs[1], cache, shard=1, num_shards=2))
    assert [manifest_of(o)["samples_computed"] for o in outs] == [0, 0]
    expected = np.load(io.BytesIO(reference["bytes"][features.FEATURES]))
    assert features.load(tmp_path / "out")[1].tobytes() == expected.tobytes()
