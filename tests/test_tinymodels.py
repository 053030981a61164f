"""The offline tiny-model builder: deterministic, loadable like a hub checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from scalselect.demo.tinymodels import FAMILIES, build_tiny_model


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("family", FAMILIES)
def test_build_is_deterministic_and_loads(family: str, tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    first = digests(build_tiny_model(family, tmp_path / "a"))
    assert first == digests(build_tiny_model(family, tmp_path / "b"))
    other = digests(build_tiny_model(family, tmp_path / "c", seed=1))
    assert other["model.safetensors"] != first["model.safetensors"]
    assert {k for k in first if first[k] != other[k]} == {"model.safetensors"}

    processor = AutoProcessor.from_pretrained(tmp_path / "a")
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "a")
    tokenizer = processor.tokenizer
    assert tokenizer.padding_side == "left"
    assert model.config.text_config.vocab_size == len(tokenizer)
    image_token = "<image>" if family == "llava" else "<|image_pad|>"
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids(image_token)
    assert tokenizer.convert_tokens_to_ids(image_token) != tokenizer.unk_token_id
    if family != "llava":
        assert model.config.text_config.bos_token_id is None
    text = processor.apply_chat_template(
        [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
        ],
        tokenize=False,
    )
    marker = "USER: <image>\nHi" if family == "llava" else "<|vision_start|><|image_pad|><|vision_end|>Hi"
    assert marker in text


def test_unknown_family(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model family"):
        build_tiny_model("blip", tmp_path)
