"""The original recipe, kept as the baseline for fidelity tests and benchmarks.

One sample at a time, the full model (vision tower, projector, every decoder layer and
the LM head) runs with eager attention and returns all hidden states and attentions,
as the original tool did; METHOD.md stage 1 is then computed plainly from
``hidden_states[L]`` and ``attentions[L-1]`` averaged over heads (L = 1, the first
decoder layer, unless a ``layer`` is given). Inputs and token roles
come from the same :class:`scalselect.representation.Encoder` as the fast path.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from scalselect.conversation import INSTRUCTION, VISION
from scalselect.representation import (
    EncodedSample,
    TEXT_KEYS,
    SampleResult,
    check_model_type,
    resolve_dtype,
)

if TYPE_CHECKING:
    import torch


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
        Token role codes (``scalselect.conversation``).
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


class ReferenceModel:
    """The full VLM with eager attention, run one sample at a time.

    Parameters are those of :class:`scalselect.representation.FirstLayerModel`;
    ``layer`` only chooses which of the full forward's outputs are read.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        model_type: str,
        *,
        dtype: str = "auto",
        device: "str | torch.device | None" = None,
        attention_threshold: float = 0.9,
        trust_remote_code: bool = False,
        layer: int = 1,
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        check_model_type(model_path, model_type, config)
        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.dtype = resolve_dtype(dtype, self.device)
        self.threshold = attention_threshold
        self.layer = layer
        self.model = AutoModelForImageTextToText.from_pretrained(
            model_path,
            dtype=self.dtype,
            attn_implementation="eager",
            trust_remote_code=trust_remote_code,
        ).to(self.device).eval()

    def represent(self, item: EncodedSample) -> SampleResult:
        """The representation of one encoded sample by the original recipe."""
        import torch

        inputs = {
            key: (value[None] if key in TEXT_KEYS else value).to(self.device)
            for key, value in item.inputs.items()
        }
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model(**inputs, output_hidden_states=True, output_attentions=True)
        hidden = out.hidden_states[self.layer][0].float().cpu().numpy()
        attention = out.attentions[self.layer - 1][0].float().mean(0).cpu().numpy()
        roles = item.roles.numpy()
        vector, kept, p = plain_selection(hidden, attention, roles, self.threshold)
        status = "ok" if np.isfinite(vector).all() and np.isfinite(p).all() else "non_finite"
        return SampleResult(
            vector=vector if status == "ok" else None,
            n_vision=len(p),
            n_kept=len(kept),
            seq_len=item.seq_len,
            truncated=item.truncated,
            status=status,
            kept=kept,
            weights=p.astype(np.float32),
            grids=item.grids,
        )
