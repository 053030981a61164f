"""Reading visual-instruction datasets: one normalised view of three record formats.

Supported record formats (auto-detected per file from the records' keys, or forced):

- ``sharegpt``: ``{"id", "messages": [{"role", "content"}], "images": [path, ...]}``
  (the original ScalSelect tool's format); roles ``user``, ``assistant``, ``system``.
- ``llava``: ``{"id", "conversations": [{"from", "value"}], "image": path | [path, ...]}``
  (LLaVA-665K as downloaded; text-only records have no ``image``); ``from`` is
  ``human`` (user), ``gpt`` (assistant) or ``system``.
- ``llava_images``: the same conversations with an ``images`` list (LLaMA-Factory's
  sharegpt style).

A file is a JSON array of records or JSON Lines (one record per line; blank lines are
skipped and do not count as records). JSON Lines is recognised by the ``.jsonl`` /
``.ndjson`` extension or, whatever the name, by a file holding several top-level objects.

Records are kept exactly as read (``Dataset.records``) and written back unchanged by
:func:`write_records`; every stage keys samples by their position in the file, never by
id, so repeated ids neither merge nor lose samples. :meth:`Dataset.sample` gives the
normalised view. It keeps each message's text as written, ``<image>`` tags included:
moving all image placeholders to the start of the first user turn (and removing the
``<image>``/``<img>`` tags there), as the original tool did, is the extractor's job.
Content given as a list of typed parts (``{"type": "text", "text": ...}`` and
``{"type": "image"}``) is flattened into one string, parts concatenated as they are,
image parts written as ``<image>``. A ``null`` image field counts as no image.

The source label of a sample (for figures and summaries) is the first folder of its
first image path (``coco/train2017/1.jpg`` -> ``coco``; ``(root)`` for an image directly
under the image root), ``text-only`` without images, or the value of a configured record
field (``source_field``) when the record has it as a string or an integer.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalselect.errors import UserError
from scalselect.io import atomic_write

TEXT_ONLY = "text-only"
IMAGE_TAG = "<image>"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
NON_SPACE = re.compile(r"\S")


class DatasetError(UserError):
    """A dataset file that cannot be read, or a record that cannot be normalised."""


@dataclass(frozen=True)
class RecordFormat:
    """The field names and role vocabulary of one record format."""

    name: str
    messages_key: str
    role_key: str
    content_key: str
    images_key: str
    # Input role -> normalised role.
    roles: dict[str, str]
    # Whether the image field may also be a single path string (LLaVA's ``image``).
    single_image: bool

    def describe(self) -> str:
        """How the format looks, for error messages."""
        return f"{self.name} ('{self.messages_key}' with '{self.images_key}')"


FORMATS: dict[str, RecordFormat] = {
    "sharegpt": RecordFormat(
        "sharegpt",
        "messages",
        "role",
        "content",
        "images",
        {"user": "user", "assistant": "assistant", "system": "system"},
        False,
    ),
    "llava": RecordFormat(
        "llava",
        "conversations",
        "from",
        "value",
        "image",
        {"human": "user", "gpt": "assistant", "system": "system"},
        True,
    ),
    "llava_images": RecordFormat(
        "llava_images",
        "conversations",
        "from",
        "value",
        "images",
        {"human": "user", "gpt": "assistant", "system": "system"},
        False,
    ),
}


@dataclass(frozen=True, slots=True)
class Message:
    """One turn: ``role`` is ``"system"``, ``"user"`` or ``"assistant"``."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Sample:
    """The normalised view of one record.

    ``index`` is the record's position in the file, ``id`` its id exactly as given
    (``None`` when absent), ``images`` the image paths as written (relative to the image
    root unless absolute) and ``source`` its source label.
    """

    index: int
    id: int | str | None
    messages: tuple[Message, ...]
    images: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class Problem:
    """A structural defect of a record: a reason code and a message naming the field."""

    reason: str
    detail: str


class Dataset:
    """The records of one dataset file, with their format.

    Attributes
    ----------
    path : Path
        The file read.
    format : str
        ``"sharegpt"``, ``"llava"`` or ``"llava_images"``.
    records : list
        The records exactly as parsed.
    sha256 : str
        Hex digest of the file's bytes (ties a validation report to its dataset).
    source_field : str or None
        Record field used as the source label, if configured.
    """

    def __init__(
        self,
        path: Path,
        format: str,
        records: list[Any],
        sha256: str,
        source_field: str | None = None,
    ) -> None:
        self.path = path
        self.format = format
        self.records = records
        self.sha256 = sha256
        self.source_field = source_field

    @property
    def spec(self) -> RecordFormat:
        """Field names of this dataset's record format."""
        return FORMATS[self.format]

    def __len__(self) -> int:
        return len(self.records)

    def inspect(self, index: int) -> tuple[Sample | None, list[Problem]]:
        """Normalise record ``index``; the sample is ``None`` when problems were found."""
        return inspect_record(self.records[index], index, self.spec, self.source_field)

    def sample(self, index: int) -> Sample:
        """The normalised record at ``index``.

        Raises ``DatasetError`` naming the record and its defects when it cannot be
        normalised (validate and filter remove such records).
        """
        sample, problems = self.inspect(index)
        if sample is None:
            details = "; ".join(p.detail for p in problems)
            raise DatasetError(f"{self.path}: record {index} is malformed: {details}")
        return sample

    def __iter__(self) -> Iterator[Sample]:
        return (self.sample(i) for i in range(len(self.records)))


def load_dataset(
    path: str | os.PathLike, fmt: str = "auto", *, source_field: str | None = None
) -> Dataset:
    """Read a dataset file (JSON array or JSON Lines) and determine its record format.

    Parameters
    ----------
    path : str or PathLike
        The dataset file.
    fmt : str
        ``"auto"`` (detect from the records' keys) or one of :data:`FORMATS`.
    source_field : str, optional
        Record field used as the source label.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Unreadable file, invalid JSON (with line and column), top level not a list,
        empty dataset, or (``fmt="auto"``) records of mixed or unknown formats.
    """
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise DatasetError(
            f"unknown dataset format {fmt!r}; expected auto or one of {', '.join(FORMATS)}"
        )
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read dataset {path}: {error.strerror or error}") from None
    digest = hashlib.sha256(data).hexdigest()
    text = _decode(path, data)
    del data
    # Millions of new containers would trigger many pointless garbage collections.
    collecting = gc.isenabled()
    gc.disable()
    try:
        records = _parse(path, text)
    finally:
        if collecting:
            gc.enable()
    if not records:
        raise DatasetError(f"{path}: the dataset is empty (no records)")
    name = detect_format(records, path) if fmt == "auto" else fmt
    return Dataset(path, name, records, digest, source_field)


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DatasetError(
            f"{path}: not UTF-8 text at line {line}, column {column} (byte {error.start})"
        ) from None


def _parse(path: Path, text: str) -> list[Any]:
    """Records of a JSON array or JSON Lines text."""
    if path.suffix.lower() in JSONL_SUFFIXES:
        return _parse_lines(path, text)
    # A search, not text.lstrip(): that would copy a file-sized string.
    first = NON_SPACE.search(text)
    if first is None:
        raise DatasetError(f"{path}: the dataset is empty (no records)")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        # Several objects one after another: JSON Lines under another name.
        if first.group() == "{" and error.msg == "Extra data":
            return _parse_lines(path, text)
        raise DatasetError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(value, list):
        raise DatasetError(
            f"{path}: the top level is a JSON {_json_type(value)}, not a list of records"
            + (" (a JSON Lines file must be named *.jsonl)" if isinstance(value, dict) else "")
        )
    return value


def _parse_lines(path: Path, text: str) -> list[Any]:
    records = []
    decode = json.JSONDecoder().decode
    for lineno, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        try:
            records.append(decode(line))
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{path}: invalid JSON Lines record at line {lineno}, column {error.colno}:"
                f" {error.msg}"
            ) from None
    return records


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one by one (``split`` would hold a second copy of a big file;
    ``splitlines`` would also split at U+2028 and friends, which JSON strings may hold)."""
    start = 0
    while start <= len(text):
        end = text.find("\n", start)
        if end < 0:
            end = len(text)
        yield text[start:end]
        start = end + 1


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _record_formats(record: dict) -> set[str]:
    """Formats a record's keys are compatible with (empty: contradictory keys)."""
    if "messages" in record:
        return set() if "conversations" in record else {"sharegpt"}
    has_image, has_images = "image" in record, "images" in record
    if has_image and has_images:
        return set()
    if has_image:
        return {"llava"}
    if has_images:
        return {"llava_images"}
    # A text-only conversations record fits both LLaVA variants.
    return {"llava", "llava_images"}


def detect_format(records: Sequence[Any], path: str | os.PathLike = "dataset") -> str:
    """The one record format that all records' keys agree on.

    Records that are not objects or have neither ``messages`` nor ``conversations`` do
    not vote (validation reports them). A file of text-only conversations records is
    ``llava``.

    Raises ``DatasetError`` naming the first record that contradicts the earlier ones,
    or when no record has a known format.
    """
    candidates: set[str] | None = None
    first = None
    for index, record in enumerate(records):
        if not isinstance(record, dict) or (
            "messages" not in record and "conversations" not in record
        ):
            continue
        formats = _record_formats(record)
        if not formats:
            keys = sorted(
                k for k in ("messages", "conversations", "image", "images") if k in record
            )
            raise DatasetError(
                f"{path}: record {index} mixes the keys of several formats ({', '.join(keys)})"
            )
        if candidates is None:
            candidates, first = formats, index
        elif not candidates & formats:
            raise DatasetError(
                f"{path}: mixed record formats: record {index} is {_describe(formats)} but"
                f" record {first} is {_describe(candidates)}; a dataset file must use one format"
            )
        elif not candidates <= formats:
            # This record narrows the format down: later conflicts name it.
            candidates, first = candidates & formats, index
    if candidates is None:
        keys = sorted(records[0]) if isinstance(records[0], dict) else _json_type(records[0])
        raise DatasetError(
            f"{path}: unknown record format: no record has 'messages' or 'conversations'"
            f" (record 0: {keys}); expected one of {', '.join(FORMATS)}"
        )
    return "llava" if candidates == {"llava", "llava_images"} else candidates.pop()


def _describe(formats: set[str]) -> str:
    if formats == {"llava", "llava_images"}:
        return "a text-only 'conversations' record"
    return " or ".join(FORMATS[name].describe() for name in sorted(formats))


def inspect_record(
    record: Any, index: int, spec: RecordFormat, source_field: str | None = None
) -> tuple[Sample | None, list[Problem]]:
    """Normalise one record, collecting its structural defects.

    Defects (reason codes): ``not_an_object``, ``missing_messages``,
    ``messages_not_a_list``, ``empty_messages``, ``message_not_an_object``,
    ``missing_role``, ``unknown_role``, ``missing_content``, ``bad_content``,
    ``images_malformed``, ``image_path_not_a_string``. Details use the input's own
    field names (``conversations[2].from``). Ids are not checked here.

    Returns
    -------
    sample : Sample or None
        ``None`` when there is any defect.
    problems : list of Problem
    """
    if not isinstance(record, dict):
        return None, [
            Problem("not_an_object", f"record is a JSON {_json_type(record)}, not an object")
        ]
    problems: list[Problem] = []
    messages = _messages(record, spec, problems)
    images = _images(record, spec, problems)
    if problems:
        return None, problems
    source = _source(record, images, source_field)
    return Sample(index, record.get("id"), messages, images, source), problems


def _messages(record: dict, spec: RecordFormat, problems: list[Problem]) -> tuple[Message, ...]:
    key = spec.messages_key
    if key not in record:
        problems.append(Problem("missing_messages", f"no '{key}' field"))
        return ()
    turns = record[key]
    if not isinstance(turns, list):
        problems.append(
            Problem("messages_not_a_list", f"'{key}' is a JSON {_json_type(turns)}, not a list")
        )
        return ()
    if not turns:
        problems.append(Problem("empty_messages", f"'{key}' is empty"))
        return ()
    messages = []
    roles = spec.roles
    for position, turn in enumerate(turns):
        if type(turn) is dict:
            # Fast path for the well-formed turn (the vast majority).
            role, content = turn.get(spec.role_key), turn.get(spec.content_key)
            if type(role) is str and type(content) is str and role in roles:
                messages.append(Message(roles[role], content))
                continue
        where = f"{key}[{position}]"
        if not isinstance(turn, dict):
            problems.append(
                Problem(
                    "message_not_an_object", f"{where} is a JSON {_json_type(turn)}, not an object"
                )
            )
            continue
        role = _role(turn, where, spec, problems)
        content = _content(turn, where, spec, problems)
        if role is not None and content is not None:
            messages.append(Message(role, content))
    return tuple(messages)


def _role(turn: dict, where: str, spec: RecordFormat, problems: list[Problem]) -> str | None:
    if spec.role_key not in turn:
        problems.append(Problem("missing_role", f"{where} has no '{spec.role_key}'"))
        return None
    role = turn[spec.role_key]
    if not isinstance(role, str) or role not in spec.roles:
        problems.append(
            Problem(
                "unknown_role",
                f"{where}.{spec.role_key} is {json.dumps(role, ensure_ascii=False)}"
                f" (expected one of {', '.join(spec.roles)})",
            )
        )
        return None
    return spec.roles[role]


def _content(turn: dict, where: str, spec: RecordFormat, problems: list[Problem]) -> str | None:
    key = spec.content_key
    if key not in turn:
        problems.append(Problem("missing_content", f"{where} has no '{key}'"))
        return None
    content = turn[key]
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for number, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image":
                texts.append(IMAGE_TAG)
            else:
                problems.append(
                    Problem(
                        "bad_content",
                        f"{where}.{key}[{number}] is not a text part"
                        " ({'type': 'text', 'text': str}) or an image part ({'type': 'image'})",
                    )
                )
                return None
        return "".join(texts)
    problems.append(
        Problem(
            "bad_content",
            f"{where}.{key} is a JSON {_json_type(content)}, not a string or a list of typed parts",
        )
    )
    return None


def _images(record: dict, spec: RecordFormat, problems: list[Problem]) -> tuple[str, ...]:
    key = spec.images_key
    value = record.get(key)
    if value is None:
        return ()
    if isinstance(value, str) and spec.single_image:
        paths, names = [value], [key]
    elif isinstance(value, list):
        paths, names = value, [f"{key}[{i}]" for i in range(len(value))]
    else:
        expected = "a path or a list of paths" if spec.single_image else "a list of paths"
        problems.append(
            Problem("images_malformed", f"'{key}' is a JSON {_json_type(value)}, not {expected}")
        )
        return ()
    ok = True
    for name, item in zip(names, paths):
        if not isinstance(item, str):
            problems.append(
                Problem(
                    "image_path_not_a_string", f"{name} is a JSON {_json_type(item)}, not a path"
                )
            )
            ok = False
        elif not item.strip():
            problems.append(Problem("images_malformed", f"{name} is an empty path"))
            ok = False
    return tuple(paths) if ok else ()


def _source(record: dict, images: tuple[str, ...], source_field: str | None) -> str:
    if source_field is not None:
        label = record.get(source_field)
        if isinstance(label, (str, int)) and not isinstance(label, bool):
            return str(label)
    return image_source(images)


def image_source(images: Sequence[str]) -> str:
    """Source label from image paths: the first folder of the first path.

    Examples
    --------
    >>> image_source(["coco/train2017/1.jpg"])
    'coco'
    >>> image_source(["1.jpg"])
    '(root)'
    >>> image_source([])
    'text-only'
    """
    if not images:
        return TEXT_ONLY
    # Plain string splitting: pathlib is far slower, and this runs for every sample.
    parts = [p for p in images[0].replace("\\", "/").split("/") if p not in ("", ".")]
    return parts[0] if len(parts) > 1 else "(root)"


def resolve_image(root: str | os.PathLike, path: str) -> Path:
    """The file of an image path: ``path`` itself when absolute, else ``root / path``."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else Path(root) / candidate


def write_records(path: str | os.PathLike, records: Sequence[Any]) -> None:
    """Write records, unchanged, atomically: JSON Lines when ``path`` ends in ``.jsonl``
    or ``.ndjson`` (as read by :func:`load_dataset`), else a JSON array (one record per
    line)."""
    if Path(path).suffix.lower() in JSONL_SUFFIXES:
        with atomic_write(path) as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False))
                handle.write("\n")
        return
    with atomic_write(path) as handle:
        handle.write("[")
        for number, record in enumerate(records):
            handle.write(",\n" if number else "\n")
            handle.write(json.dumps(record, ensure_ascii=False))
        handle.write("\n]\n")
