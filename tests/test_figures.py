"""Paper figures and tables: files valid at their print size, TrueType fonts embedded,
no overlapping text, number formats, composition and cross-run statistics."""

from __future__ import annotations

import itertools
import json
import re
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from PIL import Image, ImageDraw
from pypdf import PdfReader

from scalselect.cli import main
from scalselect.data.readers import load_dataset
from scalselect.data.writers import write_records
from scalselect.extract import features
from scalselect.report import comparison, composition, figures, gallery, style, tables
from scalselect.settings import ExtractSettings

SOURCES = ("coco", "gqa", "ocr_vqa", "textvqa", "vg")
DPI = 80


# --------------------------------------------------------------------------- helpers


def write_features(directory: Path, n: int, d: int, seed: int, noise: float) -> Path:
    """A shard of low-rank representations with heavy-tailed row norms."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0)
    matrix = base.standard_normal((n, 6)) @ base.standard_normal((6, d)) * 3
    matrix = matrix * base.lognormal(0, 0.6, (n, 1)) + rng.standard_normal((n, d)) * noise
    rows = pd.DataFrame({
        "index": np.arange(n, dtype=np.int64),
        "id": [features.encode_id(i) for i in range(n)],
        "status": "ok", "n_vision": 576, "n_kept": 40, "seq_len": 700,
        "truncated": False, "detail": "",
    })
    features.write_shard(directory, rows, matrix.astype(np.float32))
    return directory


def score_run(root: Path, n: int, seed: int, noise: float, budgets: list[str]) -> Path:
    """scores.parquet, spectrum.json and summary.csv written by the scoring and selection
    commands themselves."""
    shard = write_features(root / "extract" / "shard-0-of-1", n, 24, seed, noise)
    assert main(["score", "--features", str(shard),
                 "--out", str(root / "score" / "importance_scores.jsonl")]) == 0
    assert main(["select-summary", "--scores", str(root / "score" / "scores.parquet"),
                 "--budgets", *budgets, "--out", str(root / "select" / "summary.csv")]) == 0
    return root


def drawn_texts(fig) -> list:
    """The visible, non-empty texts that rendering ``fig`` draws: tick labels only for
    ticks inside the view limits (matplotlib keeps the others but skips them)."""
    fig.draw(fig.canvas.get_renderer())
    texts, tick_labels = {}, set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            eps = 1e-9 * (high - low)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_labels.update((id(tick.label1), id(tick.label2)))
                if low - eps <= tick.get_loc() <= high + eps:
                    for label in (tick.label1, tick.label2):
                        texts[id(label)] = label
    for text in fig.findobj(Text):
        if id(text) not in tick_labels:
            texts[id(text)] = text
    return [t for t in texts.values() if t.get_visible() and t.get_text().strip()
            and (t.axes is None or t.axes.get_visible())]


def text_overlaps(fig) -> list[tuple[str, str]]:
    """Pairs of drawn texts of ``fig`` whose boxes intersect, and texts that stick out of
    the figure (paired with ``"<edge>"``)."""
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in drawn_texts(fig)]
    page = fig.bbox
    outside = [(text, "<edge>") for text, box in boxes
               if box.x0 < page.x0 - 1 or box.y0 < page.y0 - 1
               or box.x1 > page.x1 + 1 or box.y1 > page.y1 + 1]
    return outside + [
        (a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if _area(box_a, box_b) > 1.0
    ]


def _area(a, b) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0) * max(height, 0)


def check_pdf(path: Path) -> None:
    """The PDF parses and every font is embedded TrueType (Type 42), none Type 3."""
    reader = PdfReader(path)
    assert len(reader.pages) == 1
    fonts = reader.pages[0]["/Resources"]["/Font"]
    assert len(fonts) >= 1
    for ref in fonts.values():
        font = ref.get_object()
        if font["/Subtype"] == "/Type0":
            font = font["/DescendantFonts"][0].get_object()
            assert font["/Subtype"] == "/CIDFontType2", font
        else:
            assert font["/Subtype"] == "/TrueType", font
        assert "/FontFile2" in font["/FontDescriptor"].get_object(), font


def check_png(path: Path, width_in: float) -> None:
    """The PNG decodes and is exactly ``width_in`` inches wide at ``DPI``."""
    with Image.open(path) as image:
        image.load()
        assert image.width == round(width_in * DPI)
        assert 0.2 * image.width < image.height < 1.2 * image.width


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = score_run(tmp_path_factory.mktemp("run"), 400, 1, 0.3, ["32", "16%", "50%"])
    rng = np.random.default_rng(3)
    records = [
        {"id": i, "messages": [{"role": "user", "content": "<image>\nDescribe."},
                               {"role": "assistant", "content": "A photo."}],
         "images": [f"{rng.choice(SOURCES, p=[.4, .2, .2, .1, .1])}/img/{i}.jpg"]}
        for i in range(400)
    ]
    write_records(root / "filter" / "dataset.json", records)
    return root


@pytest.fixture(scope="module")
def scores(run_dir: Path) -> np.ndarray:
    return pd.read_parquet(run_dir / "score" / "scores.parquet")["importance"].to_numpy()


@pytest.fixture(scope="module")
def marks(run_dir: Path) -> list[figures.BudgetMark]:
    return figures.budget_marks(pd.read_csv(run_dir / "select" / "summary.csv", dtype={"budget": str}))


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("value, text", [
    (0, "0"), (7, "7"), (950, "950"), (1234, "1.2K"), (12_345, "12K"), (100_000, "100K"),
    (999_600, "1M"), (665_298, "665K"), (2.5e6, "2.5M"), (-2500, "−2.5K"),
])
def test_format_count(value: float, text: str) -> None:
    assert style.format_count(value) == text


@pytest.mark.parametrize("value, text", [
    (1e-4, "10⁻⁴"), (2.5e-4, "2.5×10⁻⁴"), (1e6, "10⁶"), (-3e-12, "−3×10⁻¹²"), (0, "0"),
    (9.99e-5, "10⁻⁴"),
])
def test_format_power(value: float, text: str) -> None:
    assert style.format_power(value) == text


@pytest.mark.parametrize("value, text", [
    (0.5, "0.5"), (0.0123, "0.012"), (3.2e-5, "3.2×10⁻⁵"), (12, "12"), (2e5, "2×10⁵"),
])
def test_format_value(value: float, text: str) -> None:
    assert style.format_value(value) == text


@pytest.mark.parametrize("locs, labels", [
    ([0, 0.025, 0.05, 0.075, 0.1], ["0.000", "0.025", "0.050", "0.075", "0.100"]),
    ([0, 50, 100, 150], ["0", "50", "100", "150"]),
    ([-0.5, 0, 0.5], ["−0.5", "0.0", "0.5"]),
    ([0, 0.002, 0.004], ["0", "2×10⁻³", "4×10⁻³"]),
    ([0, 20000, 40000], ["0", "2×10⁴", "4×10⁴"]),
])
def test_tick_formatter(locs: list[float], labels: list[str]) -> None:
    formatter = style.TickFormatter()
    formatter.set_locs(locs)
    assert [formatter(v) for v in locs] == labels


def test_format_percent_and_latex() -> None:
    assert [style.format_percent(x) for x in (0, 0.16, 0.025, 1)] == ["0%", "16%", "2.5%", "100%"]
    assert tables.latex_number(1.2345e-4) == r"$1.23\times10^{-4}$"
    assert tables.latex_number(0.5) == "0.500"
    assert tables.latex_count(665298) == "665{,}298"
    assert tables.latex_escape("16% ocr_vqa & #1") == r"16\% ocr\_vqa \& \#1"


# --------------------------------------------------------------------------- figures


def test_figures_have_no_overlapping_text(scores: np.ndarray, marks, run_dir: Path) -> None:
    # Close budgets (labels that could collide) and a large log-scale ranking included.
    close = figures.budget_marks(pd.DataFrame({
        "budget": ["30", "32", "16%"], "n": [30, 32, 64], "fraction": [30 / 400, 0.08, 0.16],
        "score_threshold": [0.1, 0.1, 0.05]}))
    heavy = np.sort(np.random.default_rng(0).lognormal(-9, 2, 5000))[::-1]
    nine = np.array([f"source_{i % 9}" for i in range(400)], dtype=object)
    table = composition.composition_table(nine, {"Full set": np.arange(400),
                                                 "Top-32": np.arange(32)})
    colors = style.source_colors(composition.source_order(nine))
    energy = np.cumsum(np.linspace(1, 0, 300) ** 8)
    with style.paper_style():
        built = {
            "distribution": figures.score_distribution(scores, marks),
            "distribution-close": figures.score_distribution(scores, close),
            "distribution-heavy": figures.score_distribution(heavy, marks),
            **{p: figures.score_panel(p, scores, marks) for p in figures.PANELS},
            "spectrum-small": figures.spectrum([0.5, 0.8, 0.95, 1.0], 3, 0.9),
            "spectrum-large": figures.spectrum(energy / energy[-1], 40, 0.9),
            "composition-9": figures.composition(composition.share_matrix(table), colors),
        }
        for name, fig in built.items():
            assert text_overlaps(fig) == [], name
            plt.close(fig)
            if name == "ranking":
                assert fig.axes[0].get_xlim()[1] == len(scores)
            if name == "distribution-heavy":
                assert fig.axes[0].get_xscale() == "log"  # histogram over decades
    # Rarer sources than the 5 most frequent are pooled: each of those has a colour of
    # its own, none of them a method's.
    assert table["source"].nunique() == 6 and "other" in set(table["source"])


@pytest.mark.parametrize("importance", [np.full(50, 0.18), np.array([0.7, 0.3])])
def test_degenerate_scores_still_draw(importance: np.ndarray) -> None:
    marks = [figures.BudgetMark(1, 1 / len(importance), "N = 1")]
    with style.paper_style():
        for fig in [figures.score_distribution(importance, marks),
                    *(figures.score_panel(p, importance, marks) for p in figures.PANELS)]:
            assert text_overlaps(fig) == []
            plt.close(fig)


def test_plot_commands_write_valid_files(run_dir: Path) -> None:
    out = run_dir / "plots"
    common = ["--out-dir", str(out), "--formats", "pdf", "png", "--dpi", str(DPI)]
    score, summary = str(run_dir / "score" / "scores.parquet"), str(run_dir / "select" / "summary.csv")
    assert main(["plot", "scores", "--scores", score,
                 "--spectrum", str(run_dir / "score" / "spectrum.json"), *common]) == 0
    assert main(["plot", "budgets", "--scores", score, "--summary", summary, *common]) == 0
    assert main(["plot", "composition", "--dataset", str(run_dir / "filter" / "dataset.json"),
                 "--scores", score, "--summary", summary, "--random-seeds", "0", "1", *common]) == 0
    single = ["score_histogram", "score_violin", "spectrum", "score_ranking",
              "score_cumulative", "composition"]
    for name in [*single, "score_distribution"]:
        check_pdf(out / f"{name}.pdf")
        check_png(out / f"{name}.png", style.DOUBLE_COLUMN if name == "score_distribution"
                  else style.SINGLE_COLUMN)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}.{f}" for n in [*single, "score_distribution"] for f in ("pdf", "png")]
        + ["budgets.csv", "budgets.tex", "composition.csv"])
    # Same inputs, same bytes: figures are reproducible files.
    before = (out / "spectrum.pdf").read_bytes()
    assert main(["plot", "scores", "--scores", score,
                 "--spectrum", str(run_dir / "score" / "spectrum.json"), *common]) == 0
    assert (out / "spectrum.pdf").read_bytes() == before


def test_budget_table(run_dir: Path) -> None:
    out = run_dir / "plots-table"
    main(["plot", "budgets", "--scores", str(run_dir / "score" / "scores.parquet"),
          "--summary", str(run_dir / "select" / "summary.csv"), "--out-dir", str(out),
          "--formats", "png", "--dpi", str(DPI)])
    table = pd.read_csv(out / "budgets.csv", dtype={"budget": str})
    assert table["budget"].tolist() == ["32", "16%", "50%"]
    assert table["n"].tolist() == [32, 64, 200]
    scores = pd.read_parquet(run_dir / "score" / "scores.parquet")
    assert table["score_threshold"].iloc[1] == scores["importance"].iloc[63]
    tex = (out / "budgets.tex").read_text().splitlines()
    assert tex[0] == r"\begin{tabular}{lrrr}" and tex[1] == r"\toprule"
    assert tex[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert tex[5].startswith(r"16\% & 64 & 16.0\% & ")


def test_composition_counts(run_dir: Path) -> None:
    dataset = load_dataset(run_dir / "filter" / "dataset.json")
    sources = composition.sample_sources(dataset.path)
    scores = pd.read_parquet(run_dir / "score" / "scores.parquet")
    summary = pd.read_csv(run_dir / "select" / "summary.csv", dtype={"budget": str})
    subsets = composition.selection_subsets(scores, summary, [0, 1], len(dataset))
    assert list(subsets)[:4] == ["Full set", "Top-32", "Random-32 (seed 0)", "Random-32 (seed 1)"]
    table = composition.composition_table(sources, subsets)
    top = set(scores.sort_values("rank")["index"][:32])
    coco_top = sum(dataset.sample(i).source == "coco" for i in top)
    row = table[(table["subset"] == "Top-32") & (table["source"] == "coco")]
    assert int(row["count"].iloc[0]) == coco_top
    assert np.allclose(table.groupby("subset", sort=False)["share"].sum(), 1.0)
    assert table[table["subset"] == "Full set"]["count"].sum() == 400
    # Sources in decreasing frequency in the full set.
    assert table["source"].iloc[0] == "coco"


def test_summary_with_wrong_columns_is_a_clear_error(run_dir: Path, tmp_path: Path, caplog) -> None:
    bad = tmp_path / "summary.csv"
    bad.write_text("budget,n\n32,32\n")
    code = main(["plot", "budgets", "--scores", str(run_dir / "score" / "scores.parquet"),
                 "--summary", str(bad), "--out-dir", str(tmp_path)])
    assert code == 2
    assert "expected ('budget', 'n', 'fraction', 'score_threshold')" in caplog.text


# --------------------------------------------------------------------------- across runs


def test_spearman_and_jaccard_against_definitions() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200)
    y = x + rng.standard_normal(200)
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731 - no ties here
    assert comparison.spearman(x, y) == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])
    assert comparison.spearman(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(
        np.sqrt(3) / 2)
    # Random subsets overlap as the expectation says (on average).
    draws = [comparison.jaccard(rng.choice(1000, 100, replace=False),
                                rng.choice(1000, 100, replace=False)) for _ in range(300)]
    assert np.mean(draws) == pytest.approx(comparison.random_jaccard(100, 100, 1000), rel=0.1)


def test_plot_compare(tmp_path: Path, run_dir: Path) -> None:
    other = score_run(tmp_path / "other", 400, 2, 0.6, ["32"])
    third = score_run(tmp_path / "third", 400, 3, 2.0, ["32"])
    dataset = run_dir / "filter" / "dataset.json"
    out = tmp_path / "compare"
    runs = [("a", run_dir), ("b", other), ("c", third)]
    args = ["plot-compare", "--budgets", "32", "16%", "--out-dir", str(out),
            "--formats", "pdf", "png", "--dpi", str(DPI)]
    two = [x for name, root in runs[:2]
           for x in ("--run", name, str(root / "score" / "scores.parquet"), str(dataset))]
    assert main([*args, *two]) == 0
    table = pd.read_csv(out / "comparison.csv")
    a = pd.read_parquet(run_dir / "score" / "scores.parquet").sort_values("rank")
    b = pd.read_parquet(other / "score" / "scores.parquet").sort_values("rank")
    top_a, top_b = set(a["index"][:64]), set(b["index"][:64])
    assert table["jaccard@16%"].iloc[0] == pytest.approx(len(top_a & top_b) / len(top_a | top_b))
    merged = a.merge(b, on="index")
    expected = np.corrcoef(merged["importance_x"].rank(), merged["importance_y"].rank())[0, 1]
    assert table["spearman"].iloc[0] == pytest.approx(expected)
    assert table["n_common"].iloc[0] == 400
    for name in ("overlap", "rank_agreement"):
        check_pdf(out / f"{name}.pdf")
        check_png(out / f"{name}.png", style.SINGLE_COLUMN)
    assert r"Spearman $\rho$" in (out / "comparison.tex").read_text()
    # Three runs: a row per pair and the correlation matrix.
    three = [x for name, root in runs
             for x in ("--run", name, str(root / "score" / "scores.parquet"), str(dataset))]
    assert main([*args, *three]) == 0
    assert len(pd.read_csv(out / "comparison.csv")) == 3
    check_png(out / "rank_agreement.png", style.SINGLE_COLUMN)


def test_plot_compare_refuses_different_datasets(tmp_path: Path, run_dir: Path, caplog) -> None:
    other = tmp_path / "dataset.json"
    write_records(other, json.loads((run_dir / "filter" / "dataset.json").read_text())[:-1])
    scores = str(run_dir / "score" / "scores.parquet")
    code = main(["plot-compare", "--budgets", "32", "--out-dir", str(tmp_path),
                 "--run", "a", scores, str(run_dir / "filter" / "dataset.json"),
                 "--run", "b", scores, str(other)])
    assert code == 2
    assert "same filtered dataset" in caplog.text


def test_overlap_check_catches_collisions() -> None:
    with style.paper_style():
        fig, ax = style.new_figure()
        ax.set_xticks([0, 0.01], ["a long label", "another long label"])
        assert ("a long label", "another long label") in text_overlaps(fig)
        ax.set_xticks([0, 1], ["a", "b"])
        ax.text(1.4, 0.5, "outside the page", transform=ax.transAxes)
        assert text_overlaps(fig) == [("outside the page", "<edge>")]


# --------------------------------------------------------------------------- gallery


def write_image_dataset(root: Path, n: int) -> Path:
    """Images of several sizes and aspect ratios (Pillow-drawn JPEGs) and their records."""
    rng = np.random.default_rng(5)
    sizes = [(640, 480), (300, 500), (500, 500), (800, 400)]
    records = []
    for i in range(n):
        width, height = sizes[i % len(sizes)]
        image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(5):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            draw.ellipse((x - 40, y - 40, x + 40, y + 40),
                         fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        path = f"{SOURCES[i % 5]}/{i}.jpg"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / path)
        records.append({"id": f"s{i}", "messages": [
            {"role": "user", "content": "<image>\nWhat is in the image?"},
            {"role": "assistant", "content": "Circles on a plain background."}],
            "images": [path]})
    write_records(root / "dataset.json", records)
    return root / "dataset.json"


def test_model_view_is_the_processor_crop(tmp_path: Path) -> None:
    from transformers import AutoProcessor

    from scalselect.demo.tinymodels import build_tiny_model

    processor = AutoProcessor.from_pretrained(build_tiny_model("llava", tmp_path / "llava"))
    image = Image.new("RGB", (640, 480))
    ImageDraw.Draw(image).rectangle((80, 0, 559, 479), fill="white")
    view = gallery.model_view(image, processor.image_processor)
    # CLIP: shorter side resized, centre square cropped: the white square exactly.
    assert view.size == (480, 480)
    assert np.asarray(view).min() == 255
    qwen = AutoProcessor.from_pretrained(build_tiny_model("qwen3-vl", tmp_path / "qwen"))
    assert gallery.model_view(image, qwen.image_processor).size == (640, 480)


@pytest.mark.slow
@pytest.mark.parametrize("family, model_type", [("llava", "llava"), ("qwen3-vl", "qwen")])
def test_gallery_shows_the_tokens_extraction_kept(
    tmp_path: Path, family: str, model_type: str
) -> None:
    from scalselect.demo.tinymodels import build_tiny_model

    model = build_tiny_model(family, tmp_path / family)
    dataset = write_image_dataset(tmp_path / "data", 10)
    shard = tmp_path / "extract" / "shard-0-of-1"
    settings = ["--min-image-tokens", "16", "--max-image-tokens", "64"]
    assert main(["extract", "--model", str(model), "--model-type", model_type,
                 "--dataset", str(dataset), "--image-root", str(dataset.parent),
                 "--out", str(shard), "--num-workers", "0", "--cache-dir",
                 str(tmp_path / "cache"), *settings]) == 0
    assert main(["score", "--features", str(shard),
                 "--out", str(tmp_path / "score" / "importance_scores.jsonl")]) == 0
    scores = pd.read_parquet(tmp_path / "score" / "scores.parquet").sort_values("rank")
    rows = features.load_rows(shard).set_index("index")
    highest, lowest = gallery.gallery_entries(
        dataset, "auto", dataset.parent, scores, 3,
        str(model), ExtractSettings(model_type, min_image_tokens=16, max_image_tokens=64))
    assert [e.rank for e in highest] == [1, 2, 3]
    assert [e.rank for e in lowest] == [10, 9, 8]
    for entry in highest + lowest:
        index = int(scores["index"].iloc[entry.rank - 1])
        assert entry.index == index
        grid_rows, grid_cols = entry.grid
        assert grid_rows * grid_cols == rows.loc[index, "n_vision"]
        assert len(entry.kept) == rows.loc[index, "n_kept"]
        assert entry.kept.max() < grid_rows * grid_cols
        width, height = entry.image.size
        if model_type == "qwen":  # the dynamic grid follows the image's aspect ratio
            assert abs(grid_cols / grid_rows - width / height) < 0.35
        else:
            assert grid_rows == grid_cols and width == height
    out = tmp_path / "plots"
    assert main(["plot", "gallery", "--dataset", str(dataset), "--image-root",
                 str(dataset.parent), "--scores", str(tmp_path / "score" / "scores.parquet"),
                 "--model", str(model), "--model-type", model_type, "--samples", "3",
                 *settings, "--out-dir", str(out), "--dpi", str(DPI)]) == 0
    check_pdf(out / "attention_gallery.pdf")
    check_png(out / "attention_gallery.png", style.DOUBLE_COLUMN)
    # Each sample alone for the browser, named by its dataset index.
    shown = [int(scores["index"].iloc[e.rank - 1]) for e in highest + lowest]
    assert sorted(p.name for p in (out / "attention_tokens").iterdir()) == sorted(
        [*(f"{i}.png" for i in shown), "index.js"])
    index = (out / "attention_tokens/index.js").read_text()
    assert index == f"ScalBrowse.tokens({json.dumps(shown, separators=(',', ':'))});\n"
    with style.paper_style():
        assert text_overlaps(figures.attention_gallery(highest, lowest)) == []


# --------------------------------------------------------------------------- workflow

RUN_FIGURES = ("score_histogram", "score_violin", "spectrum", "score_ranking",
               "score_cumulative", "composition")
DOUBLE_FIGURES = ("score_distribution", "attention_gallery")


@pytest.mark.slow
def test_demo_produces_every_figure_and_the_report(demo_workflow: Path, tmp_path: Path) -> None:
    import yaml
    from conftest import snakemake

    config = yaml.safe_load((demo_workflow / "config/config.yaml").read_text())
    dpi = config["plots"].get("dpi", 300)
    for run in config["runs"]:
        plots = demo_workflow / "results" / run / "plots"
        for name in RUN_FIGURES + DOUBLE_FIGURES:
            check_pdf(plots / f"{name}.pdf")
            with Image.open(plots / f"{name}.png") as image:
                width = style.DOUBLE_COLUMN if name in DOUBLE_FIGURES else style.SINGLE_COLUMN
                assert image.width == round(width * dpi), (run, name)
        summary = pd.read_csv(demo_workflow / "results" / run / "select" / "summary.csv")
        assert len(pd.read_csv(plots / "budgets.csv")) == len(summary)
        assert "\\toprule" in (plots / "budgets.tex").read_text()
        shares = pd.read_csv(plots / "composition.csv")
        assert {"coco", "gqa", "ocr_vqa", "textvqa", "vg"} <= set(shares["source"])
    compare = demo_workflow / "results" / "compare" / "demo-llava_vs_demo-qwen"
    for name in ("overlap", "rank_agreement"):
        check_pdf(compare / f"{name}.pdf")
    assert len(pd.read_csv(compare / "comparison.csv")) == 1
    # A zip: the selection browsers are folders (report(directory(...), htmlindex=...)),
    # which a single-file HTML report cannot hold.
    snakemake(demo_workflow, "--report", str(tmp_path / "report.zip"))
    with zipfile.ZipFile(tmp_path / "report.zip") as report:
        names = report.namelist()
        (index,) = [name for name in names if name.endswith("/report.html")]
        html = report.read(index).decode()
    assert "score_distribution.png" in html and "attention_gallery.png" in html
    browsers = [name for name in names if name.endswith("/data/samples.js")]
    assert len(browsers) == len(config["runs"]), browsers
    # Every caption rendered: no reStructuredText error messages in the report.
    assert "system-message" not in html


@pytest.mark.slow
def test_new_budget_redraws_only_budget_figures(demo_workflow: Path, tmp_path: Path) -> None:
    import yaml
    from conftest import planned_jobs

    config = yaml.safe_load((demo_workflow / "config/config.yaml").read_text())
    extra = tmp_path / "budgets.yaml"
    extra.write_text(yaml.safe_dump({"select": {"budgets": [*config["select"]["budgets"], 20]}}))
    jobs = planned_jobs(demo_workflow, "--configfile", str(extra))
    runs = len(config["runs"])
    # Two comparison groups: the runs on dataset.json, and on dataset_llava.json.
    assert jobs.get("plots") == runs and jobs.get("plots_compare") == 2, jobs
    # The baselines select the new budget; k-means reuses its clustering (not refitted).
    assert jobs.get("select_kcenter") == jobs.get("select_kmeans") == runs, jobs
    # The run that exports its top-N (demo-llava) exports the new one.
    assert jobs.get("select_export") == 1, jobs
    assert set(jobs) <= {"select", "select_random", "select_summary", "select_kcenter",
                         "select_kmeans", "select_export", "plots", "plots_methods",
                         "plots_compare", "plots_layers", "browse", "all"}, jobs


def test_svg_is_vector_with_editable_text(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ElementTree

    with style.paper_style():
        fig = figures.spectrum([0.5, 0.9, 1.0], 2, 0.9)
        (svg,) = style.save_figure(fig, tmp_path / "spectrum", ["svg"])
    root = ElementTree.parse(svg).getroot()
    assert root.get("width") == f"{style.SINGLE_COLUMN * 72:g}pt"
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "Spectral energy" in texts


@pytest.mark.slow
def test_demo_runs_give_each_source_one_colour(demo_workflow: Path) -> None:
    """Every run's browser colours a source alike, and every run's composition lists its
    sources in the configuration's order (results/sources.json), whatever its own counts."""
    order = json.loads((demo_workflow / "results/sources.json").read_text())["sources"]
    seen: dict[str, set[str]] = {}
    runs = sorted(p.parent.parent for p in demo_workflow.glob("results/*/browse/index.html"))
    assert len(runs) == 4
    for run in runs:
        page = (run / "browse/index.html").read_text()
        config = json.loads(re.search(
            r'<script type="application/json" id="config">(.*?)</script>', page, re.S).group(1))
        for source in config["sources"]:
            seen.setdefault(source["name"], set()).add(source["color"])
        listed = list(dict.fromkeys(pd.read_csv(run / "plots/composition.csv")["source"]))
        assert listed == [s for s in order if s in listed], (run.name, listed)
    assert seen and all(len(colors) == 1 for colors in seen.values()), seen
    assert len({color for (color,) in seen.values()}) == len(seen)
