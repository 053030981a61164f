"""The bundled demo: a small visual-instruction dataset built deterministically.

``build_demo(out)`` writes, byte-identically on every call with the same seed:

- ``dataset.json``: ShareGPT ``messages`` records (ids mostly ints, some strings);
- ``dataset_llava.json``: the SAME samples, in the same order, in the LLaVA-665K format
  (``conversations`` with ``from`` human/gpt/system, ``image`` a string or a list, no
  ``image`` key on text-only records);
- ``dataset.parquet``: those of one shape (all but the few with an image list) as a
  LLaVA-OneVision-style parquet pool: each image embedded in its row as
  ``{"bytes", "path"}`` (bytes null where the file is missing), and a ``data_source``
  column of three sources coarser than the image folders (:data:`PARQUET_SOURCES`);
- ``images/<source>/...``: images drawn with Pillow in visual groups of very uneven
  frequency, filed under folders named after LLaVA-665K's sources (``coco``, ``gqa``,
  ``ocr_vqa``, ``textvqa``, ``vg``), plus crops of a real photograph shipped with
  matplotlib;
- ``groups.json``: each group's source, description and count, the group of every
  sample by dataset index (figures can show which groups a selection picked), and the
  index of the conversation that is longer than the models' 4096-token context;
- ``EXPECTED_INVALID.json``: dataset index -> the validate reason code that each
  deliberately broken sample must be reported with;
- ``models/tiny-llava`` and ``models/tiny-qwen3-vl``: tiny random VLMs
  (:func:`scalselect.demo.tinymodels.build_tiny_model`).

Conversations have 1-4 rounds of questions and answers that fit the image; some carry a
system message, some place the ``<image>`` tag mid-text or leave it out (both allowed);
a few samples have two images and a few (~3%) are text-only, and one detailed
conversation (24 rounds) exceeds the context so that extraction drops trailing turns.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from scalselect.demo.drawings import (
    Drawn,
    draw_book_cover,
    draw_checkerboard,
    draw_circles,
    draw_gradient,
    draw_noise,
    draw_photo,
    draw_rings,
    draw_sign,
    draw_stripes,
    random_size,
)
from scalselect.io import atomic_write, write_json

DEFAULT_SEED = 0

# The two demo models: folder under models/ -> tiny-model family.
DEMO_MODELS = {"tiny-llava": "llava", "tiny-qwen3-vl": "qwen3-vl"}

# The data_source column of dataset.parquet: image folder -> source (text-only: "text").
PARQUET_SOURCES = {"coco": "captions", "gqa": "vqa", "vg": "vqa", "ocr_vqa": "ocr",
                   "textvqa": "ocr"}

# Breakage kind -> the reason code `python -m scalselect validate` reports for it.
BREAKAGES = {
    "missing_file": "missing_image",
    "truncated": "corrupt_image",
    "zero_bytes": "empty_image_file",
    "not_an_image": "not_an_image",
    "too_small": "image_too_small",
    "extreme_aspect": "extreme_aspect_ratio",
    "tag_mismatch": "image_tag_mismatch",
    "missing_id": "missing_id",
    "duplicate_id": "duplicate_id",
}

TEXT_ONLY = "text-only"

# Sources mimic LLaVA-665K's file layout: folder -> (subfolder, file name pattern, range
# of the first file number).
SOURCE_LAYOUT = {
    "coco": ("train2017", "{:012d}", (1, 10**6)),
    "gqa": ("images", "{:07d}", (10**6, 3 * 10**6)),
    "ocr_vqa": ("images", "{:010d}", (10**8, 10**9)),
    "textvqa": ("train_images", "{:016x}", (16**15, 16**16 // 2)),
    "vg": ("VG_100K", "{:d}", (1, 10**5)),
}

# Sources whose samples get string ids (their image's file name, as in LLaVA-665K).
STRING_ID_SOURCES = ("ocr_vqa", "textvqa")

SYSTEM_PROMPTS = (
    "You are a helpful assistant that answers questions about images.",
    "You are a careful visual assistant. Answer briefly and precisely.",
    "Describe what you see accurately and do not guess.",
)

@dataclass(frozen=True)
class Group:
    """A visual group: its source folder, sample count and how to draw one image."""

    name: str
    source: str
    count: int
    description: str
    draw: Callable[[random.Random, np.random.Generator, tuple[int, int]], Drawn]


@dataclass
class DemoSample:
    """A demo sample before it is written in either format."""

    group: str
    turns: list[tuple[str, str]]  # (role, text), roles system/user/assistant
    images: list[str] = field(default_factory=list)
    id: int | str | None = None
    has_id: bool = True
    breakage: str | None = None
    long: bool = False


# Very uneven group frequencies (35% down to ~1.5%), so that selection has rare groups to
# find. Counts sum to 249 image samples.
GROUPS: tuple[Group, ...] = (
    Group("stripes", "coco", 88, "two-colour stripes", draw_stripes),
    Group("circles", "coco", 50, "filled circles on a plain background", draw_circles),
    Group("gradient", "vg", 36, "smooth two-colour gradients", draw_gradient),
    Group("checkerboard", "gqa", 26, "two-colour checkerboards", draw_checkerboard),
    Group(
        "book_cover", "ocr_vqa", 18, "book covers with printed title and author", draw_book_cover
    ),
    Group("noise", "vg", 12, "blocky random colour noise", draw_noise),
    Group("sign", "textvqa", 10, "street signs with a short word", draw_sign),
    Group("rings", "gqa", 5, "concentric rings (PNG)", draw_rings),
    Group(
        "photo", "coco", 4, "crops of a real photograph (matplotlib's grace_hopper.jpg)", draw_photo
    ),
)
GROUPS_BY_NAME = {group.name: group for group in GROUPS}

NUM_TEXT_ONLY = 8
NUM_TWO_IMAGES = 5
NUM_SHARED_IMAGES = 4
# One detailed conversation longer than the models' 4096-token context (about 5,000 tokens
# with the tiny tokenizers): extraction drops its trailing turns and flags it.
LONG_ROUNDS = 24


def _text_only_turns(rng: random.Random) -> list[tuple[str, str]]:
    """A short conversation without images: arithmetic and general questions."""
    a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 40)
    pairs = [
        (f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."),
        (f"What is {b} times {c}?", f"{b} times {c} is {b * c}."),
        (f"Is {a} larger than {c}?", "Yes." if a > c else "No."),
        ("Name a primary color.", rng.choice(("Red.", "Blue.", "Yellow."))),
    ]
    chosen = rng.sample(pairs, rng.randint(1, 3))
    return [turn for q, answer in chosen for turn in (("user", q), ("assistant", answer))]


def _image_turns(
    rng: random.Random, drawn: Drawn, n_images: int, extra: Drawn | None
) -> list[tuple[str, str]]:
    """1-4 question/answer rounds about the image, the first carrying the image tag(s)."""
    n_rounds = rng.randint(1, min(4, len(drawn.qa)))
    rounds = rng.sample(drawn.qa, n_rounds - (extra is not None))
    if extra is not None:
        rounds.insert(
            0,
            (
                "What is the difference between the two images?",
                f"The first image shows {drawn.caption}, the second shows {extra.caption}.",
            ),
        )
    tags = "\n".join(["<image>"] * n_images)
    first_q = rounds[0][0]
    placement = rng.choices(("start", "end", "middle", "none"), weights=(60, 20, 10, 10))[0]
    if placement == "start":
        first_q = f"{tags}\n{first_q}"
    elif placement == "end":
        first_q = f"{first_q}\n{tags}"
    elif placement == "middle":
        first_q = f"Look at this picture: {tags} {first_q}"
    rounds[0] = (first_q, rounds[0][1])
    return [turn for q, a in rounds for turn in (("user", q), ("assistant", a))]


def _long_turns(rng: random.Random, drawn: Drawn) -> list[tuple[str, str]]:
    """A detailed conversation of :data:`LONG_ROUNDS` rounds about one image."""
    details = (
        f"The image shows {drawn.caption}.",
        "The shapes have clean, sharp edges and there is no text anywhere in the picture.",
        "The colors are flat and evenly lit, without shadows, reflections or gradients.",
        "Nothing in the picture suggests a real scene: it is a synthetic pattern.",
        "The pattern covers the whole frame from one edge to the other.",
        "Such patterns are often used to test cameras, screens and printers.",
    )
    turns = [("user", "<image>\nDescribe this image in great detail.")]
    for round_index in range(LONG_ROUNDS):
        question, answer = drawn.qa[round_index % len(drawn.qa)]
        if round_index:
            turns.append(("user", f"{question} Please explain your answer in detail."))
        turns.append(("assistant", " ".join([answer, *rng.sample(details, 4)])))
    return turns


class _ImageWriter:
    """Writes images under ``images/<source>/<subfolder>/`` with unique LLaVA-like names."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.next_number = {
            source: rng.randrange(*layout[2]) for source, layout in SOURCE_LAYOUT.items()
        }

    def path_for(self, source: str, suffix: str) -> str:
        subfolder, pattern, _ = SOURCE_LAYOUT[source]
        number = self.next_number[source]
        self.next_number[source] += self.rng.randint(1, 997)
        return f"{source}/{subfolder}/{pattern.format(number)}{suffix}"

    def save(self, source: str, drawn: Drawn) -> str:
        rel = self.path_for(source, ".png" if drawn.file_format == "PNG" else ".jpg")
        self.write_image(rel, drawn.image, drawn.file_format)
        return rel

    def write_image(self, rel: str, image: Image.Image, file_format: str) -> None:
        with atomic_write(self.root / rel, "wb") as handle:
            if file_format == "PNG":
                image.save(handle, format="PNG", compress_level=6)
            else:
                # Fixed encoder settings and no metadata: the same bytes on every build.
                image.save(handle, format="JPEG", quality=90, subsampling=0, optimize=False)

    def write_bytes(self, rel: str, data: bytes) -> None:
        with atomic_write(self.root / rel, "wb") as handle:
            handle.write(data)


def _maybe_system(rng: random.Random, turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if rng.random() < 0.1:
        return [("system", rng.choice(SYSTEM_PROMPTS)), *turns]
    return turns


def _make_samples(
    rng: random.Random, nprng: np.random.Generator, writer: _ImageWriter
) -> list[DemoSample]:
    """Every sample in dataset order, with its images written to disk."""
    order = [group.name for group in GROUPS for _ in range(group.count)]
    order += [TEXT_ONLY] * NUM_TEXT_ONLY
    rng.shuffle(order)
    eligible = [i for i, name in enumerate(order) if name not in (TEXT_ONLY, "photo")]
    two_image_positions = set(rng.sample(eligible, NUM_TWO_IMAGES))
    long_position = rng.choice(
        [
            i
            for i, name in enumerate(order)
            if name == GROUPS[0].name and i not in two_image_positions
        ]
    )
    samples: list[DemoSample] = []
    saved: dict[str, list[tuple[str, Drawn]]] = {}
    shared_left = NUM_SHARED_IMAGES
    for position, name in enumerate(order):
        if name == TEXT_ONLY:
            samples.append(DemoSample(TEXT_ONLY, _maybe_system(rng, _text_only_turns(rng))))
            continue
        group = GROUPS_BY_NAME[name]
        # Ids of OCR-VQA and TextVQA samples are their image's name: never share those.
        shareable = group.source not in STRING_ID_SOURCES
        if shareable and shared_left and saved.get(name) and rng.random() < 0.05:
            # Several samples about one image, as LLaVA-665K has for COCO images.
            rel, drawn = rng.choice(saved[name])
            shared_left -= 1
        else:
            drawn = group.draw(rng, nprng, random_size(rng))
            rel = writer.save(group.source, drawn)
            saved.setdefault(name, []).append((rel, drawn))
        images, extra = [rel], None
        if position in two_image_positions:
            other = GROUPS_BY_NAME[
                rng.choice([g.name for g in GROUPS if g.name not in (name, "photo")])
            ]
            extra = other.draw(rng, nprng, random_size(rng))
            images.append(writer.save(other.source, extra))
        if position == long_position:
            turns = _long_turns(rng, drawn)
        else:
            turns = _maybe_system(rng, _image_turns(rng, drawn, len(images), extra))
        samples.append(DemoSample(name, turns, images, long=position == long_position))
    return samples


def _add_broken(
    rng: random.Random, samples: list[DemoSample], writer: _ImageWriter, nprng: np.random.Generator
) -> None:
    """Insert one deliberately broken sample per breakage kind, spread over the file."""
    broken: list[DemoSample] = []
    for kind in BREAKAGES:
        drawn = draw_stripes(rng, nprng, random_size(rng))
        turns = _image_turns(rng, drawn, 1, None)
        rel = writer.path_for("coco", ".jpg")
        sample = DemoSample("broken", turns, [rel], breakage=kind)
        if kind == "truncated":
            writer.write_image(rel, drawn.image, "JPEG")
            data = (writer.root / rel).read_bytes()
            writer.write_bytes(rel, data[: len(data) * 2 // 5])
        elif kind == "zero_bytes":
            writer.write_bytes(rel, b"")
        elif kind == "not_an_image":
            writer.write_bytes(rel, b"This file is a text note saved with a .jpg name.\n")
        elif kind == "too_small":
            writer.write_image(rel, drawn.image.resize((16, 16), Image.Resampling.BILINEAR), "JPEG")
        elif kind == "extreme_aspect":
            # Both sides above the minimum, long/short about 203:1.
            writer.write_image(
                rel, drawn.image.resize((5900, 29), Image.Resampling.BILINEAR), "JPEG"
            )
        elif kind != "missing_file":
            writer.write_image(rel, drawn.image, "JPEG")
        if kind == "tag_mismatch":
            # Two tags for one image.
            question = turns[0][1].replace("<image>", "").strip()
            sample.turns[0] = ("user", f"<image>\n<image>\n{question}")
        broken.append(sample)
    for sample in broken:
        samples.insert(rng.randrange(1, len(samples) + 1), sample)


def _assign_ids(rng: random.Random, samples: list[DemoSample]) -> None:
    """Ints for most samples; strings (LLaVA-665K style) for OCR and TextVQA images."""
    next_int = 1
    for sample in samples:
        source = sample.images[0].split("/", 1)[0] if sample.images else TEXT_ONLY
        if sample.breakage == "missing_id":
            sample.has_id = False
        elif source in STRING_ID_SOURCES:
            # The image's file name, zero padding kept: ids stay exactly as written.
            sample.id = Path(sample.images[0]).stem
        else:
            sample.id = next_int
            next_int += rng.randint(1, 3)
    duplicate = next(s for s in samples if s.breakage == "duplicate_id")
    # The partner comes from the largest group, so rare groups keep all their samples.
    candidates = [s for s in samples if s.breakage is None and s.group == GROUPS[0].name]
    duplicate.id = rng.choice(candidates).id


def _sharegpt_record(sample: DemoSample) -> dict[str, Any]:
    record: dict[str, Any] = {"id": sample.id} if sample.has_id else {}
    record["messages"] = [{"role": role, "content": text} for role, text in sample.turns]
    record["images"] = list(sample.images)
    return record


LLAVA_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def _llava_record(sample: DemoSample) -> dict[str, Any]:
    record: dict[str, Any] = {"id": sample.id} if sample.has_id else {}
    if len(sample.images) == 1:
        record["image"] = sample.images[0]
    elif sample.images:
        record["image"] = list(sample.images)
    record["conversations"] = [
        {"from": LLAVA_ROLES[role], "value": text} for role, text in sample.turns
    ]
    return record


def _expected_invalid(samples: list[DemoSample]) -> dict[str, str]:
    """Dataset index -> reason code, for every sample validate must reject."""
    expected = {}
    duplicated = next(s.id for s in samples if s.breakage == "duplicate_id")
    for index, sample in enumerate(samples):
        if sample.breakage is not None:
            expected[str(index)] = BREAKAGES[sample.breakage]
        elif sample.has_id and sample.id == duplicated:
            # Every occurrence of a repeated id is reported.
            expected[str(index)] = BREAKAGES["duplicate_id"]
    return expected


def write_parquet(out: Path, records: list[Any]) -> Path:
    """``out/dataset.parquet`` from the LLaVA-format ``records`` (see the module doc):
    one row per record of one shape, images read from ``out/images``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for record in records:
        image = record.get("image")
        if not (isinstance(record.get("conversations"), list)
                and isinstance(image, (str, type(None)))
                and isinstance(record.get("id"), (int, str))):
            continue  # rows of one schema only
        file = out / "images" / image if image else None
        rows.append({
            "id": str(record["id"]),
            "image": None if image is None else {
                "bytes": file.read_bytes() if file.is_file() else None, "path": image},
            "conversations": [{"from": str(t.get("from")), "value": str(t.get("value"))}
                              for t in record["conversations"]],
            "data_source": PARQUET_SOURCES[image.split("/")[0]] if image else "text",
        })
    path = out / "dataset.parquet"
    with atomic_write(path, "wb") as handle:
        pq.write_table(pa.Table.from_pylist(rows), handle, row_group_size=50)
    return path


def _group_counts(samples: list[DemoSample]) -> dict[str, dict[str, Any]]:
    """Each group's source, description and number of samples (text-only and broken
    samples as groups of their own), for groups.json."""
    counts = Counter(s.group for s in samples)
    groups = {
        group.name: {
            "source": group.source,
            "description": group.description,
            "count": counts[group.name],
        }
        for group in GROUPS
    }
    groups[TEXT_ONLY] = {
        "source": TEXT_ONLY,
        "description": "conversations without images",
        "count": counts[TEXT_ONLY],
    }
    groups["broken"] = {
        "source": "coco",
        "description": "deliberately broken samples (EXPECTED_INVALID.json)",
        "count": counts["broken"],
    }
    return groups


def build_dataset(out: str | Path, *, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Write the demo's images, the three dataset files, groups.json and
    EXPECTED_INVALID.json.

    Parameters
    ----------
    out : str or Path
        Demo directory; its ``images/`` folder is replaced.
    seed : int, default=0
        Seed of every random choice; the same seed gives byte-identical files.

    Returns
    -------
    summary : dict
        ``num_samples``, ``group_counts`` (group -> samples), ``num_invalid``.
    """
    out = Path(out)
    images_dir = out / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    writer = _ImageWriter(images_dir, rng)
    samples = _make_samples(rng, nprng, writer)
    _add_broken(rng, samples, writer, nprng)
    _assign_ids(rng, samples)

    write_json(out / "dataset.json", [_sharegpt_record(s) for s in samples])
    write_json(out / "dataset_llava.json", [_llava_record(s) for s in samples])
    write_parquet(out, [_llava_record(s) for s in samples])
    expected = _expected_invalid(samples)
    write_json(out / "EXPECTED_INVALID.json", expected)
    groups = _group_counts(samples)
    write_json(
        out / "groups.json",
        {
            "groups": groups,
            "samples": [s.group for s in samples],
            "long_conversations": [i for i, s in enumerate(samples) if s.long],
        },
    )
    return {
        "num_samples": len(samples),
        "group_counts": {name: entry["count"] for name, entry in groups.items()},
        "num_invalid": len(expected),
    }


def build_models(out: str | Path, *, seed: int = DEFAULT_SEED) -> list[Path]:
    """Save the demo's tiny models under ``out/models/`` (see :data:`DEMO_MODELS`)."""
    from scalselect.demo.tinymodels import build_tiny_model

    return [
        build_tiny_model(family, Path(out) / "models" / name, seed=seed)
        for name, family in DEMO_MODELS.items()
    ]


def build_demo(out: str | Path, *, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Build the whole demo (dataset, images, tiny models) into ``out``; see the module doc."""
    summary = build_dataset(out, seed=seed)
    summary["models"] = [str(path) for path in build_models(out, seed=seed)]
    return summary
