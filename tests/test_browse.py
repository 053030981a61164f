"""The selection browser (scalselect/report/browse.py): its data files against the selection
files `select` writes, and the page in a real browser (headless Chromium from Debian's
package, driven through its command line: the page's state lives in the URL, so a
dumped DOM after loading `index.html#source=..&budget=..` shows what a user sees)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from scalselect.budgets import resolve_budget
from scalselect.cli import main
from scalselect.data.readers import load_dataset
from scalselect.data.writers import write_records
from scalselect.errors import UserError
from scalselect.report import browse
from scalselect.score import leverage
from scalselect.select import selection

SOURCES = ("coco", "gqa", "vg")
N_RECORDS, UNSCORED = 14, 5
BUDGETS, SEEDS = ["4", "50%"], [0, 3]
KCENTER = [0, 2, 9, 11]  # the hand-made k-center picks of budget 4
CONFIG_SOURCES = ("vg", "ocr_vqa", "gqa", "coco")


def make_run(root: Path) -> dict:
    """A filtered dataset of real images from three sources, its scores (one record
    unscored), top-N and random-N selection files written by `select`, and k-center
    picks of budget 4."""
    images = root / "images"
    records = []
    for i in range(N_RECORDS):
        rel = f"{SOURCES[i % 3]}/img {i}.png"  # a space: URLs must be quoted
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (300 + 10 * i, 200), (20 * i, 90, 160)).save(images / rel)
        records.append({
            "id": f"s-{i}",
            "messages": [{"role": "user", "content": f"<image>\nWhat is in picture {i}? <b>é</b>"},
                         {"role": "assistant", "content": f"Answer {i}."}],
            "images": [rel],
        })
    dataset = root / "filter/dataset.json"
    write_records(dataset, records)
    scored = [i for i in range(N_RECORDS) if i != UNSCORED]
    importance = np.random.default_rng(7).permutation(len(scored)) / 10 + 0.05
    part = pd.DataFrame({"index": np.asarray(scored, np.int64),
                         "id": [json.dumps(f"s-{i}") for i in scored], "importance": importance})
    scores_path = leverage.write_scores(root / "score/importance_scores.jsonl",
                                        leverage.rank_scores([part]))
    select = root / "select"
    files = {}
    for budget in BUDGETS:
        n = resolve_budget(budget, len(scored))
        files[("scalselect", n)] = select / f"top-{n}.json"
        for seed in SEEDS:
            files[(f"random-seed{seed}", n)] = select / f"random-{n}-seed{seed}.json"
    for (method, n), path in files.items():
        extra = ["--random", "--seed", method.removeprefix("random-seed")] if method != "scalselect" else []
        assert main(["select", "--dataset", str(dataset), "--scores", str(scores_path),
                     "--num", str(n), "--out", str(path), *extra]) == 0
    picks = select / "kcenter-4.json.picks.parquet"
    pd.DataFrame({"index": KCENTER, "id": [f"s-{i}" for i in KCENTER],
                  "order": range(1, 5)}).to_parquet(picks)
    return {"dataset": dataset, "scores": scores_path, "images": images, "records": records,
            "files": files, "picks": picks, "importance": dict(zip(scored, importance))}


def build(run: dict, out: Path, *extra: str) -> None:
    assert main(["browse", "--dataset", str(run["dataset"]), "--image-root", str(run["images"]),
                 "--scores", str(run["scores"]), "--budgets", *BUDGETS,
                 "--random-seeds", *map(str, SEEDS), "--picks", str(run["picks"]),
                 "--run", "unit", "--out", str(out), *extra]) == 0


def script_value(path: Path, call: str):
    """The JSON argument(s) of a data file `ScalBrowse.<call>(...);`."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith(f"ScalBrowse.{call}(") and text.endswith(");\n"), path
    return json.loads(f"[{text[len(call) + 12:-3]}]")


def selection_indices(path: Path, records: list[dict]) -> set[int]:
    """Dataset indices of a selection file's records (ids are unique here)."""
    where = {r["id"]: i for i, r in enumerate(records)}
    return {where[r["id"]] for r in load_dataset(path).records}


@pytest.fixture(scope="module")
def unit_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("browse")
    run = make_run(root)
    # The configuration's source order (as `sources` writes it), not this run's own.
    (root / "sources.json").write_text(json.dumps({"sources": list(CONFIG_SOURCES)}))
    build(run, root / "browse", "--thumbnails", "2", "--sources", str(root / "sources.json"))
    # The attention gallery's overlay of the top-ranked sample, where `plot gallery` puts
    # it: beside the browser (the page finds it there when it opens).
    tokens = root / "plots/attention_tokens"
    tokens.mkdir(parents=True)
    top = min(run["importance"], key=lambda i: (-run["importance"][i], i))
    Image.new("RGB", (200, 150), "orange").save(tokens / f"{top}.png")
    (tokens / "index.js").write_text(browse.overlay_index([top]), encoding="utf-8")
    return run, root / "browse"


def test_data_files_match_the_selection_files(unit_run: tuple[dict, Path]) -> None:
    run, out = unit_run
    config = json.loads(re.search(r'<script type="application/json" id="config">(.*?)</script>',
                                  (out / "index.html").read_text(), re.S).group(1))
    # Rank order, computed here: importance descending, ties by dataset index.
    ranked = sorted(run["importance"], key=lambda i: (-run["importance"][i], i))
    assert config["n"] == len(ranked) == N_RECORDS - 1 and config["unscored"] == 1
    (columns,) = script_value(out / "data/samples.js", "samples")
    score = np.frombuffer(base64.b64decode(columns["score"]), "<f4")
    np.testing.assert_array_equal(score, np.float32([run["importance"][i] for i in ranked]))
    assert columns["sourceBytes"] == 1
    source = np.frombuffer(base64.b64decode(columns["source"]), np.uint8)
    names = [s["name"] for s in config["sources"]]
    assert [names[c] for c in source] == [SOURCES[i % 3] for i in ranked]
    # One membership bit per selection file (and the k-center picks).
    mask = np.frombuffer(base64.b64decode(columns["mask"]), np.uint8).reshape(len(ranked), -1)
    expected = dict(run["files"])
    labels = [(s["method"], s["budget"]) for s in config["subsets"]]
    assert sorted(labels) == sorted([*expected, ("kcenter", 4)])
    for column, key in enumerate(labels):
        inside = (set(KCENTER) if key == ("kcenter", 4)
                  else selection_indices(expected[key], run["records"]))
        bits = (mask[:, column // 8] >> (column % 8)) & 1
        assert {ranked[p] for p in np.flatnonzero(bits)} == inside, key
    # Pages: every scored record once, in rank order, text as written.
    pages = sorted((out / "data").glob("page-*.js"))
    assert len(pages) == 1
    number, entries = script_value(pages[0], "page")
    assert number == 0 and [e["index"] for e in entries] == ranked
    for entry in entries:
        record = run["records"][entry["index"]]
        assert entry["id"] == record["id"]
        assert entry["messages"] == [[m["role"], m["content"]] for m in record["messages"]]
        (image,) = entry["images"]
        # The original, relative to the page and URL-quoted.
        assert (out / unquote(image["src"])).resolve() == (run["images"] / record["images"][0]).resolve()
    assert script_value(out / "data/ids.js", "ids") == [[f"s-{i}" for i in ranked]]


def test_thumbnails_cover_a_bounded_set(unit_run: tuple[dict, Path]) -> None:
    run, out = unit_run
    _, entries = script_value(out / "data/page-00000.js", "page")
    ranked = [e["index"] for e in entries]
    top = {ranked[p] for p in range(2)} | {ranked[-p] for p in (1, 2)}
    # With 2 per group: the 2 best ranked that only one of top-N / random-N holds.
    differ = set()
    for (method, n), path in run["files"].items():
        if method == "scalselect":
            continue
        ours = selection_indices(run["files"][("scalselect", n)], run["records"])
        theirs = selection_indices(path, run["records"])
        differ |= set(sorted(ours - theirs, key=ranked.index)[:2])
        differ |= set(sorted(theirs - ours, key=ranked.index)[:2])
    with_thumbs = {e["index"] for e in entries if "thumb" in e["images"][0]}
    assert with_thumbs == top | differ and len(with_thumbs) < len(ranked)
    for entry in entries:
        if entry["index"] in with_thumbs:
            with Image.open(out / entry["images"][0]["thumb"]) as thumb:
                assert thumb.format == "JPEG" and max(thumb.size) == browse.THUMB_SIDE
    assert len(list((out / "thumbs").iterdir())) == len(with_thumbs)


def test_rebuild_replaces_the_folder(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    out = tmp_path / "browse"
    (out / "data").mkdir(parents=True)
    (out / "data/page-00009.js").write_text("stale")
    build(run, out)
    assert not (out / "data/page-00009.js").exists()
    assert not (tmp_path / "browse.partial").exists()


def test_scores_of_another_dataset_are_named(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    records = run["records"]
    records[3], records[4] = records[4], records[3]
    write_records(run["dataset"], records)
    with pytest.raises(UserError, match=r"dataset index 3 holds id 's-4' but the scores have id 's-3'"):
        browse.build_browser(run["dataset"], selection.read_scores(run["scores"]), [],
                             tmp_path / "browse", image_root=run["images"], run="unit")


def test_images_embedded_in_a_parquet_dataset_get_thumbnails_from_their_bytes(tmp_path: Path) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sizes = [(300, 200), (120, 240), (90, 90), (200, 50)]
    rows = []
    for i, size in enumerate(sizes):
        encoded = io.BytesIO()
        Image.new("RGB", size, (40 * i, 80, 120)).save(encoded, format="PNG")
        rows.append({"id": f"p{i}", "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": f"Shape {i}."}],
            "image": {"bytes": encoded.getvalue(), "path": f"embedded_{i}.png"}})
    dataset = tmp_path / "filter/dataset.parquet"
    dataset.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), dataset)
    part = pd.DataFrame({"index": np.arange(4, dtype=np.int64),
                         "id": [json.dumps(f"p{i}") for i in range(4)],
                         "importance": [0.1, 0.4, 0.3, 0.2]})
    scores = selection.read_scores(leverage.write_scores(tmp_path / "score/importance_scores.jsonl",
                                                         leverage.rank_scores([part])))
    out = tmp_path / "browse"
    browse.build_browser(dataset, scores, [], out, image_root=tmp_path / "no-images", run="pq",
                         thumbnails=1)
    # Thumbnails for the best and the worst ranked (dataset indices 1 and 0) only.
    (page,) = [script_value(out / "data/page-00000.js", "page")[1]]
    by_index = {entry["index"]: entry["images"][0] for entry in page}
    for index in (1, 0):
        with Image.open(out / by_index[index]["thumb"]) as thumb:
            width, height = sizes[index]
            scale = browse.THUMB_SIDE / max(width, height)
            assert thumb.size == (round(width * scale), round(height * scale))
        assert by_index[index]["src"] == by_index[index]["thumb"]
    for index in (2, 3):
        assert by_index[index] == {"src": "", "name": f"embedded_{index}.png"}


def test_picks_that_do_not_fit_the_run_are_named(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    scores = selection.read_scores(run["scores"])
    with pytest.raises(UserError, match=r"picks of budgets not in --budgets: \[\('kmeans', 5\)\]"):
        browse.run_subsets(scores, BUDGETS, SEEDS, {("kmeans", 5): np.array([0, 1, 2, 3, 4])})
    subsets = browse.run_subsets(scores, BUDGETS, [], {("kcenter", 4): np.array([0, 1, UNSCORED, 7])})
    with pytest.raises(UserError, match=f"k-center 4 holds dataset index {UNSCORED}, which has no score"):
        browse.membership(browse.positions(scores), subsets, len(scores))


# ---------------------------------------------------------------------------------------
# In a real browser


def _why_no_chromium() -> str | None:
    if shutil.which("chromium"):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return ("headless Chromium is not installed and cannot be installed here (needs root"
                " and apt-get: apt-get install chromium)")
    return None


needs_chromium = pytest.mark.skipif(_why_no_chromium() is not None, reason=str(_why_no_chromium()))


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed when missing (as root); a failed install fails."""
    if shutil.which("chromium") is None:
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=900,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-3000:]}"
    return shutil.which("chromium")


def headless(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium headless, offline, with a fresh profile; waits for the page's scripts
    (virtual time runs until the page is idle or 10 s)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )


def page_dom(chromium: str, tmp_path: Path, index: Path, query: str = "") -> str:
    url = index.resolve().as_uri() + (f"#{query}" if query else "")
    return headless(chromium, tmp_path, "--dump-dom", url).stdout


def shown_count(dom: str) -> int:
    match = re.search(r'<span id="count">([\d,]+) samples match</span>', dom)
    assert match, dom[:3000]
    return int(match.group(1).replace(",", ""))


def check_page(chromium: str, tmp_path: Path, index: Path, sources: dict[int, str],
               files: dict[tuple[str, int], set[int]]) -> None:
    """The page from file://: every sample, the right count per source and per budget
    and method (expected from the selection files), a thumbnail drawn."""
    dom = page_dom(chromium, tmp_path, index)
    assert shown_count(dom) == len(sources)
    drawn = re.findall(r'<img [^>]*class="thumb"[^>]*data-natural-width="(\d+)"', dom)
    assert drawn and int(drawn[0]) > 0, "no thumbnail drawn"
    assert dom.count('class="sample"') == min(50, len(sources))
    names = sorted(set(sources.values()))
    source = names[-1]
    dom = page_dom(chromium, tmp_path, index, f"source={names.index(source)}")
    assert shown_count(dom) == sum(1 for s in sources.values() if s == source)
    for (method, n), inside in files.items():
        kept = page_dom(chromium, tmp_path, index, f"view=kept&budget={n}&method={method}")
        assert shown_count(kept) == len(inside), (method, n)
        query = f"view=dropped&budget={n}&method={method}&source={names.index(source)}"
        expected = sum(1 for i, s in sources.items() if s == source and i not in inside)
        assert shown_count(page_dom(chromium, tmp_path, index, query)) == expected, (method, n)


@needs_chromium
@pytest.mark.integration  # Chromium
def test_page_in_headless_chromium(unit_run: tuple[dict, Path], chromium: str,
                                   tmp_path: Path) -> None:
    run, out = unit_run
    sources = {i: SOURCES[i % 3] for i in run["importance"]}
    files = {key: selection_indices(path, run["records"]) for key, path in run["files"].items()}
    check_page(chromium, tmp_path, out / "index.html", sources, files)
    # The top sample's attention overlay, found beside the browser and drawn at its size;
    # a copy of the page without the plots shows none, and says nothing is missing.
    dom = page_dom(chromium, tmp_path, out / "index.html")
    assert re.findall(r'<img [^>]*class="tokens"[^>]*data-natural-width="(\d+)"', dom) == ["200"]
    alone = tmp_path / "copy/browse"
    shutil.copytree(out, alone)
    dom = page_dom(chromium, tmp_path, alone / "index.html")
    assert 'class="tokens"' not in dom and "Cannot load" not in dom and shown_count(dom) > 0
    # Search by id, and the lowest ranked first.
    ranked = sorted(run["importance"], key=lambda i: (-run["importance"][i], i))
    dom = page_dom(chromium, tmp_path, out / "index.html", f"id=s-{ranked[3]}")
    assert shown_count(dom) == 1 and "#4</span>" in dom
    dom = page_dom(chromium, tmp_path, out / "index.html", "order=asc")
    assert first_id(dom) == f"s-{ranked[-1]}"
    # Conversation text is text, never markup.
    assert "&lt;b&gt;é&lt;/b&gt;" in dom and "<b>é</b>" not in dom


def first_id(dom: str) -> str:
    match = re.search(r'class="id">id "([^"]+)"', dom.replace("&quot;", '"'))
    assert match, dom[:3000]
    return match.group(1)


@needs_chromium
def test_dropped_view_lists_the_worst_first_whatever_the_url(
    unit_run: tuple[dict, Path], chromium: str, tmp_path: Path
) -> None:
    """The dropped view from a bare shared address, as the page's own link writes it and
    with order=asc: the lowest ranked first; order=desc (the Score control) the best of
    the dropped, rank 5 at budget 4."""
    run, out = unit_run
    ranked = sorted(run["importance"], key=lambda i: (-run["importance"][i], i))
    index = out / "index.html"
    link = re.search(r'href="#(view=dropped[^"]*)"', index.read_text()).group(1)
    for query in ("view=dropped&budget=4&method=scalselect", link.replace("&amp;", "&"),
                  "view=dropped&budget=4&method=scalselect&order=asc"):
        assert first_id(page_dom(chromium, tmp_path, index, query)) == f"s-{ranked[-1]}", query
    dom = page_dom(chromium, tmp_path, index, "view=dropped&budget=4&method=scalselect&order=desc")
    assert first_id(dom) == f"s-{ranked[4]}"


@pytest.mark.slow
@needs_chromium
def test_demo_browser_in_headless_chromium(demo_workflow: Path, chromium: str,
                                           tmp_path: Path) -> None:
    """The page the workflow built for a demo run; counts from its selection files."""
    results = demo_workflow / "results/demo-llava"
    dataset = load_dataset(results / "filter/dataset.json")
    scored = set(pd.read_parquet(results / "score/scores.parquet")["index"])
    sources = {i: dataset.sample(i).source for i in scored}
    ids = [r["id"] for r in dataset.records]
    assert len(set(ids)) == len(ids), "the check below matches selections by id"
    where = {sample_id: i for i, sample_id in enumerate(ids)}
    files = {}
    for path in (results / "select").glob("*.json"):
        if path.name.endswith(".card.json"):
            continue  # a selection's card, beside it
        match = re.fullmatch(r"(top|random|kcenter|kmeans)-(\d+)(?:-seed(\d+))?", path.stem)
        method = {"top": "scalselect", "random": f"random-seed{match.group(3)}"}.get(
            match.group(1), match.group(1))
        files[(method, int(match.group(2)))] = {where[r["id"]] for r in load_dataset(path).records}
    assert {m for m, _ in files} >= {"scalselect", "random-seed0", "kcenter", "kmeans"}
    check_page(chromium, tmp_path, results / "browse/index.html", sources, files)
    # The attention gallery's samples show their kept tokens (the best ranked on screen).
    overlays = {int(p.stem) for p in (results / "plots/attention_tokens").glob("*.png")}
    assert overlays
    dom = page_dom(chromium, tmp_path, results / "browse/index.html")
    shown = re.findall(r'<img [^>]*class="tokens"[^>]*data-natural-width="(\d+)"', dom)
    assert shown and all(int(width) > 0 for width in shown)


def swatches(dom: str, kind: str) -> dict[str, str]:
    """Text -> colour of each element of class ``kind`` (badge, source) in the DOM."""
    found = re.findall(rf'<span class="{kind}" style="--color: ?(#[0-9A-Fa-f]{{6}});?">([^<]+)</span>',
                       dom)
    assert found, dom[:3000]
    return {text: color.lower() for color, text in found}


@needs_chromium
def test_page_shows_percentage_budgets_and_the_figures_colours(
    unit_run: tuple[dict, Path], chromium: str, tmp_path: Path
) -> None:
    """Budget "50%" of the 13 scored samples (6.5, rounded half up: 7) reads "50% (N = 7)"
    in the budget menu and on the badges; each source and method has the colour the
    figures give it (composition and methods comparison, same source order)."""
    from test_figure_labels import composition_colors, methods_colors

    run, out = unit_run
    dom = page_dom(chromium, tmp_path, out / "index.html")
    assert re.search(r'<option value="7">50% \(N = 7\)</option>', dom)
    assert re.search(r'<option value="4">4</option>', dom)
    badges = swatches(dom, "badge")
    assert {"ScalSelect 50% (N = 7)", "Random (seed 3) 50% (N = 7)", "ScalSelect 4",
            "k-center 4"} <= set(badges), sorted(badges)
    labels = [r["images"][0].split("/")[0] for r in run["records"]]
    order = list(CONFIG_SOURCES)
    sources = np.array(labels, dtype=object)
    figure_sources = composition_colors(sources, order)
    assert swatches(dom, "source") == {s: figure_sources[s] for s in SOURCES}
    methods, shares = methods_colors(sources, order)
    assert shares == {s: figure_sources[s] for s in SOURCES}
    for label, color in badges.items():
        method = label.removesuffix(" 50% (N = 7)").removesuffix(" 4")
        if method.startswith("Random"):  # every seed in random's colour
            method = "Random (seed 0)"
        assert color == methods[method], (label, color, methods)
