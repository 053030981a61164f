"""Where input lives: a local path or a URL (``s3://``, ``gs://``, ``https://``,
``hf://``, ``file://``), read through fsspec and its backends.

Every stage that reads a dataset or an image goes through this module, so a pool moved
from disk to a bucket is read the same way: datasets as seekable streams (ranged reads,
never the whole object per job), images fetched whole, concurrently, with retries and
backoff. Credentials come from where the backends look (AWS environment variables and
profiles, ``AWS_ENDPOINT_URL``, the Hugging Face token, Google's application default
credentials); a URL that carries one (a user name and password, a signed query) is
refused by :func:`credential_problem`, so none reaches a config, log or result. Every
message names a URL as :func:`redact` writes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlsplit

from scalselect.errors import UserError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Bytes fetched per ranged read of a dataset (and cached ahead): few requests, bounded memory.
BLOCK_SIZE = 1 << 23
# Images fetched at once per job. Measured with 50 ms per request (bench/remote_loader.py):
# 32 in flight gave 325 images/s, 64 gave 656/s (fsspec's one event loop halves the ideal).
FETCH_THREADS = 64
# Tries of a transient failure, and the first wait between them (doubled each time, so
# 7 tries wait 0.5 + 1 + ... + 16 = 31.5 s in all: a server restart, not an outage).
ATTEMPTS = 7
FIRST_WAIT_S = 0.5
# Tries of the configuration check: a wrong endpoint is reported in seconds, not minutes.
CHECK_ATTEMPTS = 2
# Query parameters that carry a credential (presigned S3 and GCS URLs, tokens).
_SECRET_QUERY = re.compile(r"(signature|token|credential|secret|password|key|sig)$", re.I)
# What identifies an object's version, by backend (first found wins, size always added).
_VERSION_FIELDS = ("VersionId", "ETag", "etag", "generation", "md5Hash", "blob_id",
                   "lfs", "sha256", "last_commit", "LastModified", "mtime", "last_modified",
                   "updated", "created")


class LocationError(UserError, OSError):
    """A dataset, image folder or object that cannot be read; the message names it, and
    ``missing`` says whether the store answered that it does not exist.

    An ``OSError`` too, so that code handling an unreadable local file handles it."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def is_url(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a URL (``scheme://...``) rather than a local path.

    Examples
    --------
    >>> is_url("s3://bucket/pool.jsonl"), is_url("hf://datasets/org/name/a.parquet")
    (True, True)
    >>> is_url("data/pool.jsonl"), is_url(Path("/data/pool.jsonl"))
    (False, False)
    """
    return isinstance(location, str) and bool(_SCHEME.match(location))


def as_location(value: str | os.PathLike) -> str | Path:
    """A URL as the text it is, a local path as a :class:`~pathlib.Path` (``Path`` would
    fold a URL's ``//``)."""
    return value if is_url(value) else Path(value)


def join(root: str | os.PathLike, relative: str) -> str | Path:
    """The location of ``relative`` under ``root``: ``relative`` itself when it is a URL
    or an absolute path, else joined to ``root`` (with ``/`` under a URL).

    Examples
    --------
    >>> join("s3://b/images/", "coco/1.jpg")
    's3://b/images/coco/1.jpg'
    >>> join("s3://b/images", "./coco/1.jpg")
    's3://b/images/coco/1.jpg'
    >>> str(join("/data", "coco/1.jpg")), join("/data", "s3://b/1.jpg")
    ('/data/coco/1.jpg', 's3://b/1.jpg')
    """
    if is_url(relative):
        return relative
    if is_url(root):
        clean = posixpath.normpath(relative.replace("\\", "/")).lstrip("/")
        return f"{str(root).rstrip('/')}/{clean}"
    candidate = Path(relative)
    return candidate if candidate.is_absolute() else Path(root) / candidate


def redact(location: str | os.PathLike) -> str:
    """``location`` as it may be shown: a URL without its user, password and query.

    Examples
    --------
    >>> redact("https://me:secret@host/a.json?X-Amz-Signature=abc")
    'https://host/a.json?...'
    >>> redact("s3://bucket/a.json")
    's3://bucket/a.json'
    """
    if not is_url(location):
        return str(location)
    parts = urlsplit(str(location))
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" + ("?..." if parts.query else "")


def credential_problem(location: str | os.PathLike) -> str | None:
    """Why a URL must not be written in a configuration: it carries a credential (a user
    and password, or a signed or token query), which would then reach logs and results.

    Examples
    --------
    >>> credential_problem("s3://bucket/a.json") is None
    True
    >>> credential_problem("https://u:p@host/a.json")[:60]
    'https://host/a.json carries a credential (a user and passwor'
    >>> credential_problem("https://host/a.json?X-Amz-Signature=f00")[:50]
    'https://host/a.json?... carries a credential (a si'
    """
    if not is_url(location):
        return None
    parts = urlsplit(str(location))
    if "@" in parts.netloc:
        found = "a user and password"
    elif any(_SECRET_QUERY.search(name) for name, _ in parse_qsl(parts.query)):
        found = "a signed or token query"
    else:
        return None
    return (f"{redact(location)} carries a credential ({found}); give credentials through"
            " the environment instead (AWS_ACCESS_KEY_ID or AWS_PROFILE, HF_TOKEN,"
            " GOOGLE_APPLICATION_CREDENTIALS), never in a URL")


def filesystem(url: str) -> tuple[Any, str]:
    """fsspec's file system for ``url`` and the path within it.

    Raises :class:`LocationError` when the scheme is unknown or its backend is not
    installed (``gs://`` needs gcsfs, ``s3://`` s3fs).
    """
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as error:
        raise LocationError(f"{redact(url)}: the file system for this scheme is not installed"
                            f" ({error})") from None
    except ValueError as error:
        raise LocationError(f"{redact(url)}: {error}") from None


# ---------------------------------------------------------------------------------------
# Failures: which are worth another try, and what to tell the user


def is_transient(error: BaseException) -> bool:
    """Whether another try may succeed: not a missing object, refused access, a wrong
    kind of object or a bad request, which stay as they are."""
    permanent = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                 ValueError, TypeError, ImportError)
    return not isinstance(error, permanent)


def describe(error: BaseException) -> str:
    """What went wrong, in words, without a backend's traceback.

    Examples
    --------
    >>> describe(FileNotFoundError(2, "No such file"))
    'not found'
    >>> describe(PermissionError("Forbidden"))
    'access denied (Forbidden): check the credentials and their permissions'
    """
    if isinstance(error, FileNotFoundError):
        return "not found"
    if isinstance(error, PermissionError):
        detail = f" ({_message(error)})" if _message(error) else ""
        return f"access denied{detail}: check the credentials and their permissions"
    return f"cannot be reached ({type(error).__name__}: {_message(error)})"


def _message(error: BaseException) -> str:
    text = (getattr(error, "strerror", None) or str(error) or "").strip()
    return text.splitlines()[0][:300] if text else ""


def retry(action: Any, url: str, attempts: int | None = None) -> Any:
    """``action()``, tried again after transient failures (``attempts`` tries, by default
    :data:`ATTEMPTS`; waits doubling from :data:`FIRST_WAIT_S`).

    Raises :class:`LocationError` naming ``url`` on a permanent failure, or once the
    tries are spent.
    """
    wait, attempts = FIRST_WAIT_S, attempts or ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except LocationError:
            raise
        except Exception as error:  # noqa: BLE001 - backends raise many types; sorted below
            if not is_transient(error) or attempt == attempts:
                tries = f" after {attempt} tries" if attempt > 1 else ""
                raise LocationError(f"{redact(url)}: {describe(error)}{tries}",
                                    missing=isinstance(error, FileNotFoundError)) from None
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------
# Reading


@contextlib.contextmanager
def open_binary(location: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A seekable binary stream of a file or object. A URL is read in ranged requests of
    :data:`BLOCK_SIZE` as the stream goes, and a read that fails transiently is tried
    again from the same position (:class:`ResumingFile`).

    Raises :class:`LocationError` (a URL) or ``OSError`` (a local file) when it cannot be
    opened or read.
    """
    if not is_url(location):
        with open(location, "rb") as handle:
            yield handle
        return
    handle = ResumingFile(str(location))
    try:
        yield handle  # type: ignore[misc]
    finally:
        handle.close()


class ResumingFile:
    """A remote object read as a seekable stream whose reads survive dropped
    connections: a failed read reopens the object and goes on from the position reached
    (with :func:`retry`'s waits)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.path = filesystem(url)
        self.position = 0
        self.closed = False
        self._handle: Any = None
        retry(self._reopen, url)

    def _reopen(self) -> Any:
        if self._handle is None:
            self._handle = self.fs.open(self.path, "rb", block_size=BLOCK_SIZE)
            self._handle.seek(self.position)
        return self._handle

    def _drop(self) -> None:
        with contextlib.suppress(Exception):
            self._handle.close()
        self._handle = None

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the position (``-1``: to the end)."""

        def attempt() -> bytes:
            try:
                return self._reopen().read(size)
            except Exception:
                self._drop()
                raise

        data = retry(attempt, self.url)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position (``whence`` as for :meth:`io.IOBase.seek`)."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.size}[whence]
        self.position = base + offset
        if self._handle is not None:
            self._handle.seek(self.position)
        return self.position

    def tell(self) -> int:
        return self.position

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        return int(retry(self._reopen, self.url).size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        if self._handle is not None:
            self._drop()
        self.closed = True

    def __enter__(self) -> ResumingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def info(location: str | os.PathLike) -> dict[str, Any]:
    """What the store says about a file or object (``size``, ``type`` and the backend's
    version fields); a local file's ``size`` and ``mtime``."""
    if not is_url(location):
        status = os.stat(location)
        return {"size": status.st_size, "mtime": status.st_mtime_ns, "type": "file"}
    url = str(location)
    fs, path = filesystem(url)
    return retry(lambda: fs.info(path), url)


def size(location: str | os.PathLike) -> int:
    """The size in bytes of a file or object."""
    return int(info(location)["size"])


def version(location: str | os.PathLike) -> str:
    """A short token that changes when the object at ``location`` changes: its size and
    the first version field the backend gives (S3's version id or ETag, GCS's generation,
    the Hub's blob or LFS digest, else the modification time)."""
    facts = info(location)
    chosen = next((name for name in _VERSION_FIELDS if facts.get(name) is not None), None)
    value = {"size": facts.get("size"), **({chosen: facts[chosen]} if chosen else {})}
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_bytes(location: str | os.PathLike) -> bytes:
    """The whole content of a file or object (a URL's fetch retried when transient).

    Raises ``OSError`` (a local file) or :class:`LocationError` (a URL)."""
    if not is_url(location):
        return Path(location).read_bytes()
    url = str(location)
    fs, path = filesystem(url)
    return retry(lambda: fs.cat_file(path), url)


@dataclass(frozen=True)
class FetchFailure:
    """An image that could not be fetched: ``missing`` when the store says it does not
    exist, else unreachable (after the retries) or refused; ``detail`` says which."""

    missing: bool
    detail: str


def fetch(location: str | os.PathLike) -> bytes | FetchFailure:
    """:func:`read_bytes`, with a failure as a value (one image must not stop a batch)."""
    try:
        return read_bytes(location)
    except LocationError as error:
        return FetchFailure(error.missing, str(error))
    except FileNotFoundError as error:
        return FetchFailure(True, f"{error.strerror or 'not found'} ({location})")
    except OSError as error:
        return FetchFailure(False, f"{error.strerror or error} ({location})")


def image_source(location: str | os.PathLike) -> str | os.PathLike | io.BytesIO:
    """What Pillow opens for the image at ``location``: a local file as is, an object at
    a URL fetched into memory (:class:`LocationError` when it cannot be)."""
    return io.BytesIO(read_bytes(location)) if is_url(location) else location


def fetch_all(locations: Iterable[str | os.PathLike],
              threads: int = FETCH_THREADS) -> Iterator[bytes | FetchFailure]:
    """The bytes of each location, in order, fetched ``threads`` at a time (at most
    ``4 * threads`` held ahead of the consumer)."""
    window = 4 * threads
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: list[Any] = []
        for location in locations:
            pending.append(pool.submit(fetch, location))
            if len(pending) >= window:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def check(location: str | os.PathLike, folder: bool = False) -> str | None:
    """Why ``location`` cannot serve as input (missing, a file where a folder is wanted,
    access denied, unreachable), or ``None``; asks the store once (:data:`CHECK_ATTEMPTS`
    tries)."""
    problem = credential_problem(location)
    if problem:
        return problem
    if not is_url(location):
        path = Path(location)
        if not path.exists():
            return f"{location} does not exist"
        if path.is_dir() != folder:
            return f"{location} is {'not ' if folder else ''}a folder"
        return None
    url = str(location)
    try:
        fs, path = filesystem(url)
        if folder and url.startswith(("http://", "https://")):
            return None  # HTTP has no folders to ask about: validate checks every image
        # An object store's "folder" is a prefix holding objects: a directory here.
        kind = retry(lambda: fs.info(path), url, CHECK_ATTEMPTS).get("type")
    except LocationError as error:
        return str(error)
    if folder and kind != "directory":
        return f"{redact(url)} is a file, not a folder"
    return f"{redact(url)} is a folder, not a file" if not folder and kind == "directory" else None
