"""What the figures must say (issue 11): the spectrum's legend off the k line, the
gallery's legend for kept and dropped tokens, a percentage on every composition segment."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from scalselect.report import figures, style


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
        fig = figures.composition(shares)
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
