"""The check of one image, and of many on worker processes (:mod:`scalselect.data.validation`).

An image is a file, an object at a URL (fetched whole, :mod:`scalselect.locations`) or
the bytes embedded in a record. Its outcome is a reason code (``missing_image``,
``unreachable_image``, ``empty_image_file``, ``not_an_image``, ``corrupt_image``,
``decompression_bomb``, ``image_too_small``, ``extreme_aspect_ratio``) or ``None`` when it
is usable; the module docstring of :mod:`scalselect.data.validation` says what each means.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from scalselect.locations import FetchFailure, fetch, fetch_all, is_url
from scalselect.progress import Progress
from scalselect.settings import ValidateSettings

# Images per task sent to a worker: large enough to amortise the inter-process traffic.
CHUNK = 256


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of checking one image file: ``reason`` is ``None`` when it is usable."""

    reason: str | None
    detail: str = ""
    width: int = 0
    height: int = 0


def check_image(
    path: str | os.PathLike | bytes,
    decode: bool = True,
    min_side: int = ValidateSettings.min_image_side,
    max_aspect_ratio: float = ValidateSettings.max_aspect_ratio,
) -> ImageCheck:
    """Check one image file, or the bytes of an image embedded in a record.

    Parameters
    ----------
    path : str, PathLike or bytes
        The file or URL, or the image's bytes.
    decode : bool
        Fully decode the pixels (finds truncated and corrupt files); otherwise only
        the header is read.
    min_side : int
        Smallest acceptable width and height, in pixels.
    max_aspect_ratio : float
        Largest acceptable long side / short side.

    Returns
    -------
    ImageCheck
        ``reason`` is one of ``missing_image``, ``unreachable_image`` (a URL that
        still failed after the retries, or refused access), ``empty_image_file``, ``not_an_image``,
        ``corrupt_image``, ``decompression_bomb``, ``image_too_small``,
        ``extreme_aspect_ratio``, or ``None``.
    """
    source = _source(path)
    if isinstance(source, ImageCheck):
        return source
    size = _open(source, decode)
    if isinstance(size, ImageCheck):
        return size
    return _check_shape(*size, min_side, max_aspect_ratio)


def _source(path: str | os.PathLike | bytes) -> Any:
    """What Pillow opens: the file or a stream of the bytes; the check's outcome when
    there is nothing to open."""
    if is_url(path):
        path = _fetched(fetch(path))
        if isinstance(path, ImageCheck):
            return path
    if isinstance(path, bytes):
        if not path:
            return ImageCheck("empty_image_file", "zero bytes")
        return io.BytesIO(path)
    try:
        status = os.stat(path)
    except OSError as error:
        return ImageCheck("missing_image", f"{error.strerror} ({path})")
    if not stat.S_ISREG(status.st_mode):
        return ImageCheck("missing_image", f"not a regular file ({path})")
    if status.st_size == 0:
        return ImageCheck("empty_image_file", "zero bytes")
    return path


def _fetched(got: bytes | FetchFailure) -> bytes | ImageCheck:
    """A fetched image's bytes, or the check's outcome when the fetch failed."""
    if isinstance(got, FetchFailure):
        return ImageCheck("missing_image" if got.missing else "unreachable_image", got.detail)
    return got


def _open(source: Any, decode: bool) -> tuple[int, int] | ImageCheck:
    """``(width, height)`` of the image (its pixels decoded when ``decode``), or the
    check's outcome when it cannot be read."""
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; both are bombs here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as image:
                width, height = image.size
                if decode:
                    image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            return ImageCheck("decompression_bomb", str(error))
        except UnidentifiedImageError:
            return ImageCheck("not_an_image", "not a recognised image format")
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            return ImageCheck("corrupt_image", str(error) or type(error).__name__)
    return width, height


def _check_shape(width: int, height: int, min_side: int, max_aspect_ratio: float) -> ImageCheck:
    """The outcome of an image that opened: its sides and aspect ratio against the limits."""
    short, long = min(width, height), max(width, height)
    if short < min_side:
        return ImageCheck(
            "image_too_small", f"{width}x{height}, a side under {min_side} px", width, height
        )
    if long / short > max_aspect_ratio:
        return ImageCheck(
            "extreme_aspect_ratio",
            f"{width}x{height}, aspect ratio {long / short:.0f}:1 > {max_aspect_ratio:g}:1",
            width,
            height,
        )
    return ImageCheck(None, "", width, height)


def _check_chunk(task: tuple[list[str | bytes], tuple[bool, int, float]]) -> list[ImageCheck]:
    """The checks of one chunk; its URLs are fetched concurrently first, by the worker
    that checks them (no process holds more than its chunk's bytes)."""
    sources, limits = task
    return [s if isinstance(s, ImageCheck) else check_image(s, *limits)
            for s in _fetch_urls(sources)]


def _fetch_urls(sources: Sequence[str | bytes]) -> list[str | bytes | ImageCheck]:
    """``sources`` with each URL replaced by its bytes, fetched concurrently, or by the
    outcome of a failed fetch."""
    urls = [s for s in sources if is_url(s)]
    if not urls:
        return list(sources)
    fetched = iter(fetch_all(urls))
    return [_fetched(next(fetched)) if is_url(s) else s for s in sources]


class ImageChecker:
    """Checks images on worker processes (created on first use) in chunks of
    :data:`CHUNK`; the processes receive paths or image bytes and send back small
    results. ``decode``, ``min_side`` and ``max_aspect_ratio`` are those of
    :func:`check_image`."""

    def __init__(self, workers: int, decode: bool, min_side: int, max_aspect_ratio: float) -> None:
        self.workers = workers
        self.limits = (decode, min_side, max_aspect_ratio)
        self._stack = contextlib.ExitStack()
        self._pool: Any = None

    def __enter__(self) -> ImageChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def batch(self) -> int:
        """Images worth checking at once: a chunk for each worker."""
        return CHUNK * self.workers

    def check(
        self, sources: Sequence[str | bytes], progress: Progress | None = None
    ) -> Iterator[ImageCheck]:
        """The check of each path or image bytes, in order (counted in ``progress``)."""
        chunks = [(list(sources[i : i + CHUNK]), self.limits) for i in range(0, len(sources), CHUNK)]
        mapper: Callable[..., Iterable[list[ImageCheck]]] = map
        if self.workers > 1 and len(chunks) > 1:
            if self._pool is None:
                # spawn: forked children would copy the parent's memory page by page as
                # their garbage collector touches it.
                context = multiprocessing.get_context("spawn")
                self._pool = self._stack.enter_context(context.Pool(self.workers))
            mapper = self._pool.imap
        for (chunk, _), checks in zip(chunks, mapper(_check_chunk, chunks)):
            if progress is not None:
                progress.update(images=len(chunk))
            yield from checks
