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

import math
import random
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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

Color = tuple[int, int, int]

PALETTE: dict[str, Color] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 119, 180),
    "yellow": (240, 220, 40),
    "orange": (255, 127, 14),
    "purple": (148, 103, 189),
    "pink": (247, 129, 191),
    "brown": (140, 86, 75),
    "cyan": (23, 190, 207),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "gray": (127, 127, 127),
}

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

# fmt: off
BOOK_WORDS = (
    ("The", "Quiet", "River"), ("Modern", "Garden", "Design"), ("A", "History", "of", "Salt"),
    ("Cooking", "with", "Fire"), ("The", "Last", "Lighthouse"), ("Practical", "Statistics"),
    ("Night", "Train", "North"), ("Birds", "of", "the", "Coast"), ("Learning", "Python"),
    ("The", "Glass", "Orchard"), ("Small", "Houses"), ("Winter", "Tales"),
)
BOOK_GENRES = (
    "Fiction", "Home & Garden", "History", "Cookbooks", "Mystery", "Science", "Travel",
    "Nature", "Computers", "Literature", "Architecture", "Poetry",
)
AUTHORS = (
    "Ana Ortiz", "Tom Becker", "Mei Chen", "Ravi Patel", "Lena Novak", "Sam Okafor",
    "Ines Duarte", "Karl Weiss", "Yuki Sato", "Omar Haddad",
)
SIGN_WORDS = (
    "STOP", "EXIT", "OPEN", "CLOSED", "SALE", "PARKING", "NO ENTRY", "CAFE", "PUSH",
    "BUS 42", "ROUTE 9", "HOTEL",
)
# fmt: on


@dataclass
class Drawn:
    """One generated image, what it shows, and questions it can answer."""

    image: Image.Image
    caption: str
    qa: list[tuple[str, str]]
    file_format: str = "JPEG"


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


def _pick_colors(rng: random.Random, n: int) -> list[str]:
    return rng.sample(sorted(PALETTE), n)


def _size(rng: random.Random) -> tuple[int, int]:
    """A random (width, height) between 96 and 320 px with a varied aspect ratio."""
    aspect = rng.choice((1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16, 2.0, 0.5, 1.5))
    long_side = rng.randrange(128, 321, 16)
    if aspect >= 1:
        width, height = long_side, max(96, round(long_side / aspect))
    else:
        width, height = max(96, round(long_side * aspect)), long_side
    return width, height


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled default font: the same glyphs on every machine with this Pillow.
    return ImageFont.load_default(size=size)


def draw_stripes(rng: random.Random, nprng: np.random.Generator, size: tuple[int, int]) -> Drawn:
    """Parallel stripes of two colours, horizontal, vertical or diagonal."""
    width, height = size
    first, second = _pick_colors(rng, 2)
    orientation = rng.choice(("horizontal", "vertical", "diagonal"))
    n = rng.randint(3, 12)
    image = Image.new("RGB", size, PALETTE[first])
    draw = ImageDraw.Draw(image)
    if orientation == "horizontal":
        step = height / n
        for i in range(1, n, 2):
            draw.rectangle(
                (0, round(i * step), width, round((i + 1) * step) - 1), fill=PALETTE[second]
            )
    elif orientation == "vertical":
        step = width / n
        for i in range(1, n, 2):
            draw.rectangle(
                (round(i * step), 0, round((i + 1) * step) - 1, height), fill=PALETTE[second]
            )
    else:
        step = (width + height) / n
        for i in range(1, n, 2):
            a, b = i * step, (i + 1) * step
            draw.polygon(
                [(a, 0), (b, 0), (b - height, height), (a - height, height)], fill=PALETTE[second]
            )
    caption = f"{orientation} {first} and {second} stripes"
    return Drawn(
        image,
        f"a pattern of {caption}",
        [
            ("What pattern is shown in the image?", f"The image shows {caption}."),
            ("Which direction do the stripes run?", f"The stripes are {orientation}."),
            ("What colors are the stripes?", f"They alternate between {first} and {second}."),
            ("Is there any text in the image?", "No, there is no text, only stripes."),
            ("Roughly how many stripes are there?", f"There are about {n} stripes."),
        ],
    )


def draw_circles(rng: random.Random, nprng: np.random.Generator, size: tuple[int, int]) -> Drawn:
    """A few filled circles of one colour on a plain background."""
    width, height = size
    background, color = _pick_colors(rng, 2)
    n = rng.randint(1, 6)
    image = Image.new("RGB", size, PALETTE[background])
    draw = ImageDraw.Draw(image)
    for _ in range(n):
        r = rng.randint(8, max(9, min(width, height) // 5))
        x, y = rng.randint(r, width - r), rng.randint(r, height - r)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=PALETTE[color], outline=PALETTE["black"])
    noun = "circle" if n == 1 else "circles"
    return Drawn(
        image,
        f"{n} {color} {noun} on a {background} background",
        [
            (
                "How many circles are in the image?",
                f"There {'is' if n == 1 else 'are'} {n} {noun}.",
            ),
            ("What color are the circles?", f"The {noun} {'is' if n == 1 else 'are'} {color}."),
            ("What is the background color?", f"The background is {background}."),
            (
                "Describe the image.",
                f"The image shows {n} {color} {noun} on a plain {background} background.",
            ),
        ],
    )


def draw_gradient(rng: random.Random, nprng: np.random.Generator, size: tuple[int, int]) -> Drawn:
    """A smooth linear colour gradient between two colours."""
    width, height = size
    start, end = _pick_colors(rng, 2)
    direction = rng.choice(("left to right", "top to bottom"))
    steps = width if direction == "left to right" else height
    t = np.linspace(0.0, 1.0, steps, dtype=np.float64)[:, None]
    line = (1 - t) * np.array(PALETTE[start]) + t * np.array(PALETTE[end])
    line = np.round(line).astype(np.uint8)
    pixels = (
        np.broadcast_to(line[None, :, :], (height, width, 3))
        if direction == "left to right"
        else np.broadcast_to(line[:, None, :], (height, width, 3))
    )
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return Drawn(
        image,
        f"a gradient from {start} to {end}, {direction}",
        [
            ("What does the image show?", f"A smooth color gradient from {start} to {end}."),
            ("In which direction does the color change?", f"The color changes from {direction}."),
            ("Which color is at the start of the gradient?", f"It starts with {start}."),
            ("Are there any objects in the image?", "No, it is only a smooth gradient."),
        ],
    )


def draw_checkerboard(
    rng: random.Random, nprng: np.random.Generator, size: tuple[int, int]
) -> Drawn:
    """A checkerboard of two colours with square tiles."""
    width, height = size
    first, second = _pick_colors(rng, 2)
    tile = rng.choice((8, 12, 16, 24, 32))
    ys, xs = np.mgrid[0:height, 0:width]
    mask = ((ys // tile + xs // tile) % 2).astype(bool)
    pixels = np.where(
        mask[..., None], np.array(PALETTE[second], np.uint8), np.array(PALETTE[first], np.uint8)
    )
    image = Image.fromarray(pixels.astype(np.uint8))
    return Drawn(
        image,
        f"a {first} and {second} checkerboard",
        [
            ("What pattern is this?", f"It is a checkerboard of {first} and {second} squares."),
            ("What colors are the squares?", f"The squares are {first} and {second}."),
            (
                "Are the tiles large or small?",
                f"The tiles are {'small' if tile <= 12 else 'large'}, about {tile} pixels wide.",
            ),
            ("Is this a photograph?", "No, it is a synthetic checkerboard pattern."),
        ],
    )


def draw_book_cover(rng: random.Random, nprng: np.random.Generator, size: tuple[int, int]) -> Drawn:
    """A book cover with a printed title and author (OCR-VQA style)."""
    height = rng.randrange(224, 321, 16)
    width = round(height * rng.choice((0.62, 0.66, 0.7, 0.75)))
    background, band = _pick_colors(rng, 2)
    index = rng.randrange(len(BOOK_WORDS))
    title, genre = " ".join(BOOK_WORDS[index]), BOOK_GENRES[index]
    author = rng.choice(AUTHORS)
    image = Image.new("RGB", (width, height), PALETTE[background])
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height // 5, width, height // 5 + height // 3), fill=PALETTE[band])
    ink = (
        PALETTE["white"]
        if band in ("black", "blue", "purple", "brown", "gray", "red", "green")
        else PALETTE["black"]
    )
    font = _font(max(12, width // 9))
    y = height // 5 + 6
    for word in BOOK_WORDS[index]:
        draw.text((8, y), word, fill=ink, font=font)
        y += font.size + 2
    draw.text(
        (8, height - height // 6),
        author,
        fill=PALETTE["black"] if background != "black" else PALETTE["white"],
        font=_font(max(10, width // 14)),
    )
    return Drawn(
        image,
        f"the cover of the book '{title}' by {author}",
        [
            ("Who wrote this book?", author),
            ("What is the title of this book?", title),
            ("What is the genre of this book?", genre),
            ("Is this a novel?", "Yes" if genre in ("Fiction", "Mystery", "Literature") else "No"),
        ],
    )


def draw_noise(rng: random.Random, nprng: np.random.Generator, size: tuple[int, int]) -> Drawn:
    """Blocky random colour noise."""
    width, height = size
    block = rng.choice((4, 8, 16))
    small = nprng.integers(
        0, 256, size=(math.ceil(height / block), math.ceil(width / block), 3), dtype=np.uint8
    )
    image = Image.fromarray(small).resize((width, height), Image.Resampling.NEAREST)
    return Drawn(
        image,
        "random colored noise",
        [
            ("What is in this image?", "Random colored noise made of small square blocks."),
            ("Can you recognize any object?", "No, the image contains only noise."),
            ("Is the texture smooth or rough?", "It is rough and blocky."),
        ],
    )


def draw_sign(rng: random.Random, nprng: np.random.Generator, size: tuple[int, int]) -> Drawn:
    """A street sign with a short word on a plain scene (TextVQA style)."""
    width, height = size
    sky, plate = _pick_colors(rng, 2)
    word = rng.choice(SIGN_WORDS)
    image = Image.new("RGB", size, PALETTE[sky])
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 2 - 3, height // 2, width // 2 + 3, height), fill=PALETTE["gray"])
    font = _font(max(12, min(width, height) // 7))
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    w, h = right - left + 16, bottom - top + 16
    x0, y0 = (width - w) // 2, max(4, height // 2 - h)
    draw.rectangle((x0, y0, x0 + w, y0 + h), fill=PALETTE[plate], outline=PALETTE["white"], width=2)
    ink = (
        PALETTE["white"]
        if plate in ("black", "blue", "purple", "brown", "red", "green")
        else PALETTE["black"]
    )
    draw.text((x0 + 8 - left, y0 + 8 - top), word, fill=ink, font=font)
    return Drawn(
        image,
        f"a {plate} sign that reads '{word}'",
        [
            ("What does the sign say?", word),
            ("What color is the sign?", f"The sign is {plate}."),
            ("What is written on the sign?", f'It says "{word}".'),
        ],
    )


def draw_rings(rng: random.Random, nprng: np.random.Generator, size: tuple[int, int]) -> Drawn:
    """Concentric rings, like a target (a rare group, saved as PNG)."""
    width, height = size
    first, second = rng.sample(sorted(set(PALETTE) - {"white"}), 2)
    n = rng.randint(3, 7)
    image = Image.new("RGB", size, PALETTE["white"])
    draw = ImageDraw.Draw(image)
    cx, cy, radius = width // 2, height // 2, min(width, height) // 2 - 2
    for i in range(n):
        r = radius * (n - i) / n
        draw.ellipse(
            (cx - r, cy - r, cx + r, cy + r), fill=PALETTE[first if i % 2 == 0 else second]
        )
    return Drawn(
        image,
        f"a target of {n} concentric {first} and {second} rings",
        [
            (
                "What does this image look like?",
                f"It looks like a target made of {n} concentric rings.",
            ),
            ("What colors are the rings?", f"The rings alternate between {first} and {second}."),
            ("What is at the center?", f"A small {first if (n - 1) % 2 == 0 else second} disc."),
        ],
        file_format="PNG",
    )


def _hopper() -> Image.Image:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        return Image.open(handle).convert("RGB")


def draw_photo(rng: random.Random, nprng: np.random.Generator, size: tuple[int, int]) -> Drawn:
    """A crop of the real photograph of Grace Hopper shipped with matplotlib."""
    photo = _hopper()
    crops = {
        "portrait": (
            (0, 0, 512, 600),
            "a portrait of a woman in a dark naval uniform and cap in front of a flag",
        ),
        "face": (
            (130, 20, 400, 360),
            "a close-up of an elderly woman wearing glasses and a naval cap",
        ),
        "uniform": ((60, 320, 512, 600), "a dark uniform with a name tag and rows of ribbons"),
        "flag": (
            (0, 0, 200, 400),
            "part of a flag with white stars on a blue field and red and white stripes",
        ),
    }
    name = rng.choice(sorted(crops))
    box, caption = crops[name]
    crop = photo.crop(box)
    scale = min(320 / crop.width, 320 / crop.height, 1.0) * rng.choice((0.6, 0.8, 1.0))
    image = crop.resize(
        (max(96, round(crop.width * scale)), max(96, round(crop.height * scale))),
        Image.Resampling.BICUBIC,
    )
    return Drawn(
        image,
        caption,
        [
            ("Describe the image.", f"It is a photograph showing {caption}."),
            ("Is this a photograph or a drawing?", "It is a real photograph."),
            (
                "What colors dominate the image?",
                "Dark navy blue, with some red, white and skin tones.",
            ),
            (
                "Is anyone wearing glasses?",
                "Yes." if name in ("portrait", "face") else "No face is visible in this part.",
            ),
        ],
    )


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
            drawn = group.draw(rng, nprng, _size(rng))
            rel = writer.save(group.source, drawn)
            saved.setdefault(name, []).append((rel, drawn))
        images, extra = [rel], None
        if position in two_image_positions:
            other = GROUPS_BY_NAME[
                rng.choice([g.name for g in GROUPS if g.name not in (name, "photo")])
            ]
            extra = other.draw(rng, nprng, _size(rng))
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
        drawn = draw_stripes(rng, nprng, _size(rng))
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
