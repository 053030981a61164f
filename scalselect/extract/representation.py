"""ScalSelect's instruction-conditioned early representation (METHOD.md stage 1), fast.

API (CPU side and GPU side are separate so that encoding runs in DataLoader workers):

- ``Encoder(model_path, model_type, *, max_length=4096, min_image_tokens=256,
  max_image_tokens=576, trust_remote_code=False)`` — picklable.
  ``.encode(sample, images) -> EncodedSample`` renders the whole conversation with the
  model's chat template (``scalselect.extract.conversation``), runs the processor on the decoded
  PIL images and assigns token roles; conversations longer than ``max_length`` lose
  whole trailing rounds (``truncated=True``). Per-sample problems raise
  ``SampleFailure(reason, detail)`` with ``reason`` one of ``no_vision_tokens``,
  ``no_instruction_tokens``, ``no_user_turn``, ``too_long``, ``template_mismatch``,
  ``image_count_mismatch``, ``processor_error``.
- ``collate(items) -> Batch``: left-pads the token tensors, concatenates the image
  tensors (use as a DataLoader ``collate_fn``; ``Batch`` supports ``pin_memory``).
- ``TruncatedVLM(model_path, model_type, *, dtype="auto", device=None,
  attention_threshold=0.9, trust_remote_code=False, layer=1)``: loads the VLM with SDPA,
  keeps only decoder layers 1..``layer`` (the first one by default, the method) and never
  runs the LM head. ``.represent(batch) ->
  list[SampleResult]``, one per sample, never raising for a single sample's problem
  (``status`` ``"ok"`` or ``"non_finite"``).

``SampleResult``: ``vector`` (float32 [d], ``None`` unless ok), ``n_vision``,
``n_kept``, ``seq_len``, ``truncated``, ``status``, ``detail``, ``kept`` (indices,
among the sample's vision tokens in sequence order, of the kept ones, ascending),
``weights`` (the normalised vision-token weights ``p``, float32, sequence order) and
``grids`` (vision-token rows x cols per image).

How the attention of decoder layer L is obtained exactly without eager attention: the
model runs with a custom attention function (registered with
``transformers.AttentionInterface``) that computes every attention output with SDPA, and,
for the self-attention of decoder layer L only (not the vision blocks, not the other
layers), also the softmax probabilities of the instruction rows (from the q and k it
receives, after RoPE / M-RoPE and any q/k norms), averaged over heads and rows.

The hidden states are ``hidden_states[L]`` of a full forward, read with a forward hook:
the output of decoder layer L, or, when L is the model's last layer, the final-norm
output (transformers returns that as the last entry of ``hidden_states``, as the
original tool read it). Qwen3-VL adds its "deepstack" visual features to the vision
tokens' hidden states after each of its first ``len(deepstack_visual_indexes)`` decoder
layers (layers 1-3 of Qwen3-VL-4B/8B); ``hidden_states[L]`` is layer L's output before
its own addition, so its input already holds the additions of layers 1..L-1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from scalselect.data.records import Sample
from scalselect.errors import UserError
from scalselect.extract.conversation import (
    ASSISTANT,
    INSTRUCTION,
    PADDING,
    VISION,
    SampleFailure,
    assistant_spans,
    chat_messages,
    shift_spans,
    token_roles,
    truncation_points,
)
from scalselect.settings import MODEL_TYPES, ExtractSettings, value_problems

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "ASSISTANT",
    "INSTRUCTION",
    "PADDING",
    "VISION",
    "Batch",
    "EncodedSample",
    "Encoder",
    "TruncatedVLM",
    "SampleFailure",
    "SampleResult",
    "collate",
    "resolve_dtype",
    "select_tokens",
]

# Per-token tensors of the processor output (left-padded in a batch); all other
# tensors are per image and concatenated along their first dimension.
TEXT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
ATTENTION_NAME = "scalselect_first_layer"
# Upper bound on the elements of one block of instruction-row attention scores.
SCORE_BLOCK = 1 << 27


def check_model_type(model_path: str | os.PathLike, model_type: str, config: Any) -> None:
    """Raise ``UserError`` unless the checkpoint's architecture fits ``model_type``."""
    if model_type not in MODEL_TYPES:
        raise UserError(f"model type {model_type!r} is not one of {sorted(MODEL_TYPES)}")
    if config.model_type not in MODEL_TYPES[model_type]:
        raise UserError(
            f"{model_path} is a {config.model_type!r} checkpoint, not a {model_type!r} one"
            f" (expected model_type {' or '.join(MODEL_TYPES[model_type])})"
        )


def resolve_dtype(dtype: str, device: "torch.device") -> "torch.dtype":
    """``"auto"`` is bfloat16 on CUDA and float32 elsewhere; else a torch dtype name."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise UserError(f"dtype {dtype!r} is not a floating-point torch dtype (or 'auto')")
    return resolved


@dataclass
class EncodedSample:
    """One sample ready for the model: processor tensors (no batch dimension on the
    per-token ones), token roles and bookkeeping."""

    inputs: dict[str, "torch.Tensor"]
    roles: "torch.Tensor"  # int8 [L]
    truncated: bool
    grids: list[tuple[int, int]]
    pad_token_id: int

    @property
    def seq_len(self) -> int:
        return int(self.roles.shape[0])


@dataclass
class Batch:
    """Left-padded model inputs of several samples, with their token roles."""

    inputs: dict[str, "torch.Tensor"]
    roles: "torch.Tensor"  # int8 [B, L], PADDING on the left
    truncated: list[bool]
    grids: list[list[tuple[int, int]]]

    def __len__(self) -> int:
        return int(self.roles.shape[0])

    def pin_memory(self) -> "Batch":
        """Page-locked copy (called by a DataLoader with ``pin_memory=True``)."""
        return Batch(
            {key: value.pin_memory() for key, value in self.inputs.items()},
            self.roles.pin_memory(),
            self.truncated,
            self.grids,
        )


@dataclass
class SampleResult:
    """The representation of one sample, or why there is none."""

    vector: np.ndarray | None
    n_vision: int
    n_kept: int
    seq_len: int
    truncated: bool
    status: str = "ok"
    detail: str = ""
    kept: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    weights: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    grids: list[tuple[int, int]] = field(default_factory=list)


class Encoder:
    """Turns a sample and its decoded images into model inputs with token roles.

    Parameters
    ----------
    model_path : path-like
        A checkpoint directory loadable with ``AutoProcessor``.
    model_type : {"llava", "qwen"}
        Checked against the checkpoint's configuration.
    max_length : int, default 4096
        Longest token sequence (vision tokens included); longer conversations lose
        trailing rounds.
    min_image_tokens, max_image_tokens : int, default 256 and 576
        Qwen-VL only: vision-token budget per image, converted to the image
        processor's minimum and maximum pixels (``tokens * (patch_size * merge_size)**2``).
    trust_remote_code : bool, default False
        Passed to ``from_pretrained``.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        model_type: str,
        *,
        max_length: int = ExtractSettings.max_length,
        min_image_tokens: int = ExtractSettings.min_image_tokens,
        max_image_tokens: int = ExtractSettings.max_image_tokens,
        trust_remote_code: bool = ExtractSettings.trust_remote_code,
    ) -> None:
        from transformers import AutoConfig, AutoProcessor

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        check_model_type(model_path, model_type, config)
        problems = value_problems(ExtractSettings, min_image_tokens=min_image_tokens,
                                  max_image_tokens=max_image_tokens)
        if problems:
            raise UserError("; ".join(problems))
        self.processor = AutoProcessor.from_pretrained(
            model_path, trust_remote_code=trust_remote_code
        )
        self.tokenizer = self.processor.tokenizer
        self.max_length = max_length
        self.image_token_id = int(config.image_token_id)
        self.image_token = self.processor.image_token  # the text the processor expands
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else self.tokenizer.eos_token_id)
        self.images_kwargs: dict[str, Any] = {}
        if model_type == "qwen":
            image_processor = self.processor.image_processor
            self.merge_size = int(image_processor.merge_size)
            unit = (int(image_processor.patch_size) * self.merge_size) ** 2
            self.images_kwargs = {
                "size": {
                    "shortest_edge": min_image_tokens * unit,
                    "longest_edge": max_image_tokens * unit,
                }
            }

    def _process(self, text: str, images: list["Image.Image"]) -> dict[str, Any]:
        try:
            return self.processor(
                text=[text],
                images=images,
                return_tensors="pt",
                return_offsets_mapping=True,
                **self.images_kwargs,
            )
        except (ValueError, RuntimeError, OSError) as error:
            raise SampleFailure("processor_error", f"{type(error).__name__}: {error}") from error

    def _render(self, messages: list[dict[str, Any]]) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False)

    def _n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def _image_grids(
        self, processed: dict[str, Any], n_images: int, n_vision: int
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Vision tokens per image, and each image's grid (rows, cols) of them."""
        if "image_grid_thw" in processed:
            grid = processed["image_grid_thw"].tolist()
            grids = [(h // self.merge_size, w // self.merge_size) for _, h, w in grid]
            return [t * rows * cols for (t, _, _), (rows, cols) in zip(grid, grids)], grids
        # LLaVA: the same square patch grid for every image.
        per_image = n_vision // n_images
        side = int(round(per_image**0.5))
        grids = [(side, side) if side * side == per_image else (1, per_image)] * n_images
        return [per_image] * n_images, grids

    def encode(self, sample: Sample, images: list["Image.Image"]) -> EncodedSample:
        """Model inputs and token roles of ``sample`` with its decoded ``images``.

        Raises
        ------
        SampleFailure
            For a sample that cannot be represented (see the module docstring).
        """
        if not images:
            raise SampleFailure("no_vision_tokens", "the sample has no image")
        if len(images) != len(sample.images):
            raise ValueError(f"{len(images)} images given for {len(sample.images)} image paths")
        messages = chat_messages(sample)
        text = self._render(messages)
        processed = self._process(text, images)
        truncated = False
        length = processed["input_ids"].shape[1]
        if length > self.max_length:
            # The vision-token expansion adds the same number of tokens to any prefix.
            growth = length - self._n_tokens(text)
            points = truncation_points(messages)
            for keep in points:
                shorter = self._render(messages[:keep])
                if self._n_tokens(shorter) + growth <= self.max_length:
                    break
            else:
                raise SampleFailure(
                    "too_long",
                    f"{length} tokens > max_length {self.max_length}"
                    + (", even with only the images and the first instruction" if points else ""),
                )
            messages, text, truncated = messages[:keep], shorter, True
            processed = self._process(text, images)
            length = processed["input_ids"].shape[1]
            if length > self.max_length:
                raise SampleFailure(
                    "too_long", f"{length} tokens > max_length {self.max_length} after truncation"
                )
        input_ids = processed["input_ids"][0].numpy()
        n_vision = int((input_ids == self.image_token_id).sum())
        counts, grids = self._image_grids(processed, len(images), n_vision)
        if sum(counts) != n_vision:
            raise SampleFailure(
                "image_count_mismatch",
                f"{n_vision} vision tokens in the sequence for {sum(counts)} image features",
            )
        spans = assistant_spans(text, messages, self._render)
        spans = shift_spans(spans, text, self.image_token, counts)
        roles = token_roles(input_ids, processed["offset_mapping"][0].numpy(), spans, self.image_token_id)
        if not (roles == INSTRUCTION).any():
            raise SampleFailure("no_instruction_tokens", "no token outside images and answers")
        import torch

        inputs = {
            key: (value[0] if key in TEXT_KEYS else value)
            for key, value in processed.items()
            if key != "offset_mapping" and isinstance(value, torch.Tensor)
        }
        return EncodedSample(inputs, torch.from_numpy(roles), truncated, grids, self.pad_token_id)


def collate(items: list[EncodedSample]) -> Batch:
    """Left-pad the per-token tensors of ``items`` and concatenate their image tensors."""
    import torch

    width = max(item.seq_len for item in items)
    pads = {"input_ids": items[0].pad_token_id}
    inputs = {}
    for key in items[0].inputs:
        values = [item.inputs[key] for item in items]
        if key in TEXT_KEYS:
            padded = torch.full((len(items), width), pads.get(key, 0), dtype=values[0].dtype)
            for row, value in enumerate(values):
                padded[row, width - value.shape[0]:] = value
            inputs[key] = padded
        else:
            inputs[key] = torch.cat(values)
    roles = torch.full((len(items), width), PADDING, dtype=torch.int8)
    for row, item in enumerate(items):
        roles[row, width - item.seq_len:] = item.roles
    return Batch(inputs, roles, [item.truncated for item in items], [item.grids for item in items])


def select_tokens(
    weights: "torch.Tensor", vision: "torch.Tensor", threshold: float
) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Attention-mass selection of vision tokens, for a batch.

    Parameters
    ----------
    weights : Tensor of shape (B, V)
        Non-negative attention weights ``a`` of each sample's vision tokens in sequence
        order (entries past a sample's vision-token count are ignored).
    vision : Tensor of shape (B, V), bool
        Which entries are real vision tokens (a prefix of each row).
    threshold : float
        The attention threshold tau.

    Returns
    -------
    p : Tensor of shape (B, V), float64
        ``a / sum(a)``, uniform when the sum is 0, zero past the vision tokens.
    keep : Tensor of shape (B, V), bool
        The shortest set of largest-``p`` tokens (ties in sequence order) whose
        cumulative ``p`` exceeds ``threshold``, crossing token included; all tokens
        when no prefix exceeds it.
    n_kept : Tensor of shape (B,), int64
    """
    import torch

    a = torch.where(vision, weights.double(), 0.0)
    n_vision = vision.sum(1, keepdim=True)
    total = a.sum(1, keepdim=True)
    uniform = vision.double() / n_vision.clamp(min=1)  # float64, as p: 1/3 is not float32
    p = torch.where(total > 0, a / torch.where(total > 0, total, 1.0), uniform)
    ranked, order = torch.sort(torch.where(vision, p, -1.0), dim=1, descending=True, stable=True)
    position = torch.arange(p.shape[1], device=p.device)
    exceeds = (ranked.clamp(min=0).cumsum(1) > threshold) & (position < n_vision)
    n_kept = torch.where(exceeds.any(1), exceeds.int().argmax(1) + 1, n_vision[:, 0])
    keep = torch.zeros_like(vision).scatter(1, order, position < n_kept[:, None])
    return p, keep, n_kept


def _first_layer_attention(
    module: "torch.nn.Module",
    query: "torch.Tensor",
    key: "torch.Tensor",
    value: "torch.Tensor",
    attention_mask: "torch.Tensor | None",
    **kwargs: Any,
) -> tuple["torch.Tensor", None]:
    """Attention function of the fast path: SDPA output, plus (for the module carrying a
    capture, the self-attention of the LLM's decoder layer L) the head-averaged softmax
    probabilities of the instruction rows, computed as eager attention does, reduced to
    their row mean."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    capture = getattr(module, "_scalselect_capture", None)
    if capture is not None:
        capture.weights = _instruction_attention(
            query, key, attention_mask, capture.rows, kwargs.get("scaling")
        )
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _instruction_attention(
    query: "torch.Tensor",
    key: "torch.Tensor",
    mask: "torch.Tensor | None",
    rows: "torch.Tensor",
    scaling: float | None,
) -> "torch.Tensor":
    """Mean over heads and over the ``rows`` (bool [B, L]) of the causal softmax
    attention probabilities, as float32 [B, L]."""
    import torch

    batch, heads, length, dim = query.shape
    scaling = dim**-0.5 if scaling is None else scaling
    n_rows = rows.sum(1)
    width = int(n_rows.max())
    # Positions of each sample's rows, first in sequence order (padding rows after).
    index = torch.sort((~rows).to(torch.int8), dim=1, stable=True).indices[:, :width]
    real = torch.arange(width, device=rows.device) < n_rows[:, None]
    if mask is None:
        allowed = torch.arange(length, device=rows.device) <= index[:, :, None]
    else:
        allowed = mask[:, 0].gather(1, index[:, :, None].expand(-1, -1, mask.shape[-1]))
        if allowed.dtype != torch.bool:  # an additive float mask
            allowed = allowed == 0
    # Rows past a sample's own (``real`` False) may be padding with nothing allowed.
    allowed = (allowed | ~real[:, :, None])[:, None]  # [B, 1, rows, L]
    q = query.gather(2, index[:, None, :, None].expand(-1, heads, -1, dim)).float()
    k = key.float()
    group = heads // key.shape[1]  # grouped-query attention: q heads per k head
    total = torch.zeros(batch, width, length, dtype=torch.float32, device=query.device)
    step = max(1, SCORE_BLOCK // max(1, batch * width * length))
    for first in range(0, heads, step):
        last = min(heads, first + step)
        keys = k[:, torch.arange(first, last, device=k.device) // group]
        scores = torch.matmul(q[:, first:last], keys.transpose(-1, -2)) * scaling
        scores = scores.masked_fill(~allowed, float("-inf"))
        total += torch.softmax(scores, dim=-1).sum(1)
    total = total / heads * real[:, :, None]
    return total.sum(1) / n_rows.clamp(min=1)[:, None]


class _Capture:
    """What decoder layer L hands back during one forward."""

    rows: "torch.Tensor"
    weights: "torch.Tensor"
    hidden: "torch.Tensor"


def _load_first_layers(
    model_path: str | os.PathLike,
    config: Any,
    layer: int,
    dtype: "torch.dtype",
    trust_remote_code: bool,
) -> Any:
    """The model of ``config`` with decoder layers 1..``layer`` only, so the other
    layers' weights are never read; nothing after layer L influences the result."""
    import transformers
    from transformers import AutoModelForImageTextToText

    text_config = config.get_text_config()
    n_layers = int(text_config.num_hidden_layers)
    if not 1 <= layer <= n_layers:
        raise UserError(f"{model_path}: layer {layer} is not in 1..{n_layers} (its decoder layers)")
    text_config.num_hidden_layers = layer
    if getattr(text_config, "layer_types", None):
        text_config.layer_types = text_config.layer_types[:layer]
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the skipped layers' load report
    try:
        model, info = AutoModelForImageTextToText.from_pretrained(
            model_path,
            config=config,
            dtype=dtype,
            attn_implementation=ATTENTION_NAME,
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = sorted(set(info["missing_keys"]) | {key for key, *_ in info["mismatched_keys"]})
    if missing:
        raise UserError(f"{model_path}: weights missing or mis-shaped: {', '.join(missing[:10])}")
    return model


class TruncatedVLM:
    """The VLM truncated after decoder layer L (the first by default): only layers 1..L
    are built and run; computes the representations of batches.

    Parameters
    ----------
    model_path : path-like
        A checkpoint loadable with ``AutoModelForImageTextToText``.
    model_type : {"llava", "qwen"}
        Checked against the checkpoint's configuration.
    dtype : str, default "auto"
        ``"auto"`` (bfloat16 on CUDA, float32 on CPU) or a torch dtype name.
    device : str or torch.device, optional
        Defaults to CUDA when available, else the CPU.
    attention_threshold : float, default 0.9
        Attention-mass threshold tau of the vision-token selection.
    trust_remote_code : bool, default False
        Passed to ``from_pretrained``.
    layer : int, default 1
        The decoder layer L (1-based) whose hidden states and attention make the
        representation; only layers 1..L are built and run.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        model_type: str,
        *,
        dtype: str = ExtractSettings.dtype,
        device: "str | torch.device | None" = None,
        attention_threshold: float = ExtractSettings.attention_threshold,
        trust_remote_code: bool = ExtractSettings.trust_remote_code,
        layer: int = ExtractSettings.layer,
    ) -> None:
        import torch
        from transformers import AttentionInterface, AttentionMaskInterface, AutoConfig
        from transformers.masking_utils import sdpa_mask

        problems = value_problems(ExtractSettings, attention_threshold=attention_threshold)
        if problems:
            raise UserError("; ".join(problems))
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        check_model_type(model_path, model_type, config)
        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.dtype = resolve_dtype(dtype, self.device)
        self.threshold = attention_threshold
        AttentionInterface.register(ATTENTION_NAME, _first_layer_attention)
        # SDPA's masks for our attention function (custom names get none otherwise).
        AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
        n_layers = int(config.get_text_config().num_hidden_layers)  # before the cut to 1..L
        model = _load_first_layers(model_path, config, layer, self.dtype, trust_remote_code)
        self.layer = layer
        # LLaMA numbers positions from the left edge, padding included, unless given
        # position ids; Qwen-VL's M-RoPE index already skips left padding.
        self.positions_from_mask = model_type == "llava"
        # The base model (vision tower, projector, first decoder layer): the LM head is
        # never run.
        self.model = model.model
        language_model = self.model.language_model
        self.model.to(self.device).eval()
        self.capture = _Capture()
        decoder_layer = language_model.layers[layer - 1]
        decoder_layer.self_attn._scalselect_capture = self.capture
        # hidden_states[L] of a full forward: the final-norm output for the last layer.
        output = language_model.norm if layer == n_layers else decoder_layer
        output.register_forward_hook(self._keep_hidden)

    def _keep_hidden(self, module: Any, args: Any, output: "torch.Tensor") -> None:
        # transformers 5.x decoder layers and norms return the hidden states tensor itself.
        self.capture.hidden = output

    def represent(self, batch: Batch) -> list[SampleResult]:
        """Representations of the samples of ``batch``, in order."""
        import torch

        inputs = {key: value.to(self.device, non_blocking=True) for key, value in batch.inputs.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        if self.positions_from_mask:
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(1) - 1).clamp(min=0)
        roles = batch.roles.to(self.device)
        self.capture.rows = roles == INSTRUCTION
        with torch.inference_mode():
            self.model(**inputs, use_cache=False)
            return self._select(roles, batch)

    def _select(self, roles: "torch.Tensor", batch: Batch) -> list[SampleResult]:
        import torch

        vision = roles == VISION
        n_vision = vision.sum(1)
        width = int(n_vision.max())
        # Sequence positions of each sample's vision tokens, in order, then padding.
        index = torch.sort((~vision).to(torch.int8), dim=1, stable=True).indices[:, :width]
        real = torch.arange(width, device=roles.device) < n_vision[:, None]
        p, keep, n_kept = select_tokens(self.capture.weights.gather(1, index), real, self.threshold)
        hidden = self.capture.hidden.gather(
            1, index[:, :, None].expand(-1, -1, self.capture.hidden.shape[-1])
        ).float()
        # where, not a product: a non-finite dropped token must not leak into the mean.
        vectors = torch.where(keep[:, :, None], hidden, 0.0).sum(1) / n_kept[:, None]
        finite = torch.isfinite(vectors).all(1) & torch.isfinite(p).all(1)
        vectors, p, keep = vectors.cpu().numpy(), p.float().cpu().numpy(), keep.cpu().numpy()
        n_vision, n_kept, finite = n_vision.tolist(), n_kept.tolist(), finite.tolist()
        seq_lens = (roles != PADDING).sum(1).tolist()
        results = []
        for row in range(len(batch)):
            count = n_vision[row]
            result = SampleResult(
                vector=vectors[row],
                n_vision=count,
                n_kept=n_kept[row],
                seq_len=seq_lens[row],
                truncated=batch.truncated[row],
                kept=np.flatnonzero(keep[row, :count]),
                weights=p[row, :count],
                grids=batch.grids[row],
            )
            if not finite[row]:
                result.vector, result.status = None, "non_finite"
                result.detail = f"layer {self.layer}'s hidden states or attention are not finite"
            results.append(result)
        return results


def load_model(
    model_path: str | os.PathLike, settings: ExtractSettings,
    device: "str | torch.device | None" = None,
) -> tuple[Encoder, TruncatedVLM]:
    """The encoder and the model that compute representations with ``settings``: the
    extraction's, and the gallery's recomputation of a few samples."""
    encoder = Encoder(model_path, settings.model_type, max_length=settings.max_length,
                      min_image_tokens=settings.min_image_tokens,
                      max_image_tokens=settings.max_image_tokens,
                      trust_remote_code=settings.trust_remote_code)
    model = TruncatedVLM(model_path, settings.model_type, dtype=settings.dtype, device=device,
                            attention_threshold=settings.attention_threshold,
                            trust_remote_code=settings.trust_remote_code, layer=settings.layer)
    return encoder, model
