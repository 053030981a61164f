"""Rendering a sample's conversation the way the original tool did, and token roles.

METHOD.md stage 1, steps 1 and 3:

- The WHOLE conversation is rendered with the model's own chat template. All image
  placeholders go to the start of the first user turn; the ``<image>`` / ``<img>`` tags
  are removed from that turn's text, which is then stripped of surrounding whitespace
  (exactly the original's preprocessing, so the rendered text, and hence the numbers,
  match). Tags found in other turns are removed too (without stripping): a literal
  ``<image>`` there would otherwise become an image token with no image.
- Token roles: *vision* tokens are the image placeholder tokens after the processor's
  expansion (LLaVA ``<image>``, Qwen-VL ``<|image_pad|>``; Qwen's ``<|vision_start|>`` /
  ``<|vision_end|>`` markers carry no visual features and are instruction tokens here,
  whereas the original counted them as vision tokens). *Assistant* tokens are those
  overlapping an assistant message's content, located by character offsets in the
  rendered text (where the rendering changes when that message's text is replaced, so
  answer text repeated in a role marker or another turn is never mistaken for it) and
  mapped to tokens with the tokenizer's offset mapping. Every other non-padding token
  is an *instruction* token: user text, system text and the template's role markers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from scalselect.data.records import Sample

IMAGE_TAGS = ("<image>", "<img>")

# Token role codes (int8), as stored in EncodedSample.roles / Batch.roles.
INSTRUCTION = 0
VISION = 1
ASSISTANT = 2
PADDING = -1


class SampleFailure(Exception):
    """A sample that cannot be represented; ``reason`` is a short code for the row table."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def remove_image_tags(text: str) -> str:
    """Remove every ``<image>`` and ``<img>`` tag from ``text``."""
    for tag in IMAGE_TAGS:
        text = text.replace(tag, "")
    return text


def chat_messages(sample: Sample) -> list[dict[str, Any]]:
    """The sample's conversation as chat-template messages with typed content parts.

    The first user turn gets one ``{"type": "image"}`` part per image, followed by its
    text with the image tags removed and surrounding whitespace stripped.

    Raises
    ------
    SampleFailure
        ``no_user_turn`` when the conversation has no user message.
    """
    roles = [message.role for message in sample.messages]
    if "user" not in roles:
        raise SampleFailure("no_user_turn", "the conversation has no user message")
    first_user = roles.index("user")
    messages = []
    for position, message in enumerate(sample.messages):
        text = remove_image_tags(message.content)
        parts: list[dict[str, Any]] = []
        if position == first_user:
            parts = [{"type": "image"} for _ in sample.images]
            text = text.strip()
        parts.append({"type": "text", "text": text})
        messages.append({"role": message.role, "content": parts})
    return messages


def truncation_points(messages: Sequence[dict[str, Any]]) -> list[int]:
    """Numbers of leading messages that a truncated conversation may keep, longest first.

    A conversation is cut only before a user message (dropping whole trailing rounds),
    and at the shortest right after the first user message: the images and the first
    instruction are always kept. The full length is not included.
    """
    roles = [message["role"] for message in messages]
    first_user = roles.index("user")
    points = {i for i in range(first_user + 1, len(roles)) if roles[i] == "user"}
    points.add(first_user + 1)
    return sorted((p for p in points if p < len(roles)), reverse=True)


# Stand-ins for a message's text when locating it (private-use characters, never chat
# text in practice; the second serves a text that starts with the first).
_STAND_INS = ("\ue000", "\ue001")


def _common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix of ``a`` and ``b`` (binary search over slice
    comparisons, which run in C: long renderings cost microseconds)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def assistant_spans(
    rendered: str,
    messages: Sequence[dict[str, Any]],
    render: Callable[[list[dict[str, Any]]], str],
) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the assistant messages' text in ``rendered``.

    ``rendered`` is ``render(messages)``. Where an assistant message's text starts is
    where ``rendered`` first differs from the rendering with that text replaced by a
    stand-in character: no search, so answer text that also occurs in a role marker,
    the system prompt or another turn is never mistaken for it. The span covers the
    text without its surrounding whitespace (templates may trim it).

    Raises
    ------
    SampleFailure
        ``template_mismatch`` when a message's text is not where the template puts it.
    """
    spans = []
    for number, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        text = "".join(part.get("text", "") for part in message["content"])
        core = text.strip()
        if not core:
            continue
        stand_in = _STAND_INS[text.startswith(_STAND_INS[0])]
        replaced = [*messages[:number], {**message, "content": [{"type": "text", "text": stand_in}]},
                    *messages[number + 1:]]
        other = render(replaced)
        start = _common_prefix_length(rendered, other)
        lead = len(text) - len(text.lstrip())
        for begin in (start + lead, start):  # as written, or with leading space trimmed
            if rendered.startswith(core, begin):
                spans.append((begin, begin + len(core)))
                break
        else:
            raise SampleFailure(
                "template_mismatch",
                f"the text of message {number} (assistant) is not where the chat template"
                " renders it",
            )
    return spans


def shift_spans(
    spans: Sequence[tuple[int, int]],
    rendered: str,
    placeholder: str,
    counts: Sequence[int],
) -> list[tuple[int, int]]:
    """Map character spans of ``rendered`` into the processor's expanded text.

    The processor replaces the ``k``-th ``placeholder`` of the rendering by
    ``counts[k]`` copies of it; every span after that placeholder moves right by
    ``(counts[k] - 1) * len(placeholder)`` characters.

    Raises
    ------
    SampleFailure
        ``image_count_mismatch`` when the rendering holds a different number of
        placeholders than ``counts`` has images.
    """
    positions = []
    cursor = rendered.find(placeholder)
    while cursor >= 0:
        positions.append(cursor)
        cursor = rendered.find(placeholder, cursor + len(placeholder))
    if len(positions) != len(counts):
        raise SampleFailure(
            "image_count_mismatch",
            f"the rendering holds {len(positions)} image placeholders for {len(counts)} images",
        )
    starts = np.asarray(positions)
    growth = np.cumsum([(count - 1) * len(placeholder) for count in counts])

    def shift(offset: int) -> int:
        before = np.searchsorted(starts, offset, side="left")
        return offset + (int(growth[before - 1]) if before else 0)

    return [(shift(start), shift(end)) for start, end in spans]


def token_roles(
    input_ids: np.ndarray,
    offsets: np.ndarray,
    spans: Sequence[tuple[int, int]],
    image_token_id: int,
) -> np.ndarray:
    """Role code of each token of one sequence.

    Parameters
    ----------
    input_ids : ndarray of shape (L,)
        Token ids after the processor's image-token expansion.
    offsets : ndarray of shape (L, 2)
        Character ``[start, end)`` of each token in the expanded text (``(0, 0)`` for
        added special tokens such as BOS).
    spans : sequence of (int, int)
        Assistant content spans in the expanded text.
    image_token_id : int
        Id of the image placeholder token.

    Returns
    -------
    ndarray of shape (L,), int8
        ``VISION`` for image tokens, ``ASSISTANT`` for tokens overlapping an assistant
        span, ``INSTRUCTION`` for all others.
    """
    roles = np.full(len(input_ids), INSTRUCTION, dtype=np.int8)
    if spans:
        bounds = np.asarray(spans)
        starts, ends = offsets[:, 0:1], offsets[:, 1:2]
        overlap = (starts < bounds[None, :, 1]) & (ends > bounds[None, :, 0])
        roles[overlap.any(axis=1)] = ASSISTANT
    roles[input_ids == image_token_id] = VISION
    return roles
