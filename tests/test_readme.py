"""The README renders as written (CommonMark, as GitHub reads it)."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import REPO, copy_workflow, workflow_env
from markdown_it import MarkdownIt

README = (REPO / "README.md").read_text(encoding="utf-8")


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_readme_opens_with_its_title() -> None:
    tokens = MarkdownIt("commonmark").parse(README)
    assert tokens[0].type == "heading_open" and tokens[0].tag == "h1"


def test_every_code_fence_closes_where_it_should() -> None:
    lines = README.splitlines()
    fences = [t for t in MarkdownIt("commonmark").parse(README) if t.type == "fence"]
    assert fences
    for fence in fences:
        start, end = fence.map
        # A fence that never closes runs to the end of the file; a closing fence with
        # text after it is no closing fence, so the block swallows the prose up to the
        # next fence line, which then shows up inside the code.
        assert end <= len(lines) and re.fullmatch(r"\s*`{3,}\s*", lines[end - 1]), (
            f"the code block opened at line {start + 1} does not close"
        )
        inner = fence.content.splitlines()
        assert not any(line.lstrip().startswith("```") for line in inner), (
            f"the code block opened at line {start + 1} holds a fence line"
        )


def test_every_contents_link_hits_a_heading() -> None:
    tokens = MarkdownIt("commonmark").parse(README)
    anchors = {
        github_anchor(tokens[i + 1].content)
        for i, token in enumerate(tokens)
        if token.type == "heading_open"
    }
    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\(#([^)]+)\)", contents)
    assert len(links) >= 5
    missing = [link for link in links if link not in anchors]
    assert not missing, (missing, sorted(anchors))


def fence_after(marker: str, info: str) -> str:
    """The first ``info`` code block whose first line contains ``marker``, and the bash
    block that follows it."""
    fences = [t for t in MarkdownIt("commonmark").parse(README) if t.type == "fence"]
    at = next(i for i, f in enumerate(fences) if f.info == info and marker in f.content.split("\n")[0])
    assert fences[at + 1].info == "bash"
    return fences[at].content, fences[at + 1].content


@pytest.mark.slow
def test_parquet_pool_example_runs_as_written(tmp_path: Path) -> None:
    """The own-data section's parquet pool (images embedded, no image_root, sources from
    a column, both tiny models, a percentage budget, every method), in a fresh copy of
    the workflow with this environment as its .venv, the command as written."""
    config, command = fence_after("# my-pool.yaml", "yaml")
    workdir = copy_workflow(tmp_path / "workflow")
    (workdir / ".venv").symlink_to(Path(sys.prefix))
    (workdir / "my-pool.yaml").write_text(config)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=workdir,
                          env=workflow_env(), capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert "but select.kmeans_clusters is" not in done.stdout + done.stderr  # none below K
    pool = pq.read_table(workdir / "resources/demo/dataset.parquet")
    results = workdir / "results/pool-llava"
    report = json.loads((results / "validate/report.json").read_text())
    assert report["num_samples"] == pool.num_rows and report["num_invalid"] > 0
    summary = pd.read_csv(results / "select/summary.csv", dtype={"budget": str})
    n = int(summary.set_index("budget").loc["25%", "n"])
    scored = len(pd.read_parquet(results / "score/scores.parquet"))
    assert n == (25 * scored + 50) // 100  # rounded half up
    for name, rows in (("top-20", 20), (f"top-{n}", n), (f"kmeans-{n}", n)):
        table = pq.read_table(results / f"select/{name}.parquet")
        assert table.num_rows == rows and table.schema.equals(pool.schema), name
    # Sources from the column, one colour each in every run; the percentage as asked.
    sources = json.loads((workdir / "results/sources.json").read_text())
    assert sources["sources"] == ["captions", "vqa", "ocr"]  # text-only samples dropped
    page = (results / "browse/index.html").read_text()
    assert f"25% (N = {n})" in page
    assert set(pd.read_csv(results / "plots/composition.csv")["source"]) == {"captions", "vqa", "ocr"}
def section_commands(title: str) -> list[str]:
    """The lines of the first bash block under the heading ``## title``."""
    body = README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    block = body.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_sharing_a_selection_runs_as_written(demo_workflow: Path, tmp_path: Path) -> None:
    """The section's commands, in a folder beside the demo's results, with `copy.jsonl` a
    shuffled JSON Lines copy of the demo's dataset."""
    for name in ("results", "resources"):
        (tmp_path / name).symlink_to(demo_workflow / name)
    records = json.loads((demo_workflow / "resources/demo/dataset.json").read_text())
    random.Random(4).shuffle(records)
    (tmp_path / "copy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    commands = section_commands("Sharing a selection")
    assert [c.split()[3] for c in commands] == ["apply"] * 3 + ["compare"] * 2 + ["export"]
    outputs = []
    for command in commands:
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=workflow_env(),
                                capture_output=True, text=True)
        assert result.returncode == 0, (command, result.stderr[-2000:])
        outputs.append(result.stdout)
    top = json.loads((demo_workflow / "results/demo-llava/select/top-32.json").read_text())
    written = [json.loads(line) for line in (tmp_path / "top-32.jsonl").read_text().splitlines()]
    order = [json.dumps(r) for r in records]
    assert sorted(map(json.dumps, written), key=order.index) == [json.dumps(r) for r in written]
    assert sorted(map(json.dumps, written)) == sorted(map(json.dumps, top))
    assert "(identical)" in outputs[3]
    assert json.loads(outputs[4])["a"]["n"] == 32
    assert (tmp_path / "top-32-sharegpt/top-32.jsonl").exists()
    assert (tmp_path / "top-32-sharegpt/dataset_info.json").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_data_on_s3_runs_as_written(demo_workflow: Path, tmp_path: Path) -> None:
    """The section's offline trial, as written, in a copy of the workflow holding the
    demo's models and feature store: moto's server, the upload, the run from the bucket.
    The selections are the local demo run's, and nothing is computed again."""
    config, command = fence_after("# my-bucket-demo.yaml", "yaml")
    workdir = copy_workflow(tmp_path / "workflow")
    (workdir / ".venv").symlink_to(Path(sys.prefix))
    shutil.copytree(demo_workflow / "resources", workdir / "resources")
    shutil.copytree(demo_workflow / "results/.cache", workdir / "results/.cache")
    (workdir / "my-bucket-demo.yaml").write_text(config)
    env = {k: v for k, v in workflow_env().items() if not k.startswith("AWS_")}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    results, local = workdir / "results/bucket-llava", demo_workflow / "results/demo-llava"
    manifests = sorted(results.glob("extract/*/manifest.json"))
    assert manifests and all(json.loads(m.read_text())["samples_computed"] == 0
                             for m in manifests)
    chosen = sorted(p.name for p in results.glob("select/*.json") if ".card" not in p.name)
    assert chosen == ["random-32-seed0.json", "random-40-seed0.json", "top-32.json",
                      "top-40.json"]  # 16% of 248 scored samples is 40
    for name in chosen:
        assert (results / "select" / name).read_bytes() == (local / "select" / name).read_bytes()
