"""The attention gallery's data: which vision tokens ScalSelect kept for the highest- and
lowest-scored samples, recomputed with the model for just those samples.

Extraction stores per sample only the counts (vision tokens, kept tokens), not which
tokens were kept; re-running the first layer on a handful of samples is cheaper than
storing 576 flags for every sample of a 665K-sample dataset. The recomputation uses the
extraction's own code (:class:`scalselect.extract.representation.Encoder` and
:class:`~scalselect.extract.representation.TruncatedVLM`) with the run's settings, so the
kept tokens are the ones that produced the scored representation.

The overlay is drawn on the part of the image the model saw: LLaVA's CLIP processor
resizes the shorter side and crops the centre square, so the token grid covers that
square; Qwen-VL resizes the whole image to a multiple of its patch size, so the grid
covers the whole image. Only a sample's first image is shown.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from scalselect.data.readers import iter_samples
from scalselect.data.records import Sample, resolve_image
from scalselect.errors import UserError
from scalselect.extract.representation import SampleFailure, collate, load_model
from scalselect.locations import image_source
from scalselect.report.figures import GalleryEntry
from scalselect.settings import ExtractSettings

log = logging.getLogger("scalselect.report.gallery")

# Longest side of a gallery image: enough for print at the panel size, small PDFs.
MAX_SIDE = 512


def model_view(image: Image.Image, image_processor: Any) -> Image.Image:
    """The region of ``image`` that the processor feeds to the vision tower.

    With ``do_center_crop`` (CLIP, LLaVA-1.5): the shorter side is resized to
    ``size["shortest_edge"]``, then a ``crop_size`` box is cut from the centre; the
    same box in the original's pixels is returned. Otherwise the whole image.
    """
    if not getattr(image_processor, "do_center_crop", False):
        return image
    crop, size = image_processor.crop_size, image_processor.size
    width, height = image.size
    shortest = _field(size, "shortest_edge")
    scale = shortest / min(width, height) if shortest else min(
        _field(size, "width") / width, _field(size, "height") / height
    )
    crop_w = min(_field(crop, "width") / scale, width)
    crop_h = min(_field(crop, "height") / scale, height)
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return image.crop((round(left), round(top), round(left + crop_w), round(top + crop_h)))


def _field(size: Any, key: str) -> int | None:
    """A key of a processor size (a dict, or transformers' ``SizeDict``)."""
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _thumbnail(image: Image.Image) -> Image.Image:
    image = image.copy()
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def _samples_at(
    path: str | os.PathLike, fmt: str, indices: set[int]
) -> dict[int, Sample]:
    """The samples at ``indices`` of a dataset file, read in one pass over it."""
    found = {}
    for index, sample, problems in iter_samples(path, fmt, start=min(indices),
                                                stop=max(indices) + 1):
        if index in indices:
            if sample is None:
                details = "; ".join(p.detail for p in problems)
                raise UserError(f"{path}: record {index} is malformed: {details}")
            found[index] = sample
    return found


def _gallery_entry(sample: Any, row: pd.Series, encoder: Any, model: Any,
                   image_root: str | os.PathLike) -> GalleryEntry | str:
    """One sample's gallery entry (its first image as the model sees it, with the grid
    and the kept vision tokens), or why it cannot be shown: an unreadable image or a
    failed encoding or representation."""
    try:
        images = []
        for number, path in enumerate(sample.images):
            data = sample.image_bytes(number)
            source = (image_source(resolve_image(image_root, path)) if data is None
                      else io.BytesIO(data))
            with Image.open(source) as image:
                images.append(image.convert("RGB"))
        encoded = encoder.encode(sample, images)
    except (OSError, SampleFailure) as error:
        return str(error)
    result = model.represent(collate([encoded]))[0]
    if result.status != "ok":
        return result.status
    rows, cols = result.grids[0]
    kept = np.asarray(result.kept)
    return GalleryEntry(
        image=_thumbnail(model_view(images[0], encoder.processor.image_processor)),
        grid=(rows, cols),
        kept=kept[kept < rows * cols],
        importance=float(row["importance"]),
        rank=int(row["rank"]),
        index=int(row["index"]),
    )


def gallery_entries(
    dataset: str | os.PathLike,
    fmt: str,
    image_root: str | os.PathLike,
    scores: pd.DataFrame,
    count: int,
    model_path: str,
    settings: ExtractSettings,
) -> tuple[list[GalleryEntry], list[GalleryEntry]]:
    """The ``count`` highest-scored and ``count`` lowest-scored samples (lowest first)
    of the dataset file ``dataset`` (record format ``fmt``) with their kept vision
    tokens.

    ``scores`` is the ranked score table (``index``, ``importance``, ``rank``). A
    sample whose image cannot be read or whose encoding fails now is skipped with a
    logged reason and the next one in rank order is taken. ``settings`` are the run's
    extraction settings (``dtype`` as requested).
    """
    encoder, model = load_model(model_path, settings)
    rows: list[list[GalleryEntry]] = []
    shown: set[int] = set()
    skipped = 0
    # The samples are read as the file streams by, a few candidates of each end at a time.
    window = 4 * count
    ranked = scores["index"].to_numpy()
    samples = _samples_at(dataset, fmt, {*ranked[:window].tolist(), *ranked[-window:].tolist()})
    for from_top in (True, False):
        entries: list[GalleryEntry] = []
        for position in range(len(scores)) if from_top else range(len(scores) - 1, -1, -1):
            if len(entries) == count:
                break
            row = scores.iloc[position]
            index = int(row["index"])
            if index in shown:
                break  # fewer than 2 * count samples: the rows met
            if index not in samples:
                ahead = (ranked[position : position + window] if from_top
                         else ranked[max(0, position - window + 1) : position + 1])
                samples = _samples_at(dataset, fmt, set(ahead.tolist()))
            entry = _gallery_entry(samples[index], row, encoder, model, image_root)
            if isinstance(entry, str):
                log.warning("gallery: skipped dataset index %d: %s", index, entry)
                skipped += 1
                continue
            entries.append(entry)
            shown.add(index)
        rows.append(entries)
    if not rows[0]:
        raise UserError("no scored sample could be shown in the attention gallery")
    if skipped:
        log.info("gallery: %d samples skipped (see warnings)", skipped)
    return rows[0], rows[1]
