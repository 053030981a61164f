"""Training-free comparison measures against hand-made cases and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from scalselect.report import diagnostics


def dominant_data(seed: int = 0, n: int = 300, d: int = 12, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Rows with ``k`` strong directions (a random orthonormal set) plus weak noise; the
    top-k right singular vectors of the full set, by a dense SVD."""
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.standard_normal((d, d)))[0]
    weights = np.r_[[20.0, 12.0, 8.0], np.full(d - k, 0.5)]
    matrix = (rng.standard_normal((n, d)) * weights) @ directions.T
    _, _, vt = np.linalg.svd(matrix, full_matrices=False)
    return matrix, vt[:k].T


def test_subspace_retention() -> None:
    matrix, basis = dominant_data()
    # The full set spans its own dominant subspace.
    assert diagnostics.subspace_retention(basis, matrix) == pytest.approx(1.0, abs=1e-12)
    # A superset of the top-k directions: those directions, strongly, plus weak rows.
    strong = basis.T * np.array([[9.0], [7.0], [5.0]])
    superset = np.vstack([strong, 0.01 * matrix[:40]])
    assert diagnostics.subspace_retention(basis, superset) == pytest.approx(1.0, abs=1e-6)
    # Missing one direction (the weak rows have no component in the top-k subspace):
    # its cosine is 0, the others' 1 -> 2/3 for k = 3.
    weak = 0.01 * (matrix[:40] - matrix[:40] @ basis @ basis.T)
    missing = np.vstack([strong[:2], weak])
    retention = diagnostics.subspace_retention(basis, missing)
    assert retention < 1.0 and retention == pytest.approx(2 / 3, abs=1e-3)
    # Rank-deficient subset (one row): at most one direction retained.
    assert diagnostics.subspace_retention(basis, strong[:1]) == pytest.approx(1 / 3)


def test_energy_ratio() -> None:
    matrix, basis = dominant_data()
    energy = float(np.square(matrix @ basis).sum())
    assert diagnostics.energy_ratio(basis, energy, len(matrix), matrix) == pytest.approx(1.0)
    norms = np.square(matrix @ basis).sum(1)
    high = matrix[np.argsort(-norms)[:30]]
    expected = norms[np.argsort(-norms)[:30]].mean() / norms.mean()
    assert diagnostics.energy_ratio(basis, energy, len(matrix), high) == pytest.approx(expected)
    assert expected > 1


def brute_force_nearest(queries: np.ndarray, selected: np.ndarray) -> np.ndarray:
    q, s = queries.astype(np.float64), selected.astype(np.float64)
    return np.array([np.sqrt(((s - row) ** 2).sum(1)).min() for row in q])


def test_coverage_equals_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    matrix = (rng.standard_normal((500, 9)) * 3 + 1).astype(np.float32)
    chosen = rng.choice(500, 37, replace=False)
    # Small blocks, so that the blocking over both queries and selected rows is used.
    monkeypatch.setattr(diagnostics, "DISTANCE_BLOCK", 100)
    got = diagnostics.nearest_distances(matrix, matrix[chosen], device="cpu")
    expected = brute_force_nearest(matrix, matrix[chosen])
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert np.all(got[chosen] < 1e-3)

    space = diagnostics.Space(np.arange(500) * 2, matrix, np.eye(9)[:, :2], 1.0)
    exact = diagnostics.measures(space, chosen * 2, chosen * 2)
    assert exact["coverage_queries"] == 500 and exact["jaccard_scalselect"] == 1.0
    assert exact["coverage_mean"] == pytest.approx(expected.mean(), rel=1e-5)
    assert exact["coverage_max"] == pytest.approx(expected.max(), rel=1e-5)
    # Above the exact limit: a fixed, seeded sample of query samples.
    monkeypatch.setattr(diagnostics, "COVERAGE_EXACT_MACS", 1000)
    monkeypatch.setattr(diagnostics, "COVERAGE_QUERIES", 50)
    sampled = diagnostics.measures(space, chosen * 2, chosen[:10] * 2)
    queries = np.sort(np.random.default_rng(diagnostics.COVERAGE_SEED).choice(500, 50, replace=False))
    assert sampled["coverage_queries"] == 50
    assert sampled["coverage_mean"] == pytest.approx(expected[queries].mean(), rel=1e-5)
    assert sampled["jaccard_scalselect"] == pytest.approx(10 / 37)


def test_methods_table_shares() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((40, 5)).astype(np.float32)
    space = diagnostics.Space(np.arange(40), matrix, np.eye(5)[:, :2], float(np.square(matrix[:, :2]).sum()))
    sources = np.array(["coco"] * 30 + ["vg"] * 10, dtype=object)
    subsets = {(10, "ScalSelect"): np.arange(30, 40), (10, "Random (seed 0)"): np.arange(0, 10)}
    table = diagnostics.methods_table(space, subsets, sources)
    assert table["method"].tolist() == ["ScalSelect", "Random (seed 0)"]
    assert table["share:vg"].tolist() == [1.0, 0.0] and table["share:coco"].tolist() == [0.0, 1.0]
    assert table["jaccard_scalselect"].tolist() == [1.0, 0.0]


def test_plot_methods_and_layers_commands(tmp_path) -> None:
    import json

    import pandas as pd
    from test_baselines import write_shard

    from scalselect.cli import main
    from scalselect.score import leverage
    from scalselect.score.leverage import Backend, Preprocessing

    rng = np.random.default_rng(2)
    n = 60
    records = [{"id": f"s{i}", "messages": [{"role": "user", "content": "<image>\nHi"},
                                            {"role": "assistant", "content": "Yes."}],
                "images": [f"{'coco' if i % 3 else 'vg'}/{i}.jpg"]} for i in range(n)]
    (tmp_path / "dataset.json").write_text(json.dumps(records))
    runs = []
    for layer in (1, 2):
        root = tmp_path / f"layer{layer}"
        matrix = (rng.standard_normal((n, 8)) * [6, 4, 2, 1, 1, 1, 1, 1]).astype(np.float32)
        shard = write_shard(root / "extract/shard-0-of-1", matrix, np.arange(n), set())
        table, model = leverage.leverage_scores(
            leverage.open_sources([shard]), Preprocessing(), 0.9, Backend("numpy"))
        leverage.write_scores(root / "importance_scores.jsonl", table)  # and scores.parquet
        model.save(root / "model.npz")
        leverage.write_spectrum(root / "spectrum.json", model)
        runs.append((root, shard))
    root, shard = runs[0]
    common = ["--dataset", str(tmp_path / "dataset.json"), "--features", str(shard),
              "--model", str(root / "model.npz"), "--scores", str(root / "scores.parquet")]
    assert main(["select-baseline", "--method", "kcenter", *common, "--num", "10",
                 "--out", str(root / "kcenter-10.json"),
                 "--picks", str(root / "kcenter-10.json.picks.parquet")]) == 0
    out = tmp_path / "plots"
    assert main(["plot-methods", *common, "--budgets", "10", "25%", "--random-seeds", "0", "1",
                 "--picks", str(root / "kcenter-10.json.picks.parquet"), "--out-dir", str(out),
                 "--formats", "png"]) == 0
    table = pd.read_csv(out / "methods.csv")
    assert table["method"].tolist() == ["ScalSelect", "Random (seed 0)", "Random (seed 1)",
                                        "k-center", "ScalSelect", "Random (seed 0)",
                                        "Random (seed 1)"]
    assert table["coverage_queries"].tolist() == [n] * 7
    assert set(table.columns) >= {"share:coco", "share:vg"} and (out / "methods.png").exists()
    # The percentage as asked and as resolved (25% of 60 scored: 15), in both tables.
    assert table["budget"].tolist() == [10] * 4 + [15] * 3
    assert table["budget_label"].tolist() == ["N = 10"] * 4 + ["25% (N = 15)"] * 3
    tex = (out / "methods.tex").read_text()
    assert "\\toprule" in tex and "25\\% (N = 15) & ScalSelect" in tex

    arguments = [word for layer, (root, _) in zip((1, 2), runs) for word in (
        "--run", f"run{layer}", str(layer), str(root / "spectrum.json"), str(root / "scores.parquet"))]
    assert main(["plot-layers", *arguments, "--budgets", "10", "20%",
                 "--out-dir", str(out), "--formats", "pdf", "png"]) == 0
    ablation = pd.read_csv(out / "layer_ablation.csv")
    assert ablation["layer"].tolist() == [1, 2]
    expected = len(np.intersect1d(pd.read_parquet(runs[0][0] / "scores.parquet")["index"][:10],
                                  pd.read_parquet(runs[1][0] / "scores.parquet")["index"][:10]))
    assert ablation["jaccard@10 vs layer 2"].iloc[0] == pytest.approx(expected / (20 - expected))
    assert (out / "layer_ablation.pdf").exists()
