"""The selection browser: one static page per run to look at what each selection kept and
dropped before training on it.

``results/<run>/browse/`` holds ``index.html``, its script and style sheet, and:

- ``data/samples.js``: the small per-sample columns that filtering and sorting need, for
  every scored sample in rank order (position ``p`` is rank ``p + 1``): the score
  (float32), a source code and one membership bit per selection (each budget of each
  method: ScalSelect's top-N, every random-N seed, k-center, k-means), base64-encoded.
  About 7 bytes per sample: 4.6 MB at 665K samples.
- ``data/page-NNNNN.js``: the conversations and image references of ``PAGE_SIZE``
  consecutive ranks, loaded only when a row of that page is shown.
- ``data/ids.js``: every sample id in rank order, loaded on the first search by id.
- ``thumbs/``: JPEG thumbnails of a bounded set of samples (:func:`thumbnail_positions`:
  the best and worst ranked, and the samples where ScalSelect and random differ most
  visibly); every other image is referenced where it lies, relative to the page.

The attention gallery's samples also show their kept vision tokens: ``plot gallery``
writes each of them alone to ``results/<run>/plots/attention_tokens/<dataset index>.png``
with :func:`overlay_index` beside them, and the page loads that index from there
(``../plots/attention_tokens/``) when it is present. The browser does not wait for the
gallery (a GPU job), and a copy of the page without the plots shows no overlays.

Browsers do not let a page opened from ``file://`` read files with ``fetch``, so the data
files are scripts that hand their content to the page's ``ScalBrowse`` object; the page
adds their ``<script>`` tags on demand. It needs no server and no network.

The job holds only per-sample numbers and ids: the dataset is streamed record by record
(:func:`scalselect.data.readers.iter_samples`) and each sample's page entry is parked in a temporary file, then
copied into the page files in rank order.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image

from scalselect.budgets import resolve_budget
from scalselect.data.readers import iter_samples
from scalselect.data.records import DatasetError, resolve_image
from scalselect.errors import UserError
from scalselect.extract import features
from scalselect.io import atomic_directory
from scalselect.locations import image_source, is_url, redact
from scalselect.methods import METHODS, random_label
from scalselect.report import composition, style
from scalselect.select.selection import budget_names, random_indices, top_indices

log = logging.getLogger("scalselect.report.browse")

# Samples per page file: at LLaVA-665K's ~1 kB of text per sample, ~0.5 MB per file.
PAGE_SIZE = 500
# Thumbnails per group of :func:`thumbnail_positions` (the page shows 50 rows at a time).
THUMBNAILS = 500
# Longest side of a thumbnail, in pixels.
THUMB_SIDE = 192
# The page's global object that the data files call.
CALLBACK = "ScalBrowse"
ASSETS = ("browse.js", "browse.css")


@dataclass(frozen=True)
class Subset:
    """One selection of a run: a method at a budget (and a seed for random).

    ``method`` is the key the page filters by: ``scalselect``, ``random-seed<S>``,
    ``kcenter`` or ``kmeans``; ``budget`` the selection's size N, ``budget_label`` the
    budget as asked (``32``, ``25% (N = 37)``).
    """

    method: str
    budget: int
    label: str
    count: int
    budget_label: str


def run_subsets(
    scores: pd.DataFrame,
    budgets: Sequence[int | str],
    seeds: Sequence[int],
    picks: Mapping[tuple[str, int], np.ndarray],
) -> list[tuple[Subset, np.ndarray]]:
    """Every selection of a run with its dataset indices, budget by budget: ScalSelect's
    top-N and each random-N seed (recomputed from the scores with the functions that
    ``select`` writes them with), then the baselines' picks.

    Parameters
    ----------
    scores : DataFrame
        Ranked scores (:func:`scalselect.select.selection.read_scores`).
    budgets : sequence of int or str
        Budgets as configured (counts or percentages of the scored samples).
    seeds : sequence of int
        Seeds of the random subsets (none when random is not a method of the run).
    picks : mapping
        ``(method, N)`` -> dataset indices of a baseline's picks
        (``select/<method>-<N>.<ext>.picks.parquet``).

    Raises
    ------
    UserError
        Picks of a budget that is not among ``budgets``.
    """
    names = budget_names((b, resolve_budget(b, len(scores))) for b in budgets)
    unused = sorted(key for key in picks if key[1] not in names)
    if unused:
        raise UserError(f"picks of budgets not in --budgets: {unused}")
    subsets = []
    for n, budget in names.items():
        asked = style.budget_label(budget, n, exact=True, bare=True)
        found = [("scalselect", top_indices(scores, n))]
        found += [(f"random-seed{s}", random_indices(scores, n, s)) for s in seeds]
        found += [(method, indices) for (method, size), indices in sorted(picks.items())
                  if size == n]
        subsets += [(Subset(method, n, method_label(method, asked), len(indices), asked),
                     np.asarray(indices)) for method, indices in found]
    return subsets


def method_label(method: str, budget: str | None = None) -> str:
    """The page's name of a :class:`Subset` method key, at a budget (as shown) if given.

    Examples
    --------
    >>> method_label("random-seed3")
    'Random (seed 3)'
    >>> method_label("random-seed3", "32")
    'Random (seed 3) 32'
    >>> method_label("kcenter", "25% (N = 37)")
    'k-center 25% (N = 37)'
    """
    name, _, seed = method.partition("-seed")
    label = random_label(int(seed)) if seed else METHODS[name].label
    return label if budget is None else f"{label} {budget}"


def positions(scores: pd.DataFrame) -> np.ndarray:
    """Dataset index -> rank position (``rank - 1``), ``-1`` for unscored indices."""
    index = scores["index"].to_numpy()
    if not np.array_equal(scores["rank"].to_numpy(), np.arange(1, len(scores) + 1)):
        raise UserError("the scores' ranks are not 1..N (a scores table from another tool?)")
    position = np.full(int(index.max()) + 1 if len(index) else 0, -1, dtype=np.int64)
    position[index] = np.arange(len(index))
    return position


def membership(position: np.ndarray, subsets: Sequence[tuple[Subset, np.ndarray]],
               n: int) -> np.ndarray:
    """Membership bits, ``uint8`` of shape ``(n, ceil(len(subsets) / 8))``: bit ``c % 8`` of
    byte ``c // 8`` of row ``p`` is set when the sample at rank position ``p`` is in
    subset ``c``.

    Raises ``UserError`` when a subset holds a dataset index that was not scored.
    """
    mask = np.zeros((n, max(1, math.ceil(len(subsets) / 8))), dtype=np.uint8)
    for column, (subset, indices) in enumerate(subsets):
        inside = (indices >= 0) & (indices < len(position))
        where = np.where(inside, position[np.where(inside, indices, 0)], -1)
        if (where < 0).any():
            raise UserError(f"{subset.label} holds dataset index {indices[where < 0][0]},"
                            " which has no score: picks and scores do not belong together")
        mask[where, column // 8] |= np.uint8(1 << (column % 8))
    return mask


def member(mask: np.ndarray, column: int) -> np.ndarray:
    """Whether each rank position is in subset ``column`` (:func:`membership`)."""
    return (mask[:, column // 8] >> (column % 8)) & 1 == 1


def differences(mask: np.ndarray, subsets: Sequence[tuple[Subset, np.ndarray]]
                ) -> list[dict[str, Any]]:
    """ScalSelect against each random seed at each budget: the subset columns compared
    and how many samples only one of them holds, and both hold."""
    columns = {(s.method, s.budget): c for c, (s, _) in enumerate(subsets)}
    pairs = []
    for (method, budget), column in columns.items():
        if not method.startswith("random-seed") or ("scalselect", budget) not in columns:
            continue
        ours = member(mask, columns[("scalselect", budget)])
        theirs = member(mask, column)
        pairs.append({
            "budget": budget, "random": method, "scalselect_column": columns[("scalselect", budget)],
            "random_column": column, "only_scalselect": int((ours & ~theirs).sum()),
            "only_random": int((theirs & ~ours).sum()), "both": int((ours & theirs).sum()),
        })
    return pairs


def thumbnail_positions(mask: np.ndarray, pairs: Sequence[Mapping[str, Any]],
                        count: int = THUMBNAILS) -> np.ndarray:
    """Rank positions that get a thumbnail, sorted: the ``count`` best ranked, the
    ``count`` worst ranked (the "dropped" view), and for each ScalSelect-random pair
    (:func:`differences`) the ``count`` best ranked samples only ScalSelect keeps and
    only random keeps (the first screens of the difference views)."""
    n = len(mask)
    chosen = [np.arange(min(count, n)), np.arange(max(n - count, 0), n)]
    for pair in pairs:
        ours = member(mask, pair["scalselect_column"])
        theirs = member(mask, pair["random_column"])
        chosen += [np.flatnonzero(ours & ~theirs)[:count], np.flatnonzero(theirs & ~ours)[:count]]
    return np.unique(np.concatenate(chosen))


def _b64(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values).tobytes()).decode("ascii")


def _script(call: str, value: Any) -> str:
    """A data file: one call of the page's callback with ``value`` as JSON."""
    return f"{CALLBACK}.{call}({json.dumps(value, ensure_ascii=False, separators=(',', ':'))});\n"


def overlay_index(indices: Sequence[int]) -> str:
    """``index.js`` of the attention gallery's overlays: the dataset indices that have
    ``<dataset index>.png`` beside it, as a script the page loads (:data:`CALLBACK`)."""
    return _script("tokens", [int(i) for i in indices])


def _image_url(path: str | Path, page_dir: Path) -> str:
    """``path`` as a URL relative to the page (works from file:// on the same filesystem);
    an object on the web as its URL; one in a bucket or on the Hub as nothing (a browser
    cannot fetch it: the page shows its thumbnail)."""
    if is_url(path):
        return str(path) if str(path).startswith(("http://", "https://")) else ""
    relative = os.path.relpath(path.absolute(), page_dir.absolute())
    return quote(Path(relative).as_posix())


class Thumbnails:
    """Thumbnails (``THUMB_SIDE`` px JPEGs) in ``folder``, written once per image file and
    named by a hash of its path."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: dict[Path, str | None] = {}
        self.failed = 0

    def get(self, image: str | Path | bytes, index: int) -> str | None:
        """The thumbnail of an image file, or of image bytes embedded in the dataset: its
        path relative to the page, or None when the image cannot be read (logged with the
        sample's dataset index, and counted)."""
        embedded = isinstance(image, bytes)
        key = hashlib.sha1(image if embedded else str(image).encode()).hexdigest()[:16]
        if key not in self.made:
            name = key + ".jpg"
            try:
                with Image.open(io.BytesIO(image) if embedded else image_source(image)) as opened:
                    thumb = opened.convert("RGB")
                thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BICUBIC)
                thumb.save(self.folder / name, quality=80)
                self.made[key] = f"thumbs/{name}"
            except (OSError, ValueError) as error:
                shown = "embedded image" if embedded else redact(image)
                log.warning("no thumbnail for dataset index %d (%s): %s", index, shown, error)
                self.failed += 1
                self.made[key] = None
        return self.made[key]


def build_browser(
    dataset: str | os.PathLike,
    scores: pd.DataFrame,
    subsets: Sequence[tuple[Subset, np.ndarray]],
    out_dir: str | os.PathLike,
    *,
    image_root: str | os.PathLike,
    run: str,
    fmt: str = "auto",
    source_field: str | None = None,
    order: Sequence[str] | None = None,
    thumbnails: int = THUMBNAILS,
    page_size: int = PAGE_SIZE,
) -> dict[str, Any]:
    """Write the browser of one run into ``out_dir`` (``results/<run>/browse``, replaced
    as a whole at the end): the samples of ``dataset`` (record format ``fmt``, sources
    from ``source_field``) in the rank order of ``scores``, with the run's ``subsets``
    (:func:`run_subsets`) and images under ``image_root``. ``order`` lists the sources of
    every run of the configuration (:func:`scalselect.report.composition.config_sources`),
    which fixes their colours as in the figures. ``thumbnails`` samples per group
    (:func:`thumbnail_positions`) get thumbnails; a page file holds ``page_size``.

    Returns the samples shown, the unscored ones left out, the page files and the
    thumbnails made and failed. Raises ``UserError`` for a malformed record, or scores of
    another dataset (other ids, or indices beyond it).
    """
    out_dir = Path(out_dir)
    n = len(scores)
    position = positions(scores)
    mask = membership(position, subsets, n)
    pairs = differences(mask, subsets)
    wanted = np.zeros(n, dtype=bool)
    wanted[thumbnail_positions(mask, pairs, thumbnails)] = True

    with atomic_directory(out_dir) as partial:
        (partial / "data").mkdir()
        (partial / "thumbs").mkdir()
        thumbs = Thumbnails(partial / "thumbs")
        pages = Pages(scores, position, wanted, thumbs, image_root, out_dir)
        with open(partial / "entries.tmp", "w+b") as parked:
            pages.park(parked, dataset, fmt, source_field)
            count = pages.write(parked, partial / "data", page_size)
        (partial / "entries.tmp").unlink()
        names, source = pages.sources()
        _write_samples(partial / "data", scores, source, mask)
        config = {
            "run": run, "n": n, "unscored": pages.unscored, "pageSize": page_size,
            "pages": count, "sources": _source_entries(names, source, order),
            "subsets": [asdict(s) for s, _ in subsets],
            "methodColors": {s.method: style.method_color(s.method) for s, _ in subsets},
            "budgets": [{"n": n, "label": label}
                        for n, label in sorted({(s.budget, s.budget_label) for s, _ in subsets})],
            "differences": pairs,
            "thumbnails": {"perGroup": thumbnails, "samples": int(wanted.sum()),
                           "files": sum(1 for v in thumbs.made.values() if v),
                           "failed": thumbs.failed},
        }
        _write_page(partial, config)
    return {"samples": n, "unscored": pages.unscored, "pages": count,
            "thumbnails": config["thumbnails"]["files"], "thumbnails_failed": thumbs.failed}


class Pages:
    """The page entries of the scored samples (conversation, images, thumbnails), parked
    in a temporary file in dataset order as the dataset streams by, then written in rank
    order, ``page_size`` samples a file; the source of each (by rank position)."""

    def __init__(self, scores: pd.DataFrame, position: np.ndarray, wanted: np.ndarray,
                 thumbs: Thumbnails, image_root: str | os.PathLike, out_dir: Path) -> None:
        n = len(scores)
        self.ids, self.id_types = scores["id"].tolist(), scores["id_type"].tolist()
        self.position, self.wanted, self.thumbs = position, wanted, thumbs
        self.image_root, self.out_dir = image_root, out_dir
        self.codes: dict[str, int] = {}
        self.source = np.zeros(n, dtype=np.int64)
        self.offsets = np.zeros(n, dtype=np.int64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.unscored = 0

    def park(self, parked: Any, dataset: str | os.PathLike, fmt: str,
             source_field: str | None) -> None:
        """Stream the dataset; park each scored sample's entry; ``UserError`` for a
        record that is malformed or whose id is not the scores' (another dataset)."""
        seen = 0
        for index, sample, problems in iter_samples(dataset, fmt, source_field=source_field):
            pos = int(self.position[index]) if index < len(self.position) else -1
            if pos < 0:
                self.unscored += 1
                continue
            seen += 1
            if sample is None:
                raise DatasetError(f"{dataset}: record {index} is malformed: "
                                   + "; ".join(p.detail for p in problems))
            expected = None if self.id_types[pos] == "null" else self.ids[pos]
            if features.id_text(sample.id) != expected:
                raise UserError(f"the scores do not belong to {dataset}: dataset index {index}"
                                f" holds id {sample.id!r} but the scores have id {expected!r}")
            self.source[pos] = self.codes.setdefault(sample.source, len(self.codes))
            entry = {"index": index, "id": sample.id, "images": self._images(sample, pos),
                     "messages": [[m.role, m.content] for m in sample.messages]}
            self.offsets[pos] = parked.tell()
            self.lengths[pos] = parked.write(json.dumps(entry, ensure_ascii=False).encode())
        if seen != len(self.source):
            raise UserError(f"the scores rank {len(self.source)} samples but {dataset} holds"
                            f" only {seen} of their dataset indices: scores of another dataset")

    def _images(self, sample: Any, pos: int) -> list[dict[str, str]]:
        """A sample's images as the page shows them: a file by its URL, an embedded image
        by its thumbnail only; thumbnails for the samples that get them."""
        images = []
        for number, image in enumerate(sample.images):
            data = sample.image_bytes(number)
            if data is None:
                file = resolve_image(self.image_root, image)
                entry = {"src": _image_url(file, self.out_dir)}
                thumb = self.thumbs.get(file, sample.index) if self.wanted[pos] else None
            else:
                thumb = self.thumbs.get(data, sample.index) if self.wanted[pos] else None
                entry = {"src": thumb or "", "name": image}
            if thumb:
                entry["thumb"] = thumb
            images.append(entry)
        return images

    def write(self, parked: Any, folder: Path, page_size: int) -> int:
        """The page files ``page-NNNNN.js`` in rank order; their number."""
        n = len(self.source)
        pages = math.ceil(n / page_size)
        for page in range(pages):
            entries = []
            for pos in range(page * page_size, min((page + 1) * page_size, n)):
                parked.seek(self.offsets[pos])
                entries.append(parked.read(self.lengths[pos]).decode())
            (folder / f"page-{page:05d}.js").write_text(
                f"{CALLBACK}.page({page},[{','.join(entries)}]);\n", encoding="utf-8")
        return pages

    def sources(self) -> tuple[list[str], np.ndarray]:
        """The source names, sorted, and each sample's source as an index into them."""
        names = sorted(self.codes)
        remap = np.array([names.index(name) for name in self.codes], dtype=np.int64)
        return names, remap[self.source]


def _source_entries(names: list[str], source: np.ndarray,
                    order: Sequence[str] | None) -> list[dict[str, Any]]:
    """Each source's name, number of samples and colour, as in the figures."""
    counts = np.bincount(source, minlength=len(names))
    colors = style.source_colors(
        composition.source_order(np.asarray(names, dtype=object)[source], order))
    return [{"name": name, "count": int(c), "color": colors.get(name, style.OTHER_SOURCES)}
            for name, c in zip(names, counts)]


def _write_samples(folder: Path, scores: pd.DataFrame, source: np.ndarray,
                   mask: np.ndarray) -> None:
    """``samples.js`` (score, source code and selection membership of every sample, by
    rank position, base64) and ``ids.js``; source codes as small as their number allows."""
    source_type = np.uint8 if source.max(initial=0) < 256 else np.uint16
    columns = {
        "score": _b64(scores["importance"].to_numpy(dtype="<f4")),
        "source": _b64(source.astype(np.dtype(source_type).newbyteorder("<"))),
        "sourceBytes": np.dtype(source_type).itemsize,
        "mask": _b64(mask),
        "maskBytes": mask.shape[1],
    }
    (folder / "samples.js").write_text(_script("samples", columns), encoding="utf-8")
    ids, id_types = scores["id"].tolist(), scores["id_type"].tolist()
    (folder / "ids.js").write_text(
        _script("ids", [None if t == "null" else i for i, t in zip(ids, id_types)]),
        encoding="utf-8")


def _write_page(folder: Path, config: dict[str, Any]) -> None:
    """``index.html`` from the Jinja2 template, and the script and style sheet beside it."""
    import jinja2

    templates = resources.files("scalselect.report") / "templates" / "browse"
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("scalselect.report", "templates/browse"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    methods = {s["method"]: method_label(s["method"]) for s in config["subsets"]}
    budgets = {b["n"]: b["label"] for b in config["budgets"]}
    html = environment.get_template("index.html.j2").render(
        config=config, methods=methods, budgets=budgets, callback=CALLBACK)
    (folder / "index.html").write_text(html, encoding="utf-8")
    for name in ASSETS:
        (folder / name).write_bytes((templates / name).read_bytes())
