"""Baseline selectors (k-center, k-means) against brute force and hand-made cases, and
the ``select-baseline`` command on real shard files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalselect.cli import main
from scalselect.errors import UserError
from scalselect.extract import features
from scalselect.score import leverage
from scalselect.score.leverage import Backend, Preprocessing
from scalselect.select import baselines


def brute_force_kcenter(points: np.ndarray, budget: int, start: int) -> list[int]:
    """Greedy k-center written plainly: float64 distances to every picked point."""
    x = points.astype(np.float64)
    picks = [start]
    while len(picks) < budget:
        nearest = [min(float(((x[i] - x[p]) ** 2).sum()) for p in picks) for i in range(len(x))]
        for p in picks:
            nearest[p] = -1.0
        picks.append(int(np.argmax(nearest)))
    return picks


@pytest.mark.parametrize("n, d, budget, seed", [(60, 3, 12, 0), (150, 8, 40, 1), (97, 16, 97, 2)])
def test_kcenter_equals_brute_force_greedy(n: int, d: int, budget: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = (rng.standard_normal((n, d)) * rng.lognormal(0, 1, d)).astype(np.float32)
    start = int(rng.integers(n))
    got = baselines.kcenter(points, budget, start, device="cpu", block_rows=16)
    assert got.tolist() == brute_force_kcenter(points, budget, start)
    assert len(set(got.tolist())) == budget
    # Nested: a smaller budget's picks are the first picks of a larger one (README).
    assert baselines.kcenter(points, budget // 2, start, device="cpu").tolist() == got[: budget // 2].tolist()


def test_kcenter_ties_and_duplicates() -> None:
    # Points on a line: 0 and 4 are both farthest from 2; the lower position wins.
    points = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [2.0]], np.float32)
    assert baselines.kcenter(points, 3, start=2, device="cpu").tolist() == [2, 0, 4]
    # A duplicate of a picked point is picked only when nothing else is left.
    assert sorted(baselines.kcenter(points, 6, start=2, device="cpu").tolist()) == list(range(6))
    with pytest.raises(UserError, match="budget 7 is not in 1..6"):
        baselines.kcenter(points, 7, start=0, device="cpu")


def test_balanced_shares() -> None:
    assert baselines.balanced_shares(np.array([5, 5, 5]), 9).tolist() == [3, 3, 3]
    # A small cluster gives all it has; the others share the rest equally.
    assert baselines.balanced_shares(np.array([1, 8, 8]), 9).tolist() == [1, 4, 4]
    # One more for the larger cluster first, ties to the lower cluster number.
    assert baselines.balanced_shares(np.array([4, 6, 6]), 8).tolist() == [2, 3, 3]
    assert baselines.balanced_shares(np.array([6, 4, 6]), 7).tolist() == [3, 2, 2]
    # More clusters than budget: the largest clusters get one each.
    assert baselines.balanced_shares(np.array([1, 3, 2, 3]), 2).tolist() == [0, 1, 0, 1]
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 30, rng.integers(1, 12))
        budget = int(rng.integers(0, sizes.sum() + 1))
        shares = baselines.balanced_shares(sizes, budget)
        assert shares.sum() == budget and (shares <= sizes).all() and (shares >= 0).all()
        open_shares = shares[shares < sizes]
        if len(open_shares):
            # Clusters not exhausted are within one of each other and of the largest share.
            assert open_shares.max() - open_shares.min() <= 1
            assert shares.max() <= open_shares.min() + 1


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four well-separated blobs of unequal sizes (k-means converges to them)."""
    rng = np.random.default_rng(seed)
    sizes = [40, 25, 8, 30]
    centres = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20]], np.float64)
    points = np.concatenate([c + rng.standard_normal((s, 3)) for c, s in zip(centres, sizes)])
    truth = np.repeat(np.arange(4), sizes)
    order = rng.permutation(len(points))
    return points[order].astype(np.float32), truth[order]


def test_kmeans_balanced_nearest_first_and_deterministic() -> None:
    points, truth = blobs()
    clusters = baselines.fit_clusters(points, clusters=4, seed=3)
    again = baselines.fit_clusters(points, clusters=4, seed=3)
    assert np.array_equal(clusters.labels, again.labels)
    assert np.array_equal(clusters.distance, again.distance)
    assert clusters.converged and 1 <= clusters.iterations < 300
    labels = clusters.labels
    # The clusters are the blobs (up to naming).
    pairs = set(zip(labels.tolist(), truth.tolist()))
    assert len(pairs) == 4
    # Squared distance to the centroid, the mean of the cluster's members.
    for cluster in range(4):
        members = np.flatnonzero(labels == cluster)
        centre = points[members].astype(np.float64).mean(0)
        distance = ((points[members].astype(np.float64) - centre) ** 2).sum(1)
        assert np.allclose(clusters.distance[members], distance, rtol=1e-4, atol=1e-4)
    picks = baselines.cluster_balanced(labels, clusters.distance, 40)
    assert picks.tolist() == sorted(set(picks.tolist())) and len(picks) == 40
    # The blob of 8 samples gives all 8; the other three share 32 within one of equal,
    # the extra sample to the larger blobs (40 and 30 samples).
    per_cluster = np.bincount(labels[picks], minlength=4)
    small = labels[truth == 2][0]
    assert per_cluster[small] == 8
    assert per_cluster[labels[truth == 0][0]] == per_cluster[labels[truth == 3][0]] == 11
    assert per_cluster[labels[truth == 1][0]] == 10
    # Nearest to the centroid first.
    for cluster in range(4):
        members = np.flatnonzero(labels == cluster)
        expected = members[np.argsort(clusters.distance[members], kind="stable")[: per_cluster[cluster]]]
        assert sorted(expected.tolist()) == sorted(set(picks.tolist()) & set(members.tolist()))
    with pytest.raises(UserError, match="kmeans_clusters 200 is not in 1..103"):
        baselines.fit_clusters(points, clusters=200, seed=0)


def test_cluster_balanced_ties_and_budgets() -> None:
    # Equal distances: the lower position first; clusters numbered out of dataset order.
    labels = np.array([1, 0, 1, 0, 1, 1])
    distance = np.array([2.0, 5.0, 2.0, 1.0, 0.5, 2.0])
    assert baselines.cluster_balanced(labels, distance, 1).tolist() == [4]  # the larger cluster
    assert baselines.cluster_balanced(labels, distance, 2).tolist() == [3, 4]
    assert baselines.cluster_balanced(labels, distance, 3).tolist() == [0, 3, 4]
    assert baselines.cluster_balanced(labels, distance, 4).tolist() == [0, 1, 3, 4]
    assert baselines.cluster_balanced(labels, distance, 5).tolist() == [0, 1, 2, 3, 4]
    assert baselines.cluster_balanced(labels, distance, 6).tolist() == list(range(6))
    # A cluster number with no members (K larger than the clusters found) takes nothing.
    assert baselines.cluster_balanced(np.array([2, 2, 0]), np.zeros(3), 2).tolist() == [0, 2]
    for budget in (0, 7):
        with pytest.raises(UserError, match=f"budget {budget} is not in 1..6"):
            baselines.cluster_balanced(labels, distance, budget)


def write_shard(directory: Path, matrix: np.ndarray, index: np.ndarray, failed: set[int]) -> Path:
    ok = np.array([i not in failed for i in index])
    rows = pd.DataFrame({
        "index": index.astype(np.int64), "id": [features.encode_id(f"s{i}") for i in index],
        "status": np.where(ok, "ok", "image_error"), "n_vision": 4, "n_kept": 2,
        "seq_len": 12, "truncated": False, "detail": "",
    })
    features.write_shard(directory, rows, np.where(ok[:, None], matrix, 0).astype(np.float32))
    return directory


def test_select_baseline_command(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(5)
    n, d = 80, 6
    matrix = (rng.standard_normal((n, d)) * [5, 3, 2, 1, 1, 1] + 40).astype(np.float32)
    failed = {3, 50}
    shards = [
        write_shard(tmp_path / "extract/shard-0-of-2", matrix[:40], np.arange(40), failed),
        write_shard(tmp_path / "extract/shard-1-of-2", matrix[40:], np.arange(40, n), failed),
    ]
    table, model = leverage.leverage_scores(
        leverage.open_sources(shards), Preprocessing(), 0.9, Backend("numpy")
    )
    leverage.write_scores(tmp_path / "importance_scores.jsonl", table)  # and scores.parquet
    model.save(tmp_path / "model.npz")
    records = [{"id": f"s{i}", "messages": [], "images": []} for i in range(n)]
    (tmp_path / "dataset.json").write_text(json.dumps(records))

    reps = baselines.load_representations(shards, model)
    ok = np.array([i for i in range(n) if i not in failed])
    assert reps.index.tolist() == ok.tolist()
    centred = matrix[ok].astype(np.float64) - matrix[ok].astype(np.float64).mean(0)
    assert np.abs(reps.matrix - centred).max() < 1e-4

    common = ["--dataset", str(tmp_path / "dataset.json"), "--features", *map(str, shards),
              "--model", str(tmp_path / "model.npz"), "--scores", str(tmp_path / "scores.parquet")]
    out, picks = tmp_path / "kcenter-10.json", tmp_path / "kcenter-10.parquet"
    assert main(["select-baseline", "--method", "kcenter", *common, "--num", "10",
                 "--out", str(out), "--picks", str(picks)]) == 0
    start = int(np.flatnonzero(ok == table["index"].iloc[0])[0])
    expected = ok[brute_force_kcenter(centred.astype(np.float32), 10, start)]
    chosen = pd.read_parquet(picks)
    assert chosen["index"].tolist() == sorted(expected.tolist())
    assert chosen.sort_values("order")["index"].tolist() == expected.tolist()
    assert json.loads(out.read_text()) == [records[i] for i in sorted(expected.tolist())]

    clusters = tmp_path / "kmeans-clusters.parquet"
    assert main(["kmeans-clusters", *common[2:], "--kmeans-clusters", "4", "--kmeans-seed", "1",
                 "--out", str(clusters)]) == 0
    fitted = baselines.fit_clusters(centred.astype(np.float32), 4, 1)
    table = pd.read_parquet(clusters)
    assert table.columns.tolist() == ["index", "id", "cluster", "distance"]
    assert table["index"].tolist() == ok.tolist()
    assert table["id"].tolist() == [f"s{i}" for i in ok]
    assert table["cluster"].tolist() == fitted.labels.tolist()
    assert np.allclose(table["distance"], fitted.distance, rtol=1e-4)
    out = tmp_path / "kmeans-10%.json"
    kmeans = ["select-baseline", "--method", "kmeans", "--dataset", str(tmp_path / "dataset.json"),
              "--scores", str(tmp_path / "scores.parquet"), "--clusters", str(clusters)]
    assert main([*kmeans, "--num", "10%", "--out", str(out),
                 "--picks", str(tmp_path / "kmeans.parquet")]) == 0
    expected = ok[baselines.cluster_balanced(fitted.labels, fitted.distance, 8)]  # 10% of 78
    assert json.loads(out.read_text()) == [records[i] for i in expected]
    assert pd.read_parquet(tmp_path / "kmeans.parquet")["index"].tolist() == expected.tolist()
    assert main([*kmeans, "--num", "79", "--out", str(out), "--picks", str(tmp_path / "k.parquet")]) == 2
    # Fewer picks than clusters: done, and said with the fix.
    assert "kmeans_clusters" not in caplog.text
    assert main([*kmeans, "--num", "3", "--out", str(out), "--picks", str(tmp_path / "k.parquet")]) == 0
    assert ("budget 3 picks 3 samples but select.kmeans_clusters is 4: k-means takes one sample"
            " from each of the 3 largest clusters and none from the other 1") in caplog.text
    # One file named as both the selection and the picks (one would overwrite the other).
    same = tmp_path / "kmeans-5.json"
    assert main([*kmeans, "--num", "5", "--out", str(same), "--picks", str(same)]) == 2
    assert not same.exists()
    # Each selector names the inputs it lacks; a clustering of other samples is refused.
    assert main([*kmeans[:-2], "--num", "5", "--out", str(out), "--picks", str(picks)]) == 2
    assert main(["select-baseline", "--method", "kcenter", *common[:2], *common[-2:], "--num", "5",
                 "--out", str(out), "--picks", str(picks)]) == 2
    table.iloc[:-1].to_parquet(clusters)
    assert main([*kmeans, "--num", "5", "--out", str(out), "--picks", str(picks)]) == 2


@pytest.mark.slow
def test_new_method_or_seed_reruns_no_upstream_rule(demo_workflow: Path, tmp_path: Path) -> None:
    import shutil

    import yaml
    from conftest import planned_jobs

    workdir = tmp_path / "workflow"
    shutil.copytree(demo_workflow, workdir, symlinks=True)
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    assert {"kcenter", "kmeans"} <= set(config["select"]["methods"])
    budgets, runs = len(config["select"]["budgets"]), len(config["runs"])
    extra = tmp_path / "extra.yaml"
    # Another set of methods: the comparison and the browser, which show the methods, alone
    # are redone (their sets of inputs changed).
    extra.write_text(yaml.safe_dump({"select": {"methods": ["scalselect", "random", "kcenter"]}}))
    assert planned_jobs(workdir, "--configfile", str(extra)) == {
        "plots_methods": runs, "browse": runs, "all": 1}
    # A new k-means seed reruns the clustering, once per run, and the k-means selections
    # alone (not k-center), the comparison and the browser.
    extra.write_text(yaml.safe_dump({"select": {"kmeans_seed": 1}}))
    jobs = planned_jobs(workdir, "--configfile", str(extra))
    assert jobs == {"select_kmeans_clusters": runs, "select_kmeans": budgets * runs,
                    "plots_methods": runs, "browse": runs, "all": 1}, jobs
    # Another layer for one run reruns its extraction (a result setting) and what follows.
    extra.write_text(yaml.safe_dump({"runs": {**config["runs"], "demo-llava": {
        **config["runs"]["demo-llava"], "extract": {"layer": 2}}}}))
    jobs = planned_jobs(workdir, "--configfile", str(extra))
    assert jobs["extract"] == config["extract"]["shards"] and "validate" not in jobs, jobs
    # A method new to the results (its selections and the comparison absent): only its
    # selections, the comparison and the browser run.
    for run in config["runs"]:
        for path in [*(workdir / "results" / run / "select").glob("kmeans-*"),
                     *(workdir / "results" / run / "plots").glob("methods.*")]:
            path.unlink()
    jobs = planned_jobs(workdir)
    assert jobs == {"select_kmeans_clusters": runs, "select_kmeans": budgets * runs,
                    "plots_methods": runs, "browse": runs, "all": 1}, jobs


@pytest.mark.slow
def test_demo_methods_and_layer_ablation(demo_workflow: Path) -> None:
    import yaml

    config = yaml.safe_load((demo_workflow / "config/config.yaml").read_text())
    for run in config["runs"]:
        table = pd.read_csv(demo_workflow / "results" / run / "plots" / "methods.csv")
        assert set(table["method"]) == {"ScalSelect", "Random (seed 0)", "k-center", "k-means"}
        assert (table.loc[table["method"] == "ScalSelect", "jaccard_scalselect"] == 1).all()
        assert table["subspace_retention"].between(0, 1 + 1e-9).all()
        shares = table[[c for c in table.columns if c.startswith("share:")]]
        assert np.allclose(shares.sum(axis=1), 1)
        for n in table["budget"].unique():
            picks = pd.read_parquet(demo_workflow / "results" / run / "select"
                                    / f"kcenter-{n}.json.picks.parquet")
            assert len(picks) == n
    ablation = demo_workflow / "results/layers/demo-llava-format_vs_demo-llava-format-layer2"
    table = pd.read_csv(ablation / "layer_ablation.csv")
    assert table["layer"].tolist() == [1, 2]
    assert (ablation / "layer_ablation.pdf").exists()
    manifest = json.loads(next(
        (demo_workflow / "results/demo-llava-format-layer2/extract").glob("shard-*/manifest.json")
    ).read_text())
    assert manifest["settings"]["layer"] == 2


@pytest.mark.slow
def test_baseline_selections_keep_the_dataset_format(demo_workflow: Path, tmp_path: Path) -> None:
    """A parquet run with k-center and k-means: each selection is parquet, with the
    dataset's schema, holding exactly the picked rows; a JSON run's are JSON arrays."""
    import shutil

    import pyarrow.parquet as pq
    import yaml
    from conftest import demo_parquet, snakemake

    workdir = tmp_path / "workflow"
    shutil.copytree(demo_workflow, workdir, symlinks=True)
    source = demo_parquet(workdir / "resources/demo")
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    assert {"kcenter", "kmeans"} <= set(config["select"]["methods"])
    run = "demo-parquet"
    extra = tmp_path / "parquet.yaml"
    extra.write_text(yaml.safe_dump({"runs": {**config["runs"], run: {
        "dataset": str(source.relative_to(workdir)), "image_root": "resources/demo/images",
        "format": "llava", "model": config["runs"]["demo-llava-format"]["model"],
        "extract": {"shards": 1}}}}))
    # The consumers of the picks (the methods comparison, the browser) as targets; targets
    # first (`--configfile` takes several values).
    snakemake(workdir, f"results/{run}/plots/methods.csv", f"results/{run}/browse",
              "--cores", "2", "--configfile", str(extra))

    for name, read in ((run, lambda p: pq.read_table(p).to_pylist()),
                       ("demo-llava", lambda p: json.loads(p.read_text()))):
        results = workdir / "results" / name
        ext = "parquet" if name == run else "json"
        records = read(results / f"filter/dataset.{ext}")
        n_scored = len(pd.read_parquet(results / "score/scores.parquet"))
        # 32 and 16% of the scored samples, rounded half up.
        budgets = [32, (2 * 16 * n_scored + 100) // 200]
        for method in ("kcenter", "kmeans"):
            for n in budgets:
                picks = pd.read_parquet(results / f"select/{method}-{n}.{ext}.picks.parquet")
                chosen = sorted(picks["index"])
                assert len(set(chosen)) == n, (name, method, n)
                selection = results / f"select/{method}-{n}.{ext}"
                expected = [records[i] for i in chosen]
                assert read(selection) == expected, (name, method, n)
                assert [str(r["id"]) for r in expected] == [
                    str(i) for i in picks.sort_values("index")["id"]]
                if ext == "parquet":
                    assert pq.read_schema(selection) == pq.read_schema(source)
    table = pd.read_csv(workdir / f"results/{run}/plots/methods.csv")
    assert {"k-center", "k-means"} <= set(table["method"])
    assert (workdir / f"results/{run}/browse/index.html").is_file()
