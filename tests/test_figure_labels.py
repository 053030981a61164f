"""What the figures must say (issue 11): the spectrum's legend off the k line, the
gallery's legend for kept and dropped tokens, a percentage on every composition segment."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from scalselect import figures, style


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
    entry = figures.GalleryEntry(image, (3, 4), np.array([0, 5, 6]), 0.5, 1)
    with style.paper_style():
        fig = figures.attention_gallery([entry], [entry])
        labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        plt.close(fig)
    assert any("kept" in label for label in labels)
    assert any("dropped" in label for label in labels)


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
