"""The demo's images (:mod:`scalselect.demo.build`): one drawing function per visual
group, each giving an image, its caption and questions it can answer.

Drawings are deterministic given the random generators they receive; text uses
Pillow's bundled default font, and the photographs are crops of the one that
matplotlib ships (``grace_hopper.jpg``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


def _pick_colors(rng: random.Random, n: int) -> list[str]:
    return rng.sample(sorted(PALETTE), n)


def random_size(rng: random.Random) -> tuple[int, int]:
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
