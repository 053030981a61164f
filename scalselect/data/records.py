"""Records of visual-instruction datasets: three formats, one normalised view.

Supported record formats (auto-detected per file from the records' keys, or forced):

- ``sharegpt``: ``{"id", "messages": [{"role", "content"}], "images": [path, ...]}``
  (the original ScalSelect tool's format); roles ``user``, ``assistant``, ``system``.
- ``llava``: ``{"id", "conversations": [{"from", "value"}], "image": path | [path, ...]}``
  (LLaVA-665K as downloaded; text-only records have no ``image``); ``from`` is
  ``human`` (user), ``gpt`` (assistant) or ``system``.
- ``llava_images``: the same conversations with an ``images`` list (LLaMA-Factory's
  sharegpt style).

Records are kept exactly as read and written back unchanged; every stage keys samples by
their position in the file, never by id, so repeated ids neither merge nor lose samples.
:func:`inspect_record` gives the normalised view (:class:`Sample`). It keeps each
message's text as written, ``<image>`` tags included: moving all image placeholders to
the start of the first user turn (and removing the ``<image>``/``<img>`` tags there), as
the original tool did, is the extractor's job. Content given as a list of typed parts
(``{"type": "text", "text": ...}`` and ``{"type": "image"}``) is flattened into one
string, parts concatenated as they are, image parts written as ``<image>``. A ``null``
image field counts as no image; an image may be a ``{"bytes", "path"}`` struct holding
its bytes (parquet, as Hugging Face datasets write it).

The source label of a sample (for figures and summaries) is the first folder of its
first image path (``coco/train2017/1.jpg`` -> ``coco``; ``(root)`` for an image directly
under the image root), ``text-only`` without images, or the value of a configured record
field (``source_field``) when the record has it as a string or an integer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalselect.errors import UserError
from scalselect.locations import LocationError, join

TEXT_ONLY = "text-only"
# The path of an embedded image stored without one.
EMBEDDED = "embedded"
IMAGE_TAG = "<image>"


class DatasetError(UserError):
    """A dataset file that cannot be read, or a record that cannot be normalised."""


def unreadable(path: str | os.PathLike, error: OSError) -> DatasetError:
    """The error for a dataset that cannot be opened or read (a URL's own error names
    the URL and what went wrong already)."""
    if isinstance(error, LocationError):
        return DatasetError(f"cannot read dataset {error}")
    return DatasetError(f"cannot read dataset {path}: {error.strerror or error}")


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
    root unless absolute) and ``source`` its source label. ``embedded`` holds, for a
    record that embeds image bytes (parquet), each image's bytes (``None`` for an image
    given as a path) and is empty otherwise; an embedded image's path is the one stored
    with it, or :data:`EMBEDDED` when there is none.
    """

    index: int
    id: int | str | None
    messages: tuple[Message, ...]
    images: tuple[str, ...]
    source: str
    embedded: tuple[bytes | None, ...] = ()

    def image_bytes(self, number: int) -> bytes | None:
        """The embedded bytes of image ``number``; ``None`` when it is a file."""
        return self.embedded[number] if self.embedded else None


@dataclass(frozen=True, slots=True)
class Problem:
    """A structural defect of a record: a reason code and a message naming the field."""

    reason: str
    detail: str


# The values of a `--format` option: a record format, or "auto" (detected from the records).
FORMAT_CHOICES = ("auto", *FORMATS)


def check_format_name(fmt: str) -> None:
    """Raise ``DatasetError`` unless ``fmt`` is ``"auto"`` or one of :data:`FORMATS`."""
    if fmt != "auto" and fmt not in FORMATS:
        raise DatasetError(
            f"unknown dataset format {fmt!r}; expected auto or one of {', '.join(FORMATS)}"
        )



def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
             bytes: "bytes"}
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


def detect_format(records: Iterable[Any], path: str | os.PathLike = "dataset") -> str:
    """The one record format that all records' keys agree on (:class:`FormatVote` over
    ``records``).

    Records that are not objects or have neither ``messages`` nor ``conversations`` do
    not vote (validation reports them). A file of text-only conversations records is
    ``llava``.

    Raises ``DatasetError`` naming the first record that contradicts the earlier ones,
    or when no record has a known format.
    """
    vote = FormatVote(path)
    for index, record in enumerate(records):
        vote.add(index, record)
    return vote.result()


class FormatVote:
    """The record format of a file, decided record by record as the records stream by.

    Each record votes with the formats its keys fit (:meth:`add`); the votes of the
    parts of a file (shards) combine with :meth:`join`; :meth:`result` gives the
    format. State: ``candidates`` (formats all votes so far fit), ``first`` (the record
    that last narrowed them, named by later conflicts), ``opening`` (the first record
    seen and its keys, named when no record votes).
    """

    def __init__(self, path: str | os.PathLike = "dataset") -> None:
        self.path = path
        self.candidates: frozenset[str] | None = None
        self.first: int | None = None
        self.opening: tuple[int, Any] | None = None

    def add(self, index: int, record: Any) -> frozenset[str] | None:
        """Vote with record ``index``; returns the formats it fits (``None``: a record
        that does not vote). Raises ``DatasetError`` for a record mixing the keys of
        several formats or contradicting the earlier records."""
        if self.opening is None:
            self.opening = (
                index, sorted(record) if isinstance(record, dict) else json_type(record)
            )
        if not isinstance(record, dict) or (
            "messages" not in record and "conversations" not in record
        ):
            return None
        formats = _record_formats(record)
        if not formats:
            keys = sorted(
                k for k in ("messages", "conversations", "image", "images") if k in record
            )
            raise DatasetError(
                f"{self.path}: record {index} mixes the keys of several formats"
                f" ({', '.join(keys)})"
            )
        self._narrow(frozenset(formats), index)
        return frozenset(formats)

    def _narrow(self, formats: frozenset[str], index: int) -> None:
        if self.candidates is None:
            self.candidates, self.first = formats, index
        elif not self.candidates & formats:
            raise DatasetError(
                f"{self.path}: mixed record formats: record {index} is {_describe(formats)}"
                f" but record {self.first} is {_describe(self.candidates)}; a dataset file"
                " must use one format"
            )
        elif not self.candidates <= formats:
            # This record narrows the format down: later conflicts name it.
            self.candidates, self.first = self.candidates & formats, index

    def join(self, later: FormatVote) -> None:
        """Add the votes of a later part of the file."""
        if self.opening is None:
            self.opening = later.opening
        if later.candidates is not None:
            self._narrow(later.candidates, later.first)

    def result(self) -> str:
        """The format; ``DatasetError`` when no record voted."""
        if self.candidates is None:
            keys = "no records" if self.opening is None else f"record {self.opening[0]}: {self.opening[1]}"
            raise DatasetError(
                f"{self.path}: unknown record format: no record has 'messages' or"
                f" 'conversations' ({keys}); expected one of {', '.join(FORMATS)}"
            )
        return "llava" if self.candidates == {"llava", "llava_images"} else min(self.candidates)

    def state(self) -> dict[str, Any]:
        """The vote as JSON-ready data (:meth:`from_state` reads it back)."""
        return {
            "candidates": None if self.candidates is None else sorted(self.candidates),
            "first": self.first,
            "opening": self.opening,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], path: str | os.PathLike) -> FormatVote:
        """A vote from :meth:`state`."""
        vote = cls(path)
        if state["candidates"] is not None:
            vote.candidates, vote.first = frozenset(state["candidates"]), state["first"]
        vote.opening = None if state["opening"] is None else tuple(state["opening"])
        return vote


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
            Problem("not_an_object", f"record is a JSON {json_type(record)}, not an object")
        ]
    problems: list[Problem] = []
    messages = _messages(record, spec, problems)
    images, embedded = _images(record, spec, problems)
    if problems:
        return None, problems
    source = _source(record, images, source_field)
    return Sample(index, record.get("id"), messages, images, source, embedded), problems


def _messages(record: dict, spec: RecordFormat, problems: list[Problem]) -> tuple[Message, ...]:
    key = spec.messages_key
    if key not in record:
        problems.append(Problem("missing_messages", f"no '{key}' field"))
        return ()
    turns = record[key]
    if not isinstance(turns, list):
        problems.append(
            Problem("messages_not_a_list", f"'{key}' is a JSON {json_type(turns)}, not a list")
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
                    "message_not_an_object", f"{where} is a JSON {json_type(turn)}, not an object"
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
            f"{where}.{key} is a JSON {json_type(content)}, not a string or a list of typed parts",
        )
    )
    return None


def _images(
    record: dict, spec: RecordFormat, problems: list[Problem]
) -> tuple[tuple[str, ...], tuple[bytes | None, ...]]:
    """The image paths of a record and, when it embeds any, the bytes of each image."""
    key = spec.images_key
    value = record.get(key)
    if value is None:
        return (), ()
    if (isinstance(value, str) or _is_image_struct(value)) and spec.single_image:
        items, names = [value], [key]
    elif isinstance(value, list):
        items, names = value, [f"{key}[{i}]" for i in range(len(value))]
    else:
        expected = "a path or a list of paths" if spec.single_image else "a list of paths"
        problems.append(
            Problem("images_malformed", f"'{key}' is a JSON {json_type(value)}, not {expected}")
        )
        return (), ()
    ok = True
    paths, embedded = [], []
    for name, item in zip(names, items):
        data = None
        if _is_image_struct(item):
            # {"bytes", "path"}, as Hugging Face datasets store an image.
            data, item = item.get("bytes"), item.get("path")
            if isinstance(data, bytes):
                item = item if isinstance(item, str) and item.strip() else EMBEDDED
            elif data is not None or not isinstance(item, str):
                problems.append(
                    Problem(
                        "images_malformed",
                        f"{name} holds neither image bytes nor a path",
                    )
                )
                ok = False
                continue
        if not isinstance(item, str):
            problems.append(
                Problem(
                    "image_path_not_a_string", f"{name} is a JSON {json_type(item)}, not a path"
                )
            )
            ok = False
        elif not item.strip():
            problems.append(Problem("images_malformed", f"{name} is an empty path"))
            ok = False
        paths.append(item)
        embedded.append(data)
    if not ok:
        return (), ()
    return tuple(paths), (tuple(embedded) if any(d is not None for d in embedded) else ())


def _is_image_struct(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and value.keys() <= {"bytes", "path"}


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


def resolve_image(root: str | os.PathLike, path: str) -> str | Path:
    """The file or object of an image path: ``path`` itself when absolute or a URL,
    else ``path`` under ``root`` (a folder or a URL, :func:`scalselect.locations.join`)."""
    return join(root, path)


@dataclass(frozen=True)
class ShardInput:
    """The samples of one shard, by position in the shard (dataset index = start + position).

    ``samples[p]`` is ``None`` for a record that cannot be normalised, ``problems[p]``
    then says why; ``ids[p]`` is the record's id as given.
    """

    start: int
    samples: list[Sample | None]
    problems: list[str]
    ids: list[Any]

    @classmethod
    def read(cls, records: Sequence[Any], start: int, record_format: str) -> ShardInput:
        """Normalise a shard's ``records`` (dataset indices from ``start``)."""
        spec = FORMATS[record_format]
        samples, problems, ids = [], [], []
        for position, record in enumerate(records):
            sample, found = inspect_record(record, start + position, spec)
            samples.append(sample)
            problems.append("; ".join(p.detail for p in found))
            ids.append(record.get("id") if isinstance(record, dict) else None)
        return cls(start, samples, problems, ids)
