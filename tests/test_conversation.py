"""Rendering and token roles (METHOD.md stage 1, steps 1 and 3) on real tiny processors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from scalselect.data.records import Message, Sample
from scalselect.demo.tinymodels import build_tiny_model
from scalselect.extract.conversation import (
    ASSISTANT,
    INSTRUCTION,
    VISION,
    SampleFailure,
    _common_prefix_length,
    assistant_spans,
    chat_messages,
    shift_spans,
    token_roles,
    truncation_points,
)
from scalselect.extract.representation import PADDING, Encoder, collate

FAMILIES = {"llava": "llava", "qwen2-vl": "qwen", "qwen3-vl": "qwen"}


def sample(*turns: tuple[str, str], images: int = 1, index: int = 0) -> Sample:
    paths = tuple(f"src/{index}-{k}.png" for k in range(images))
    return Sample(index, index, tuple(Message(r, c) for r, c in turns), paths, "src")


def photo(path: Path, width: int, height: int, seed: int) -> Image.Image:
    """A real image file (gradient plus noise), written and decoded with Pillow."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    with Image.open(path) as image:
        return image.convert("RGB")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_model(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Image.Image]:
    root = tmp_path_factory.mktemp("images")
    return [photo(root / f"{k}.png", w, h, k) for k, (w, h) in enumerate([(96, 64), (70, 130), (150, 150)])]


def encoder(models: dict[str, Path], family: str, **kwargs) -> Encoder:
    return Encoder(models[family], FAMILIES[family], min_image_tokens=4, max_image_tokens=32, **kwargs)


def runs(encoder: Encoder, item, role: int) -> list[str]:
    """Decoded text of each maximal run of tokens with ``role``."""
    ids = item.inputs["input_ids"].numpy()
    mask = item.roles.numpy() == role
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return [encoder.tokenizer.decode(ids[a:b]) for a, b in zip(edges[::2], edges[1::2])]


def test_chat_messages_put_images_first_and_strip_tags() -> None:
    s = sample(
        ("system", "Be brief."),
        ("user", "  What is <image> in\n<img>this picture?  "),
        ("assistant", "A cat."),
        ("user", "And <image> here?"),
        ("assistant", "Nothing."),
        images=2,
    )
    messages = chat_messages(s)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == [
        {"type": "image"},
        {"type": "image"},
        {"type": "text", "text": "What is  in\nthis picture?"},
    ]
    assert messages[0]["content"] == [{"type": "text", "text": "Be brief."}]
    assert messages[3]["content"] == [{"type": "text", "text": "And  here?"}]
    with pytest.raises(SampleFailure) as failure:
        chat_messages(sample(("assistant", "Hello")))
    assert failure.value.reason == "no_user_turn"


def test_truncation_points_cut_whole_rounds() -> None:
    roles = ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    messages = [{"role": r, "content": []} for r in roles]
    assert truncation_points(messages) == [5, 3, 2]
    assert truncation_points(messages[:3]) == [2]
    assert truncation_points(messages[:2]) == []


def toy_render(messages: list[dict]) -> str:
    """A LLaVA-like template: ``USER: text ASSISTANT: text `` (role markers hold text
    that answers may repeat)."""
    return "".join(
        f"{m['role'].upper()}: " + "".join(p.get("text", "") for p in m["content"]) + " "
        for m in messages
    )


def text_messages(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": [{"type": "text", "text": t}]} for r, t in turns]


def test_assistant_spans_are_where_the_template_puts_each_answer() -> None:
    # Answers repeated in the role marker ("A" in "ASSISTANT"), in a user turn and in
    # an earlier answer; surrounding spaces are outside the span.
    messages = text_messages(("user", "Say A"), ("assistant", "A"), ("user", "A?"),
                             ("assistant", "  A  "), ("user", "S"), ("assistant", "S"))
    rendered = toy_render(messages)
    assert rendered == "USER: Say A ASSISTANT: A USER: A? ASSISTANT:   A   USER: S ASSISTANT: S "
    spans = assistant_spans(rendered, messages, toy_render)
    assert spans == [(23, 24), (47, 48), (70, 71)]
    assert [rendered[a:b] for a, b in spans] == ["A", "A", "S"]
    # Empty answers have no span.
    assert assistant_spans(toy_render(messages[:1] + text_messages(("assistant", " "))),
                           messages[:1] + text_messages(("assistant", " ")), toy_render) == []


@settings(max_examples=300, deadline=None)
@given(a=st.text(alphabet="ab", max_size=12), b=st.text(alphabet="ab", max_size=12))
def test_common_prefix_length(a: str, b: str) -> None:
    length = 0
    while length < min(len(a), len(b)) and a[length] == b[length]:
        length += 1
    assert _common_prefix_length(a, b) == length


def test_assistant_spans_follow_a_template_that_trims() -> None:
    def trimming(messages: list[dict]) -> str:
        return "".join(f"<{m['role']}>" + m["content"][0]["text"].strip() + "</s>" for m in messages)

    messages = text_messages(("user", "Hi"), ("assistant", "  Yo  "))
    assert trimming(messages) == "<user>Hi</s><assistant>Yo</s>"
    assert assistant_spans(trimming(messages), messages, trimming) == [(23, 25)]


def test_assistant_text_missing_from_the_rendering_is_a_template_mismatch() -> None:
    messages = text_messages(("user", "Say yes"), ("assistant", "yes"))

    def drops_answers(ms: list[dict]) -> str:
        return "".join("" if m["role"] == "assistant" else "U: " + m["content"][0]["text"] for m in ms)

    with pytest.raises(SampleFailure) as failure:
        assistant_spans(drops_answers(messages), messages, drops_answers)
    assert failure.value.reason == "template_mismatch"


def test_shift_spans_and_token_roles() -> None:
    rendered = "<i> hi <i> ok"
    # First image expands to 3 placeholders, the second to 2.
    assert shift_spans([(11, 13)], rendered, "<i>", [3, 2]) == [(11 + 6 + 3, 13 + 6 + 3)]
    assert shift_spans([(0, 1)], "x", "<i>", []) == [(0, 1)]
    with pytest.raises(SampleFailure) as failure:
        shift_spans([], rendered, "<i>", [3])
    assert failure.value.reason == "image_count_mismatch"
    ids = np.array([1, 9, 9, 5, 6, 7])
    offsets = np.array([[0, 0], [0, 3], [3, 6], [6, 9], [9, 12], [12, 14]])
    roles = token_roles(ids, offsets, [(10, 14)], image_token_id=9)
    assert roles.tolist() == [INSTRUCTION, VISION, VISION, INSTRUCTION, ASSISTANT, ASSISTANT]


@pytest.mark.parametrize("family", FAMILIES)
def test_roles_on_multi_turn_conversation(family: str, models, images) -> None:
    enc = encoder(models, family)
    s = sample(
        ("system", "You are a helpful assistant."),
        ("user", "What is in <image> this picture?"),
        ("assistant", "Two dogs are playing."),
        ("user", "What color is the ball? Two dogs"),
        ("assistant", "The ball is red."),
        images=2,
    )
    item = enc.encode(s, images[:2])
    ids = item.inputs["input_ids"].numpy()
    roles = item.roles.numpy()
    assert not item.truncated
    # Vision tokens: exactly the expanded image placeholders, one grid per image.
    assert (roles == VISION).sum() == sum(r * c for r, c in item.grids) == (ids == enc.image_token_id).sum()
    assert len(item.grids) == 2
    assistant = [text.strip() for text in runs(enc, item, ASSISTANT)]
    assert assistant == ["Two dogs are playing.", "The ball is red."]
    instruction = "".join(runs(enc, item, INSTRUCTION))
    for text in ("You are a helpful assistant.", "What is in  this picture?", "What color is the ball? Two dogs"):
        assert text in instruction
    if family != "llava":
        # Qwen's vision markers carry no visual features: instruction tokens here.
        for marker in ("<|vision_start|>", "<|vision_end|>"):
            marker_id = enc.tokenizer.convert_tokens_to_ids(marker)
            assert (ids == marker_id).sum() == 2
            assert (roles[ids == marker_id] == INSTRUCTION).all()
    # The images come right at the start of the first user turn, before its text.
    first_vision = np.flatnonzero(roles == VISION)[0]
    assert "this picture" not in enc.tokenizer.decode(ids[:first_vision])


def test_qwen_token_budget(models, images) -> None:
    small = encoder(models, "qwen2-vl").encode(sample(("user", "<image>Hi"), ("assistant", "Yo")), images[2:])
    large = Encoder(models["qwen2-vl"], "qwen", min_image_tokens=64, max_image_tokens=100).encode(
        sample(("user", "<image>Hi"), ("assistant", "Yo")), images[2:]
    )
    assert 4 <= int((small.roles == VISION).sum()) <= 32
    assert 64 <= int((large.roles == VISION).sum()) <= 100


def test_truncation_drops_trailing_rounds(models, images) -> None:
    turns = [("user", "<image>\nDescribe this image in detail.")]
    for k in range(4):
        turns += [("assistant", f"The train is arriving at the station {k}."), ("user", f"Count the apples {k}.")]
    turns.append(("assistant", "Five."))
    s = sample(*turns)
    full = encoder(models, "llava").encode(s, images[:1])
    first_round = encoder(models, "llava").encode(sample(*turns[:2]), images[:1])
    limit = first_round.seq_len + 5
    assert limit < full.seq_len
    cut = encoder(models, "llava", max_length=limit).encode(s, images[:1])
    assert cut.truncated and cut.seq_len == first_round.seq_len
    assert torch_equal(cut.inputs["input_ids"], first_round.inputs["input_ids"])
    assert (cut.roles == VISION).sum() == (full.roles == VISION).sum()
    # Only the first instruction fits: its answer goes too, the images stay.
    only = encoder(models, "llava", max_length=first_round.seq_len - 3).encode(s, images[:1])
    assert only.truncated and (only.roles == ASSISTANT).sum() == 0
    assert (only.roles == VISION).sum() == (full.roles == VISION).sum()
    with pytest.raises(SampleFailure) as failure:
        encoder(models, "llava", max_length=30).encode(s, images[:1])
    assert failure.value.reason == "too_long"
    with pytest.raises(SampleFailure) as failure:  # nothing to drop
        encoder(models, "llava", max_length=30).encode(sample(("user", "<image>Hi")), images[:1])
    assert failure.value.reason == "too_long"


@pytest.mark.parametrize("family", ["llava", "qwen3-vl"])
def test_max_length_is_inclusive(models, images, family: str) -> None:
    turns = [("user", "<image>\nDescribe this image in detail."), ("assistant", "A red train."),
             ("user", "Count the apples."), ("assistant", "Five.")]
    s = sample(*turns)
    full = encoder(models, family).encode(s, images[:1])
    first_round = encoder(models, family).encode(sample(*turns[:2]), images[:1])
    # Exactly max_length tokens: kept whole.
    exact = encoder(models, family, max_length=full.seq_len).encode(s, images[:1])
    assert not exact.truncated and exact.seq_len == full.seq_len
    assert torch_equal(exact.inputs["input_ids"], full.inputs["input_ids"])
    # One token fewer: the last round goes; a cut that fits exactly is the one taken.
    for limit in (full.seq_len - 1, first_round.seq_len):
        cut = encoder(models, family, max_length=limit).encode(s, images[:1])
        assert cut.truncated and torch_equal(cut.inputs["input_ids"], first_round.inputs["input_ids"])
    # One below the first round: only the first instruction (and the images) stay.
    only = encoder(models, family, max_length=first_round.seq_len - 1).encode(s, images[:1])
    assert only.truncated and (only.roles == ASSISTANT).sum() == 0
    assert only.seq_len < first_round.seq_len
    assert (only.roles == VISION).sum() == (full.roles == VISION).sum()
    # And that shortest cut at exactly its own length is accepted, one token less is not.
    assert encoder(models, family, max_length=only.seq_len).encode(s, images[:1]).truncated
    with pytest.raises(SampleFailure, match="too_long"):
        encoder(models, family, max_length=only.seq_len - 1).encode(s, images[:1])


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_encode_failures(models, images) -> None:
    enc = encoder(models, "qwen2-vl")
    with pytest.raises(SampleFailure) as failure:
        enc.encode(sample(("user", "Hi"), ("assistant", "Yo"), images=0), [])
    assert (failure.value.reason, failure.value.detail) == ("no_vision_tokens", "the sample has no image")
    with pytest.raises(SampleFailure) as failure:
        enc.encode(sample(("assistant", "Yo")), images[:1])
    assert failure.value.reason == "no_user_turn"
    # An extreme aspect ratio is refused by the Qwen image processor.
    with pytest.raises(SampleFailure) as failure:
        enc.encode(sample(("user", "<image>Hi"), ("assistant", "Yo")), [Image.new("RGB", (2000, 4))])
    assert failure.value.reason == "processor_error" and failure.value.detail.startswith("ValueError: ")
    # A template that renders nothing but the images and the answers.
    bare = encoder(models, "qwen3-vl")
    bare.processor.chat_template = (
        "{% for m in messages %}{% for p in m['content'] %}{% if p['type'] == 'image' %}"
        "<|image_pad|>{% elif m['role'] == 'assistant' %}{{ p['text'] }}{% endif %}"
        "{% endfor %}{% endfor %}"
    )
    with pytest.raises(SampleFailure) as failure:
        bare.encode(sample(("user", "<image>"), ("assistant", "Yo")), images[:1])
    assert (failure.value.reason, failure.value.detail) == (
        "no_instruction_tokens", "no token outside images and answers")


def test_encoder_pickles_and_collate_pads_left(models, images) -> None:
    enc = pickle.loads(pickle.dumps(encoder(models, "qwen3-vl")))
    items = [
        enc.encode(sample(("user", "<image>Hi"), ("assistant", "Yo")), images[:1]),
        enc.encode(sample(("user", "<image>Describe this image in detail."), ("assistant", "A dog.")), images[1:2]),
    ]
    batch = collate(items)
    width = max(item.seq_len for item in items)
    assert batch.inputs["input_ids"].shape == (2, width) and len(batch) == 2
    for row, item in enumerate(items):
        pad = width - item.seq_len
        assert (batch.roles[row, :pad] == PADDING).all()
        assert (batch.inputs["attention_mask"][row, :pad] == 0).all()
        assert (batch.inputs["input_ids"][row, :pad] == enc.pad_token_id).all()
        assert torch_equal(batch.inputs["input_ids"][row, pad:], item.inputs["input_ids"])
    assert batch.inputs["image_grid_thw"].shape == (2, 3)
    assert batch.inputs["pixel_values"].shape[0] == sum(
        int(item.inputs["pixel_values"].shape[0]) for item in items
    )


# --------------------------------------------------------------------------- boundaries the
# mutation run of bench/RESULTS.md found untested


def typed_render(messages: list[dict]) -> str:
    """A template that renders only ``text`` parts, whatever else a message holds."""
    return "".join(
        f"[{m['role']}]" + "".join(p["text"] for p in m["content"] if p["type"] == "text") + "\n"
        for m in messages
    )


def test_assistant_spans_join_text_parts_and_pass_empty_answers() -> None:
    messages = [
        *text_messages(("user", "Q"), ("assistant", "  "), ("user", "Q2")),
        {"role": "assistant", "content": [{"type": "text", "text": "Yes, "}, {"type": "text", "text": "two."}]},
    ]
    rendered = typed_render(messages)
    assert rendered == "[user]Q\n[assistant]  \n[user]Q2\n[assistant]Yes, two.\n"
    assert assistant_spans(rendered, messages, typed_render) == [(42, 51)]
    assert rendered[42:51] == "Yes, two."


def test_assistant_text_that_starts_with_the_first_stand_in() -> None:
    messages = text_messages(("user", "Q"), ("assistant", "\ue000A"))
    rendered = typed_render(messages)
    assert assistant_spans(rendered, messages, typed_render) == [(19, 21)]


def test_failure_details() -> None:
    with pytest.raises(SampleFailure) as failure:
        chat_messages(sample(("assistant", "Hello")))
    assert (failure.value.reason, failure.value.detail) == ("no_user_turn", "the conversation has no user message")
    assert str(failure.value) == "no_user_turn: the conversation has no user message"
    messages = text_messages(("user", "Say yes"), ("assistant", "yes"))

    def shouts(ms: list[dict]) -> str:
        return "".join(m["content"][0]["text"].upper() for m in ms)

    with pytest.raises(SampleFailure) as failure:
        assistant_spans(shouts(messages), messages, shouts)
    assert failure.value.detail == "the text of message 1 (assistant) is not where the chat template renders it"
    with pytest.raises(SampleFailure) as failure:
        shift_spans([], "<i><i>", "<i>", [3])
    assert failure.value.detail == "the rendering holds 2 image placeholders for 1 images"


def test_shift_spans_past_three_images_and_roles_are_int8() -> None:
    rendered = "<i>a<i>b<i>c"
    # Each image grows by (count - 1) * 3 characters; "c" follows all three.
    assert shift_spans([(11, 12), (7, 8)], rendered, "<i>", [2, 3, 4]) == [(11 + 3 + 6 + 9, 12 + 18), (7 + 3 + 6, 8 + 9)]
    roles = token_roles(np.array([1, 2]), np.array([[0, 1], [1, 2]]), [], image_token_id=2)
    assert roles.dtype == np.int8 and roles.tolist() == [INSTRUCTION, VISION]
