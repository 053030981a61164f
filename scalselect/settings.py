"""The extraction settings that decide a representation's numbers, defined once.

:class:`Settings` holds every setting of stage 1 that changes results, with its default
and help text. The rest is derived from it:

- the command-line options of ``extract`` and ``plot gallery`` (:func:`add_arguments`,
  :func:`from_arguments`);
- the workflow's params of those rules (:data:`RESULT_KEYS`, in ``rules/common.smk``),
  so a change of any of them reruns extraction and the gallery;
- the feature store's settings key (:func:`scalselect.extract.store.settings_key` digests every
  field), so a new field joins the key by itself.

``config/schema.yaml`` states the same keys with the same defaults for Snakemake's
validation; ``tests/test_settings.py`` fails when the two disagree. Settings that change
only speed (batch size, workers, GPUs, chunk size, the store's folder) are not here:
they are never part of a key.

This module imports nothing heavy: the workflow's rule files read it.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from scalselect.errors import UserError

# --model-type values (the model families) and the checkpoint model types each accepts.
MODEL_TYPES = {
    "llava": ("llava",),
    "qwen": ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"),
}
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _setting(help_text: str, default: Any = dataclasses.MISSING, **option: Any) -> Any:
    """A field with its help text (and argparse options such as ``choices``)."""
    return dataclasses.field(default=default, metadata={"help": help_text, **option})


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings that determine a shard's numbers (and hence its store key).

    After :meth:`resolved`, ``dtype`` is never ``"auto"``: the same configuration gives
    bfloat16 on a GPU and float32 on a CPU, which are different results.
    """

    model_type: str = _setting("Model family (qwen: Qwen2-VL, Qwen2.5-VL, Qwen3-VL).",
                               choices=tuple(MODEL_TYPES))
    attention_threshold: float = _setting("Attention mass tau of the kept vision tokens.", 0.9)
    dtype: str = _setting("Model dtype; auto = bfloat16 on GPU, float32 on CPU.", "auto",
                          choices=DTYPES)
    max_length: int = _setting("Longest sequence; longer conversations lose trailing turns.",
                               4096)
    min_image_tokens: int = _setting("Qwen-VL: fewest vision tokens per image.", 256)
    max_image_tokens: int = _setting("Qwen-VL: most vision tokens per image.", 576)
    trust_remote_code: bool = _setting("Let the model repository run its own code.", False)
    layer: int = _setting("Decoder layer L (1-based) of the representation; 1 = the"
                          " method's first layer.", 1)

    def resolved(self, dtype: str) -> Settings:
        """A copy with ``dtype`` resolved for the device (``"bfloat16"``, ...)."""
        return dataclasses.replace(self, dtype=dtype)


# The settings a configuration's `extract` section holds (the model type comes from the
# run's model entry): the workflow passes these, and only these, as params.
RESULT_KEYS = tuple(f.name for f in dataclasses.fields(Settings) if f.name != "model_type")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add one option per field of :class:`Settings` (``--attention-threshold`` ...)."""
    for field in dataclasses.fields(Settings):
        kind = type(field.default) if field.default is not dataclasses.MISSING else str
        options: dict[str, Any] = {"help": field.metadata["help"]}
        if "choices" in field.metadata:
            options["choices"] = field.metadata["choices"]
        if field.default is dataclasses.MISSING:
            options["required"] = True
        elif kind is bool:
            options.update(action=argparse.BooleanOptionalAction, default=field.default)
        else:
            options.update(type=kind, default=field.default)
        parser.add_argument(_flag(field.name), **options)


def from_arguments(args: argparse.Namespace) -> Settings:
    """The :class:`Settings` of parsed options; a value out of its range is a ``UserError``."""
    settings = Settings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)})
    for name in ("max_length", "layer"):
        if getattr(settings, name) < 1:
            raise UserError(f"{_flag(name)} must be at least 1, got {getattr(settings, name)}")
    if not 0.0 < settings.attention_threshold <= 1.0:
        raise UserError(
            f"--attention-threshold must be in (0, 1], got {settings.attention_threshold}"
        )
    if not 1 <= settings.min_image_tokens <= settings.max_image_tokens:
        raise UserError(
            f"need 1 <= --min-image-tokens ({settings.min_image_tokens})"
            f" <= --max-image-tokens ({settings.max_image_tokens})"
        )
    return settings
