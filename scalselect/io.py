"""Crash-safe file output: every result is written to a temporary file in the same
directory and renamed into place, so a killed job never leaves a partial file that
looks finished. Also the digest of a file's bytes, read as a stream."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from scalselect.locations import open_binary

_HASH_BLOCK = 1 << 20
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched.
    ``mode`` is ``"w"`` (text, UTF-8) or ``"wb"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; results are shared, so honour the umask instead.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in an empty sibling ``<path>.partial``, which replaces ``path``
    as a whole on success (no reader sees a half-written folder).

    On an exception the partial folder is removed and ``path`` is left untouched.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    os.replace(partial, path)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as UTF-8 JSON, atomically."""
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=indent, ensure_ascii=False)
        handle.write("\n")


_kill_counts: dict[str, int] = {}


def kill_point(variable: str) -> None:
    """For crash tests: with the environment variable ``variable`` set to ``k``, the
    process SIGKILLs itself at the ``k``-th call naming that variable (no polling race)."""
    limit = os.environ.get(variable)
    if limit is None:
        return
    _kill_counts[variable] = _kill_counts.get(variable, 0) + 1
    if _kill_counts[variable] >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes (or an object's, at a URL)."""
    digest = hashlib.sha256()
    with open_binary(path) as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
