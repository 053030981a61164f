"""What the figures must say (issue 11): the spectrum's legend off the k line, the
gallery's legend for kept and dropped tokens, a percentage on every composition segment;
and (issue 32) one colour per source and per method across figures and runs, never one
for both, and budgets shown as asked."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex
from PIL import Image

from scalselect.cli import main
from scalselect.report import composition, diagnostics, figures, style


def test_spectrum_legend_stays_off_the_plot() -> None:
    energy = np.cumsum(np.linspace(1, 0, 300) ** 8)
    for cumulative, k in (([0.5, 0.8, 0.95, 1.0], 3), (energy / energy[-1], 40)):
        with style.paper_style():
            fig = figures.spectrum(cumulative, k, 0.9)
            fig.draw_without_rendering()
            renderer = fig.canvas.get_renderer()
            (ax,) = fig.axes
            legends = fig.legends + ([ax.get_legend()] if ax.get_legend() else [])
            (legend,) = legends
            box, plot = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
            assert box.y0 >= plot.y1 - 1, (box, plot)  # above the axes, not on the k line
            labels = [t.get_text() for t in legend.get_texts()]
            assert f"k = {k}" in labels
            plt.close(fig)


def test_gallery_legend_names_kept_and_dropped_tokens() -> None:
    image = Image.new("RGB", (64, 48), "navy")
    entry = figures.GalleryEntry(image, (3, 4), np.array([0, 5, 6]), 0.5, 1, 7)
    with style.paper_style():
        fig = figures.attention_gallery([entry], [entry])
        labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        plt.close(fig)
    assert any("kept" in label for label in labels)
    assert any("dropped" in label for label in labels)


def test_token_overlay_dims_the_dropped_tokens_only() -> None:
    """A white image on a 2 x 3 grid with tokens 0, 4 and 5 kept: the dropped cells are
    drawn dark, the kept ones white (read at each cell's centre)."""
    entry = figures.GalleryEntry(Image.new("RGB", (90, 60), "white"), (2, 3),
                                 np.array([0, 4, 5]), 0.25, 3, 11)
    with style.paper_style():
        fig = figures.token_overlay(entry)
        fig.canvas.draw()
        pixels = np.asarray(fig.canvas.buffer_rgba())
        ax = fig.axes[0]
        for token in range(6):
            row, col = divmod(token, 3)
            x, y = ax.transData.transform((30 * col + 15, 30 * row + 15))
            grey = pixels[pixels.shape[0] - 1 - round(y), round(x), :3].mean()
            assert (grey > 240) if token in (0, 4, 5) else (grey < 120), (token, grey)
        assert "kept 3/6 tokens" in ax.get_xlabel()
        plt.close(fig)


def test_every_composition_segment_has_its_percentage_without_overlaps() -> None:
    shares = pd.DataFrame(
        {"coco": [0.5, 0.8], "gqa": [0.3, 0.12], "vg": [0.15, 0.04], "ocr_vqa": [0.03, 0.02],
         "textvqa": [0.015, 0.015], "other": [0.005, 0.005]},
        index=["Full set", "Top-100"],
    )
    with style.paper_style():
        fig = figures.composition(shares, style.source_colors(list(shares.columns)))
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (ax,) = fig.axes
        texts = [t for t in ax.texts if t.get_visible()]
        expected = ["50%", "30%", "15%", "3%", "2%", "0.5%", "80%", "12%", "4%", "2%", "2%",
                    "0.5%"]
        assert sorted(t.get_text() for t in texts) == sorted(expected)
        assert all(t.get_text().endswith("%") for t in texts)
        boxes = [t.get_window_extent(renderer) for t in texts]
        page = fig.bbox
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), (a, b)
        assert all(page.x0 <= b.x0 and b.x1 <= page.x1 and b.y1 <= page.y1 for b in boxes)
        plt.close(fig)


def bar_colors(ax) -> dict[str, str]:
    """Label -> face colour of each labelled bar series drawn on ``ax``."""
    return {bars.get_label(): to_hex(bars.patches[0].get_facecolor())
            for bars in ax.containers if not bars.get_label().startswith("_")}


def report(sources: dict[str, int], text_only: dict[str, int]) -> dict:
    """The parts of a validation report that `sources` reads (and the keys that make it
    one): valid samples per source, and the text-only ones among them."""
    return {"dataset": "d.json", "dataset_sha256": "0", "format": "sharegpt",
            "num_samples": sum(sources.values()), "invalid": [], "text_only": [],
            "sources": sources, "text_only_sources": text_only,
            "num_text_only": sum(text_only.values())}


def composition_colors(sources: np.ndarray, order: list[str]) -> dict[str, str]:
    """Source -> colour in the composition figure of a run with these sources."""
    table = composition.composition_table(
        sources, {"Full set": np.arange(len(sources)), "Top-10": np.arange(10)}, order)
    with style.paper_style():
        fig = figures.composition(composition.share_matrix(table), style.source_colors(order))
        colors = bar_colors(fig.axes[0])
        plt.close(fig)
    return colors


def methods_colors(sources: np.ndarray, order: list[str]) -> tuple[dict, dict]:
    """Method -> colour in panel (a) and source -> colour in panel (f) of the methods
    comparison of a run with these sources (every method, two random seeds)."""
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((len(sources), 4)).astype(np.float32)
    space = diagnostics.Space(np.arange(len(sources)), matrix, np.eye(4)[:, :2], 1.0)
    subsets = {(10, label): rng.choice(len(sources), 10, replace=False) for label in (
        "ScalSelect", "Random (seed 0)", "Random (seed 1)", "k-center", "k-means")}
    table = diagnostics.methods_table(space, subsets, sources, order)
    table.insert(1, "budget_label", "N = 10")
    with style.paper_style():
        fig = figures.methods_comparison(table, style.source_colors(order))
        colors = bar_colors(fig.axes[0]), bar_colors(fig.axes[5])
        plt.close(fig)
    return colors


def test_a_source_has_one_colour_across_figures_and_runs_and_never_a_methods(
    tmp_path: Path,
) -> None:
    """Two runs of one configuration with their sources in different frequency orders:
    each source has the same colour in both runs' composition figures and in the methods
    comparison's panel (f), and no method's bars share it (the issue: a source blue in
    composition.png, orange in panel (f) where k-center was orange)."""
    # Run 0's text-only samples all come from one source of their own (source_field).
    reports = [report({"coco": 50, "vg": 30, "gqa": 20, "chat": 10}, {"chat": 10, "coco": 2}),
               report({"vg": 60, "ocr_vqa": 15, "coco": 5}, {})]
    paths = []
    for i, content in enumerate(reports):
        paths.append(tmp_path / f"report{i}.json")
        paths[-1].write_text(json.dumps(content))
    out = tmp_path / "sources.json"
    # Run 0 drops its text-only samples, run 1 has none.
    assert main(["sources", "--run", str(paths[0]), "drop", "--run", str(paths[1]), "keep",
                 "--out", str(out)]) == 0
    order = composition.read_sources(out)
    assert order == ["vg", "coco", "gqa", "ocr_vqa"]  # 90, 53, 20, 15; text-only all dropped
    runs = [np.array(["coco"] * 50 + ["vg"] * 30 + ["gqa"] * 20, dtype=object),
            np.array(["vg"] * 60 + ["ocr_vqa"] * 15 + ["coco"] * 5, dtype=object)]
    methods, shares = methods_colors(runs[0], order)
    seen: dict[str, set[str]] = {}
    for colors in (*(composition_colors(sources, order) for sources in runs), shares):
        for source, color in colors.items():
            seen.setdefault(source, set()).add(color)
    assert set(shares) == {"coco", "vg", "gqa"} and set(seen) == {"coco", "vg", "gqa", "ocr_vqa"}
    assert all(len(colors) == 1 for colors in seen.values()), seen
    source_colors = {color for (color,) in seen.values()}
    assert len(source_colors) == 4
    assert set(methods) == {"ScalSelect", "Random (seed 0)", "Random (seed 1)", "k-center",
                            "k-means"}
    # The seeds of random share its colour (told apart by hatching), the others differ.
    assert methods["Random (seed 0)"] == methods["Random (seed 1)"]
    assert len(set(methods.values())) == 4
    assert not source_colors & set(methods.values())


def test_budgets_asked_as_percentages_are_shown_as_asked_and_resolved() -> None:
    """20 and 25% of 146 scored samples (36.5, rounded half up: 37)."""
    summary = pd.DataFrame({"budget": ["20", "25%"], "n": [20, 37],
                            "fraction": [20 / 146, 37 / 146], "score_threshold": [0.2, 0.1]})
    marks = figures.budget_marks(summary)
    assert [m.label for m in marks] == ["N = 20 (13.7%)", "25% (N = 37)"]
    importance = np.sort(np.random.default_rng(1).random(146))[::-1]
    with style.paper_style():
        fig = figures.score_panel("ranking", importance, marks)
        legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        plt.close(fig)
    assert "25% (N = 37)" in legend
    scores = pd.DataFrame({"index": np.arange(146), "rank": np.arange(1, 147),
                           "importance": importance})
    subsets = composition.selection_subsets(scores, summary, [0], 146)
    assert list(subsets) == ["Full set", "Top-20", "Random-20", "Top-25% (N = 37)",
                             "Random-25% (N = 37)"]
    # A count and a percentage of the same size are one selection, named as the percentage.
    both = pd.DataFrame({"budget": ["37", "25%"], "n": [37, 37], "fraction": [37 / 146] * 2,
                         "score_threshold": [0.1, 0.1]})
    assert [m.label for m in figures.budget_marks(both)] == ["25% (N = 37)"]
