"""The whole workflow from a pool in an S3 bucket (issue 31), against moto's S3 server:
the same selections as the local run, byte for byte, with every feature reused from the
local run's store; an unchanged object reruns nothing, a changed one reruns the run; no
credential in any file the run writes; an extract job finishes through an outage."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_workflow, planned_jobs, snakemake, workflow_env

from scalselect.demo.servers import TEST_KEY_ID, TEST_SECRET, S3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN = "demo-llava"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, demo_workflow: Path) -> Iterator[S3Server]:
    """moto's S3 server holding the demo's dataset and images under ``s3://pool/demo/``,
    its endpoint and test credentials in this process's (and Snakemake's) environment."""
    with S3Server() as server:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        demo = demo_workflow / "resources/demo"
        server.upload(demo / "images", "pool", "demo/images/")
        server.client().put_object(Bucket="pool", Key="demo/dataset.json",
                                   Body=(demo / "dataset.json").read_bytes())
        yield server


def s3_workflow(demo_workflow: Path, dest: Path) -> Path:
    """A copy of the workflow whose one run reads the demo from S3, with the local demo
    run's models and feature store."""
    workdir = copy_workflow(dest)
    shutil.copytree(demo_workflow / "resources", workdir / "resources")
    shutil.copytree(demo_workflow / "results/.cache", workdir / "results/.cache")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    local = config["runs"][RUN]
    config["runs"] = {RUN: {**local, "dataset": "s3://pool/demo/dataset.json",
                            "image_root": "s3://pool/demo/images"}}
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    return workdir


def test_a_pool_in_a_bucket_selects_what_the_local_run_selects(
        s3: S3Server, demo_workflow: Path, tmp_path: Path) -> None:
    workdir = s3_workflow(demo_workflow, tmp_path / "workflow")
    snakemake(workdir, "--cores", "2")
    results, local = workdir / "results" / RUN, demo_workflow / "results" / RUN

    manifests = sorted(results.glob("extract/shard-*/manifest.json"))
    assert len(manifests) == 4
    for path in manifests:
        manifest = json.loads(path.read_text())
        assert manifest["samples_computed"] == 0 and manifest["samples_reused"] > 0, path
    chosen = sorted(p.relative_to(results) for p in results.glob("select/*")
                    if p.is_file() and not p.name.startswith("."))
    assert len(chosen) >= 16  # selections, picks and cards of every method and budget
    for name in chosen:
        assert (results / name).read_bytes() == (local / name).read_bytes(), name
    assert (results / "export").is_dir()
    for path in (results / "export").rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (local / path.relative_to(results)).read_bytes(), path
    report = json.loads((results / "validate/report.json").read_text())
    assert report["image_root"] == "s3://pool/demo/images"

    # The credentials reach no file the run wrote, nor Snakemake's logs.
    for path in [*workdir.joinpath("results").rglob("*"), *workdir.joinpath(".snakemake").rglob("*")]:
        if path.is_file() and ".cache" not in path.parts:
            data = path.read_bytes()
            assert TEST_SECRET.encode() not in data and TEST_KEY_ID.encode() not in data, path

    # An unchanged object (even written again) reruns nothing; a changed one the run.
    client = s3.client()
    body = client.get_object(Bucket="pool", Key="demo/dataset.json")["Body"].read()
    client.put_object(Bucket="pool", Key="demo/dataset.json", Body=body)
    assert planned_jobs(workdir) == {}
    records = json.loads(body)
    client.put_object(Bucket="pool", Key="demo/dataset.json",
                      Body=json.dumps(records[:-1]).encode())
    planned = planned_jobs(workdir)
    assert planned.get("validate_index") == 1 and planned.get("filter") == 1, planned


def test_an_extract_job_finishes_through_an_outage_of_the_store(
        s3: S3Server, demo_workflow: Path, tmp_path: Path) -> None:
    """The store goes away in the middle of the job's image fetches and comes back after
    three seconds: the job retries, finishes, and computes what it computes from disk."""
    local = demo_workflow / "results" / RUN
    filtered = next(local.glob("filter/dataset.json"))
    common = ["--model", str(demo_workflow / "resources/demo/models/tiny-llava"),
              "--model-type", "llava", "--dataset", str(filtered),
              "--index", f"{filtered}.index.npz", "--shard", "0", "--num-shards", "4"]
    rows = {}
    for name, root in (("disk", demo_workflow / "resources/demo/images"),
                       ("s3", "s3://pool/demo/images")):
        if name == "s3":
            s3.outage_after(10, 3.0)
        out = tmp_path / name / "shard"
        done = subprocess.run(
            [sys.executable, "-m", "scalselect", "extract", *common, "--image-root", str(root),
             "--out", str(out), "--cache-dir", str(tmp_path / name / "store")],
            cwd=tmp_path, env=workflow_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        rows[name] = json.loads((out / "manifest.json").read_text())
        assert not (out / ".images").exists()  # the spool is removed
    assert s3.outages == 1
    for name in ("disk", "s3"):
        assert rows[name]["samples_computed"] == rows[name]["rows"] > 0
    assert rows["s3"]["store"]["settings_key"] == rows["disk"]["store"]["settings_key"]
    tables = {name: pd.read_parquet(tmp_path / name / "shard" / "rows.parquet")
              for name in rows}
    pd.testing.assert_frame_equal(tables["s3"], tables["disk"])
    features = {name: np.load(tmp_path / name / "shard" / "features.npy") for name in rows}
    np.testing.assert_array_equal(features["s3"], features["disk"])
