"""The original recipe, kept as the independent baseline for fidelity tests and benchmarks.

Everything from the raw sample to the representation is written here a second time,
from METHOD.md, sharing nothing with the production path (``scalselect.extract.conversation``,
``scalselect.extract.representation.Encoder`` and ``TruncatedVLM``) but the checkpoint's own
processor and tokenizer, so that a bug on one side shows up as a difference:

- rendering: the messages are rebuilt from the sample (images first in the first user
  turn, ``<image>``/``<img>`` tags removed there and its text stripped; tags removed
  from other turns too) and rendered with the processor's ``apply_chat_template``;
- assistant content: each message's characters are located by rendering the
  conversation's prefixes (the rendering of the first ``i`` messages is a prefix of the
  whole one), then the message's stripped text inside its own segment;
- token roles: the rendered text is tokenised alone (offsets into the rendering itself,
  image placeholders unexpanded), and aligned with the processor's expanded ids, each
  placeholder matching its run of vision tokens; a token is an assistant token if any
  of its characters is assistant content;
- the model: the full VLM (vision tower, projector, every decoder layer and the LM
  head), eager attention, all hidden states and attentions, one sample at a time, as the
  original tool ran it; steps 4-6 are computed plainly from ``hidden_states[L]`` and
  ``attentions[L-1]`` averaged over heads (L = 1, the first decoder layer, unless a
  ``layer`` is given).

It never truncates: it is meant for samples that fit the model's context.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from scalselect.data.records import Sample
from scalselect.extract.conversation import ASSISTANT, INSTRUCTION, VISION
from scalselect.extract.representation import (
    SampleResult,
    check_model_type,
    resolve_dtype,
)
from scalselect.settings import ExtractSettings

if TYPE_CHECKING:
    import torch
    from PIL import Image

def plain_selection(
    hidden: np.ndarray, attention: np.ndarray, roles: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """METHOD.md stage 1 steps 4-6 for one sample, written plainly.

    Parameters
    ----------
    hidden : ndarray of shape (L, d)
        Output hidden states of the decoder layer.
    attention : ndarray of shape (L, L)
        Its attention probabilities averaged over heads.
    roles : ndarray of shape (L,)
        Token role codes (``scalselect.extract.conversation``).
    threshold : float
        The attention threshold tau.

    Returns
    -------
    vector : ndarray of shape (d,), float32
        Mean hidden state of the kept vision tokens.
    kept : ndarray of int64
        Indices, among the vision tokens in sequence order, of the kept ones, ascending.
    p : ndarray of float64
        The normalised weights of the vision tokens, in sequence order.
    """
    vision = np.flatnonzero(roles == VISION)
    instruction = np.flatnonzero(roles == INSTRUCTION)
    a = attention[np.ix_(instruction, vision)].astype(np.float64).mean(axis=0)
    p = a / a.sum() if a.sum() > 0 else np.full(len(vision), 1.0 / len(vision))
    order = sorted(range(len(vision)), key=lambda column: -p[column])  # stable: ties in order
    kept: list[int] = []
    cumulative = 0.0
    for column in order:
        kept.append(column)
        cumulative += p[column]
        if cumulative > threshold:
            break
    kept_positions = [vision[column] for column in kept]
    vector = hidden[kept_positions].astype(np.float32).mean(axis=0)
    return vector, np.array(sorted(kept), dtype=np.int64), p


def reference_messages(sample: Sample) -> list[dict[str, Any]]:
    """Chat-template messages of ``sample`` as METHOD.md stage 1 step 1 describes them.

    Raises ``ValueError`` when the conversation has no user message.
    """
    first_user = next(
        (k for k, message in enumerate(sample.messages) if message.role == "user"), None
    )
    if first_user is None:
        raise ValueError(f"sample {sample.index} has no user message")
    messages = []
    for k, message in enumerate(sample.messages):
        text = message.content.replace("<image>", "").replace("<img>", "")
        content: list[dict[str, Any]] = []
        if k == first_user:
            content = [{"type": "image"} for _ in sample.images]
            text = text.strip()
        messages.append({"role": message.role, "content": [*content, {"type": "text", "text": text}]})
    return messages


def assistant_characters(processor: Any, messages: list[dict[str, Any]]) -> tuple[str, np.ndarray]:
    """The rendering of ``messages`` and, per character, whether it is assistant content.

    Raises ``ValueError`` when the template's rendering of a prefix of the conversation
    is not a prefix of the whole rendering, or an assistant text is not in its segment.
    """
    rendered = processor.apply_chat_template(messages, tokenize=False)
    flags = np.zeros(len(rendered), dtype=bool)
    start = 0  # where the current message's segment begins
    for k, message in enumerate(messages):
        prefix = processor.apply_chat_template(messages[: k + 1], tokenize=False)
        if not rendered.startswith(prefix):
            raise ValueError(f"the chat template's rendering of messages 0..{k} is not a prefix")
        if message["role"] == "assistant":
            text = "".join(part["text"] for part in message["content"] if part["type"] == "text")
            text = text.strip()
            if text:
                found = prefix.rfind(text, start)
                if found < 0:
                    raise ValueError(f"assistant message {k} is not in its rendered segment")
                flags[found : found + len(text)] = True
        start = len(prefix)
    return rendered, flags


def reference_roles(
    tokenizer: Any,
    rendered: str,
    assistant: np.ndarray,
    expanded_ids: np.ndarray,
    image_token_id: int,
) -> np.ndarray:
    """Role of each token of the processor's expanded ids (METHOD.md stage 1 step 3).

    ``assistant`` flags the assistant characters of ``rendered``. The rendering is
    tokenised alone (image placeholders unexpanded, offsets into ``rendered``); each
    of its tokens maps to one expanded token, except a placeholder, which maps to its
    whole run of vision tokens.

    Raises ``ValueError`` when the two tokenisations do not align that way.
    """
    plain = tokenizer(rendered, return_offsets_mapping=True)
    roles = np.full(len(expanded_ids), INSTRUCTION, dtype=np.int8)
    position = 0
    for token, (begin, end) in zip(plain["input_ids"], plain["offset_mapping"]):
        if position >= len(expanded_ids):
            raise ValueError("the processor's ids are shorter than the rendering's")
        if token == image_token_id:
            if expanded_ids[position] != image_token_id:
                raise ValueError(f"no vision token at position {position}")
            while position < len(expanded_ids) and expanded_ids[position] == image_token_id:
                roles[position] = VISION
                position += 1
            continue
        if expanded_ids[position] != token:
            raise ValueError(f"token {position} differs between rendering and processor")
        if end > begin and assistant[begin:end].any():
            roles[position] = ASSISTANT
        position += 1
    if position != len(expanded_ids):
        raise ValueError("the processor's ids are longer than the rendering's")
    return roles


class ReferenceModel:
    """The original recipe from the raw sample: own encoding, full VLM, eager attention.

    Parameters are those of :class:`scalselect.extract.representation.TruncatedVLM`, plus
    the Qwen-VL vision-token budget per image of
    :class:`scalselect.extract.representation.Encoder`; ``layer`` only chooses which of the full
    forward's outputs are read.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        model_type: str,
        *,
        dtype: str = ExtractSettings.dtype,
        device: "str | torch.device | None" = None,
        attention_threshold: float = ExtractSettings.attention_threshold,
        min_image_tokens: int = ExtractSettings.min_image_tokens,
        max_image_tokens: int = ExtractSettings.max_image_tokens,
        trust_remote_code: bool = ExtractSettings.trust_remote_code,
        layer: int = ExtractSettings.layer,
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        check_model_type(model_path, model_type, config)
        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.dtype = resolve_dtype(dtype, self.device)
        self.threshold = attention_threshold
        self.processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.image_token_id = int(config.image_token_id)
        self.images_kwargs: dict[str, Any] = {}
        if model_type == "qwen":
            # One vision token covers a (patch * merge)^2-pixel square of the resized image.
            image_processor = self.processor.image_processor
            side = image_processor.patch_size * image_processor.merge_size
            self.images_kwargs["size"] = {
                "shortest_edge": min_image_tokens * side * side,
                "longest_edge": max_image_tokens * side * side,
            }
        self.layer = layer
        self.model = AutoModelForImageTextToText.from_pretrained(
            model_path,
            dtype=self.dtype,
            attn_implementation="eager",
            trust_remote_code=trust_remote_code,
        ).to(self.device).eval()

    def encode(self, sample: Sample, images: list["Image.Image"]) -> tuple[dict[str, Any], np.ndarray]:
        """The processor's tensors (batch of one) and the token roles of ``sample``."""
        rendered, assistant = assistant_characters(self.processor, reference_messages(sample))
        inputs = self.processor(text=[rendered], images=images, return_tensors="pt", **self.images_kwargs)
        roles = reference_roles(
            self.processor.tokenizer, rendered, assistant, inputs["input_ids"][0].numpy(),
            self.image_token_id,
        )
        return dict(inputs), roles

    def represent(self, sample: Sample, images: list["Image.Image"]) -> SampleResult:
        """The representation of ``sample`` with its decoded ``images``."""
        import torch

        inputs, roles = self.encode(sample, images)
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model(**inputs, output_hidden_states=True, output_attentions=True)
        hidden = out.hidden_states[self.layer][0].float().cpu().numpy()
        attention = out.attentions[self.layer - 1][0].float().mean(0).cpu().numpy()
        vector, kept, p = plain_selection(hidden, attention, roles, self.threshold)
        status = "ok" if np.isfinite(vector).all() and np.isfinite(p).all() else "non_finite"
        return SampleResult(
            vector=vector if status == "ok" else None,
            n_vision=len(p),
            n_kept=len(kept),
            seq_len=len(roles),
            truncated=False,
            status=status,
            kept=kept,
            weights=p.astype(np.float32),
        )
