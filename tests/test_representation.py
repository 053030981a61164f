"""The first-layer fast path equals the original recipe (METHOD.md stage 1) exactly."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from scalselect.data.records import Message, Sample
from scalselect.demo.tinymodels import FAMILIES, build_tiny_model
from scalselect.errors import UserError
from scalselect.extract.conversation import chat_messages
from scalselect.extract.reference import ReferenceModel, plain_selection
from scalselect.extract.representation import (
    VISION,
    Encoder,
    TruncatedVLM,
    collate,
    resolve_dtype,
    select_tokens,
)

TOLERANCE = 1e-5
# Differences between the fast path's and the reference's weights are ~1e-7; a sample
# whose cumulative weights come closer than this to the threshold could flip its kept set
# by float noise alone, and would not test anything.
MARGIN = 1e-5


def model_type(family: str) -> str:
    return "llava" if family == "llava" else "qwen"


def photo(path: Path, width: int, height: int, seed: int) -> Image.Image:
    """A real image file (blocks of colour plus noise), written and decoded with Pillow."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (4, 4, 3)).repeat(-(-height // 4), 0).repeat(-(-width // 4), 1)
    pixels = np.clip(blocks[:height, :width] + rng.normal(0, 25, (height, width, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
    with Image.open(path) as image:
        return image.convert("RGB")


def conversations() -> list[Sample]:
    def s(index: int, turns: list[tuple[str, str]], images: int) -> Sample:
        paths = tuple(f"coco/{index}-{k}.jpg" for k in range(images))
        return Sample(index, index, tuple(Message(r, c) for r, c in turns), paths, "coco")

    return [
        s(0, [("user", "<image>\nDescribe this image."), ("assistant", "A cat on a red sofa.")], 1),
        s(1, [
            ("system", "You are a helpful assistant."),
            ("user", "What is in <image> this picture?"),
            ("assistant", "Two dogs."),
            ("user", "What color is the ball?"),
            ("assistant", "The ball is red."),
        ], 2),
        s(2, [("user", "How many people are in the picture?<image>"), ("assistant", "Three.")], 1),
        s(3, [("user", "<image>\nRead the text in the image and answer the question below."),
              ("assistant", "The sign says stop.")], 1),
    ]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[list[Image.Image]]:
    root = tmp_path_factory.mktemp("images")
    sizes = [[(120, 90)], [(64, 128), (200, 100)], [(150, 150)], [(90, 60)]]
    return [
        [photo(root / f"{i}-{k}.jpg", w, h, 10 * i + k) for k, (w, h) in enumerate(group)]
        for i, group in enumerate(sizes)
    ]


def margin(p: np.ndarray, threshold: float) -> float:
    """How far the reference's selection is from flipping: the distance of every partial
    sum of the sorted weights to the threshold, and the gap between neighbouring weights
    at the cut."""
    ranked = np.sort(p)[::-1]
    cumulative = np.cumsum(ranked)
    distance = float(np.abs(cumulative - threshold).min())
    k = int(np.argmax(cumulative > threshold)) + 1 if (cumulative > threshold).any() else len(p)
    if k < len(p):
        distance = min(distance, float(ranked[k - 1] - ranked[k]))
    return distance


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_path_equals_original_recipe(family: str, images, tmp_path: Path) -> None:
    """Production (encoder + first-layer fast path) against the independent reference,
    end to end from the raw sample, in float32 (exactness is only meaningful there)."""
    path = build_tiny_model(family, tmp_path / family)
    budget = {"min_image_tokens": 8, "max_image_tokens": 48}
    encoder = Encoder(path, model_type(family), **budget)
    samples = conversations()
    items = [encoder.encode(s, i) for s, i in zip(samples, images)]
    reference = ReferenceModel(path, model_type(family), dtype="float32", **budget)
    fast = TruncatedVLM(path, model_type(family), dtype="float32")
    # Only the first decoder layer is kept, and no LM head is run.
    assert len(fast.model.language_model.layers) == 1
    assert not hasattr(fast.model, "lm_head")

    for sample, group, item in zip(samples, images, items):
        inputs, roles = reference.encode(sample, group)
        assert np.array_equal(item.inputs["input_ids"].numpy(), inputs["input_ids"][0].numpy())
        assert np.array_equal(item.roles.numpy(), roles), sample.index
    expected = [reference.represent(s, i) for s, i in zip(samples, images)]
    one_by_one = [fast.represent(collate([item]))[0] for item in items]
    batched = fast.represent(collate(items))
    assert len({item.seq_len for item in items}) > 1  # the batch is really padded
    for item, ref, single, inbatch in zip(items, expected, one_by_one, batched):
        assert ref.status == "ok" and 1 <= ref.n_kept < ref.n_vision
        assert 8 <= ref.n_vision / len(item.grids) <= 48 or family == "llava"
        assert margin(ref.weights.astype(np.float64), 0.9) > MARGIN
        for got in (single, inbatch):
            assert got.status == "ok" and got.vector.dtype == np.float32
            assert np.abs(got.vector - ref.vector).max() <= TOLERANCE
            assert np.array_equal(got.kept, ref.kept)
            assert np.abs(got.weights - ref.weights).max() <= 1e-6
            assert (got.n_vision, got.n_kept, got.seq_len) == (ref.n_vision, ref.n_kept, ref.seq_len)
            assert got.n_vision == int((item.roles == VISION).sum()) == sum(r * c for r, c in got.grids)
            assert not got.truncated


def tricky_conversations() -> list[Sample]:
    """Roles that a wrong search or offset would get wrong: answers repeated in user
    turns and across turns, answers with surrounding spaces, a system message, a stray
    tag in a later turn, a one-character answer, an empty answer."""
    def s(index: int, turns: list[tuple[str, str]], images: int = 1) -> Sample:
        paths = tuple(f"coco/{index}-{k}.jpg" for k in range(images))
        return Sample(index, index, tuple(Message(r, c) for r, c in turns), paths, "coco")

    return [
        s(0, [("user", "Yes or no? Say Yes.<image>"), ("assistant", "Yes"),
              ("user", "Yes again?"), ("assistant", "Yes")]),
        s(1, [("system", "Answer: A"), ("user", "  <image>\n\nA or B? A  "),
              ("assistant", "  A  "), ("user", "And <image> now?"), ("assistant", "B")], 2),
        s(2, [("user", "<img>Describe."), ("assistant", "")]),
        s(3, [("user", "<image>The sign says stop."), ("assistant", "The sign says stop."),
              ("user", "Sure?"), ("assistant", "The sign says stop. Sure.")]),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_token_roles_equal_the_independent_reference(family: str, images, tmp_path: Path) -> None:
    path = build_tiny_model(family, tmp_path / family)
    budget = {"min_image_tokens": 8, "max_image_tokens": 48}
    encoder = Encoder(path, model_type(family), **budget)
    reference = ReferenceModel(path, model_type(family), dtype="float32", **budget)
    groups = [images[0], images[1], images[2], images[3]]
    for sample, group in zip(tricky_conversations(), groups):
        item = encoder.encode(sample, group)
        inputs, roles = reference.encode(sample, group)
        assert np.array_equal(item.inputs["input_ids"].numpy(), inputs["input_ids"][0].numpy())
        assert np.array_equal(item.roles.numpy(), roles), (family, sample.index)
        # The reference itself: its assistant tokens decode to the answers, in order.
        ids = inputs["input_ids"][0].numpy()
        edges = np.flatnonzero(np.diff(np.concatenate([[0], (roles == 2).astype(int), [0]])))
        answers = [m.content.strip() for m in sample.messages if m.role == "assistant"]
        decoded = [reference.processor.tokenizer.decode(ids[a:b]).strip()
                   for a, b in zip(edges[::2], edges[1::2])]
        assert decoded == [a for a in answers if a], (family, sample.index)


def test_non_finite_sample_does_not_spoil_the_batch(images, tmp_path: Path) -> None:
    path = build_tiny_model("llava", tmp_path / "llava")
    encoder = Encoder(path, "llava")
    items = [encoder.encode(s, i) for s, i in zip(conversations()[2:], images[2:])]
    fast = TruncatedVLM(path, "llava", dtype="float32")
    clean = fast.represent(collate([items[1]]))[0]
    items[0].inputs["pixel_values"][0, 0, 0, 0] = float("nan")
    broken, ok = fast.represent(collate(items))
    assert broken.status == "non_finite" and broken.vector is None
    assert broken.detail == "layer 1's hidden states or attention are not finite"
    assert ok.status == "ok" and np.abs(ok.vector - clean.vector).max() <= TOLERANCE


def test_select_tokens_rules() -> None:
    real = torch.ones(1, 3, dtype=torch.bool)
    # The crossing token is kept; ties keep sequence order.
    p, keep, n_kept = select_tokens(torch.tensor([[1.0, 2.0, 1.0]]), real, 0.6)
    assert p.tolist() == [[0.25, 0.5, 0.25]] and keep.tolist() == [[True, True, False]]
    assert n_kept.tolist() == [2]
    # Reaching the threshold exactly is not exceeding it.
    _, keep, n_kept = select_tokens(torch.tensor([[2.0, 1.0, 1.0]]), real, 0.75)
    assert n_kept.tolist() == [3] and keep.all()
    # At least one token; all tokens when nothing exceeds tau = 1.
    _, keep, n_kept = select_tokens(torch.tensor([[0.0, 9.0, 1.0]]), real, 0.01)
    assert keep.tolist() == [[False, True, False]]
    _, keep, _ = select_tokens(torch.tensor([[1.0, 1.0, 2.0]]), real, 1.0)
    assert keep.all()
    # Zero attention everywhere: uniform weights; padding entries never count.
    padded = torch.tensor([[True, True, True, True, False]])
    p, keep, n_kept = select_tokens(torch.tensor([[0.0, 0.0, 0.0, 0.0, 5.0]]), padded, 0.7)
    assert p.tolist() == [[0.25, 0.25, 0.25, 0.25, 0.0]]
    assert n_kept.tolist() == [3] and keep.tolist() == [[True, True, True, False, False]]
    # Uniform thirds in float64: two of them reach 2/3 without exceeding it.
    _, keep, n_kept = select_tokens(torch.zeros(1, 3), real, 2 / 3)
    assert n_kept.tolist() == [3] and keep.all()


def test_select_tokens_matches_plain_selection() -> None:
    rng = np.random.default_rng(3)
    length, dim = 40, 8
    roles = np.zeros(length, np.int8)
    roles[5:29] = VISION
    roles[33:] = 2  # assistant
    attention = np.tril(rng.random((length, length)) ** 4)
    attention /= attention.sum(1, keepdims=True)
    hidden = rng.normal(size=(length, dim)).astype(np.float32)
    vector, kept, p = plain_selection(hidden, attention, roles, 0.8)
    instruction = roles == 0
    a = attention[instruction][:, roles == VISION].mean(0)
    fast_p, keep, n_kept = select_tokens(torch.tensor(a)[None], torch.ones(1, len(a), dtype=torch.bool), 0.8)
    assert np.allclose(fast_p[0].numpy(), p)
    assert np.array_equal(np.flatnonzero(keep[0].numpy()), kept) and int(n_kept) == len(kept)
    assert np.allclose(vector, hidden[roles == VISION][kept].mean(0))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(0, 4), min_size=1, max_size=12), min_size=1, max_size=4),
    threshold=st.fractions(Fraction(1, 100), Fraction(1)),
)
def test_tau_cut_property(rows: list[list[int]], threshold: Fraction) -> None:
    """The kept set, computed exactly in the test: the largest weights first (ties in
    sequence order) up to and including the first whose cumulative share exceeds tau;
    all of them if none does; uniform weights when all are zero."""
    width = max(map(len, rows))
    weights = torch.zeros(len(rows), width, dtype=torch.float64)
    real = torch.zeros(len(rows), width, dtype=torch.bool)
    for r, row in enumerate(rows):
        weights[r, : len(row)] = torch.tensor(row, dtype=torch.float64)
        real[r, : len(row)] = True
    for r, row in enumerate(rows):
        total = sum(row)
        shares = [Fraction(w, total) if total else Fraction(1, len(row)) for w in row]
        order = sorted(range(len(row)), key=lambda j: (-shares[j], j))
        partial = np.cumsum([float(shares[j]) for j in order])
        assume(np.abs(partial - float(threshold)).min() > 1e-9)  # float noise would decide
        cumulative, kept = Fraction(0), []
        for j in order:
            kept.append(j)
            cumulative += shares[j]
            if cumulative > threshold:
                break
        p, keep, n_kept = select_tokens(weights, real, float(threshold))
        assert sorted(kept) == np.flatnonzero(keep[r].numpy()).tolist()
        assert int(n_kept[r]) == len(kept)
        np.testing.assert_allclose(p[r, : len(row)].numpy(), [float(x) for x in shares], rtol=1e-12)
        assert not keep[r, len(row):].any() and (p[r, len(row):] == 0).all()


def test_configuration_errors(tmp_path: Path) -> None:
    path = build_tiny_model("qwen3-vl", tmp_path / "q")
    with pytest.raises(UserError, match="not a 'llava' one"):
        Encoder(path, "llava")
    with pytest.raises(UserError, match="model type"):
        TruncatedVLM(path, "blip")
    with pytest.raises(UserError, match=re.escape("attention_threshold must be in (0, 1], got 0.0")):
        TruncatedVLM(path, "qwen", attention_threshold=0.0)
    with pytest.raises(UserError, match=re.escape("min_image_tokens (600) is larger than max_image_tokens (576)")):
        Encoder(path, "qwen", min_image_tokens=600, max_image_tokens=576)
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(UserError, match="dtype"):
        resolve_dtype("int8", torch.device("cpu"))
    with pytest.raises(UserError, match=re.escape("dtype 'float48' is not a floating-point torch dtype")):
        resolve_dtype("float48", torch.device("cpu"))
    with pytest.raises(UserError, match=re.escape(
            f"{path} is a 'qwen3_vl' checkpoint, not a 'llava' one (expected model_type llava)")):
        TruncatedVLM(path, "llava")
    llava = build_tiny_model("llava", tmp_path / "l")
    with pytest.raises(UserError, match=re.escape(
            f"{llava} is a 'llava' checkpoint, not a 'qwen' one"
            " (expected model_type qwen2_vl or qwen2_5_vl or qwen3_vl)")):
        Encoder(llava, "qwen")
    TruncatedVLM(path, "qwen", attention_threshold=1.0)
    with pytest.raises(UserError, match=re.escape("attention_threshold must be in (0, 1], got 1.5")):
        TruncatedVLM(path, "qwen", attention_threshold=1.5)


def test_missing_weights_are_an_error(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = build_tiny_model("qwen3-vl", tmp_path / "q")
    weights = load_file(path / "model.safetensors")
    del weights["model.visual.blocks.0.attn.qkv.weight"]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match="visual.blocks.0.attn.qkv.weight"):
        TruncatedVLM(path, "qwen")
    del weights["model.visual.blocks.0.attn.proj.weight"]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match=re.escape(
            f"{path}: weights missing or mis-shaped: model.visual.blocks.0.attn.proj.weight, "
            "model.visual.blocks.0.attn.qkv.weight")):
        TruncatedVLM(path, "qwen")
    # Many missing weights: the first ten, sorted, are named.
    for name in sorted(name for name in weights if name.startswith("model.visual."))[:12]:
        del weights[name]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError) as error:
        TruncatedVLM(path, "qwen")
    named = str(error.value).split("weights missing or mis-shaped: ")[1].split(", ")
    assert len(named) == 10 and named == sorted(named)


# bfloat16 keeps 8 significant bits (relative step 2**-8 = 3.9e-3). Measured against the
# float32 reference on the tiny models of the four families: relative error of the vector
# (L2) 4.5e-3 to 1.2e-2, weights within 1.6e-4 to 2.3e-3; about three bfloat16 steps.
BF16_VECTOR_RELATIVE = 8 * 2**-8
BF16_WEIGHTS = 5e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_is_within_its_precision_of_float32(family: str, images, tmp_path: Path) -> None:
    """The GPU default (``dtype: auto`` is bfloat16 on CUDA) against the float32
    reference, with a bound that bfloat16 can honestly meet."""
    path = build_tiny_model(family, tmp_path / family)
    budget = {"min_image_tokens": 8, "max_image_tokens": 48}
    encoder = Encoder(path, model_type(family), **budget)
    reference = ReferenceModel(path, model_type(family), dtype="float32", **budget)
    fast = TruncatedVLM(path, model_type(family), dtype="bfloat16")
    assert fast.dtype == torch.bfloat16
    assert {p.dtype for p in fast.model.parameters()} == {torch.bfloat16}
    samples = conversations()
    half = fast.represent(collate([encoder.encode(s, i) for s, i in zip(samples, images)]))
    for sample, group, got in zip(samples, images, half):
        ref = reference.represent(sample, group)
        assert got.status == "ok" and got.vector.dtype == np.float32
        error = np.linalg.norm(got.vector - ref.vector) / np.linalg.norm(ref.vector)
        assert 0 < error <= BF16_VECTOR_RELATIVE  # > 0: bfloat16 really ran
        assert np.abs(got.weights - ref.weights).max() <= BF16_WEIGHTS
        # A kept set may differ only by tokens whose weight is within the error of the cut.
        cut = ref.weights[ref.kept].min()
        for token in np.setxor1d(got.kept, ref.kept):
            assert abs(ref.weights[token] - cut) <= 2 * BF16_WEIGHTS


def test_auto_dtype_is_float32_on_the_cpu_unless_simulating_a_gpu(tmp_path: Path) -> None:
    """``SCALSELECT_TEST_AUTO_DTYPE=bfloat16`` (tests/conftest.py) makes 'auto' resolve
    as on CUDA; without it the CPU default is float32."""
    import os

    path = build_tiny_model("llava", tmp_path / "llava")
    simulated = os.environ.get("SCALSELECT_TEST_AUTO_DTYPE")
    expected = getattr(torch, simulated) if simulated else torch.float32
    assert TruncatedVLM(path, "llava").dtype == expected
    assert ReferenceModel(path, "llava").dtype == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_any_layer_equals_full_forward(family: str, images, tmp_path: Path) -> None:
    # Three decoder layers: layer 2 is neither the first nor the last one, and layer 3's
    # hidden_states entry is the final-norm output. Qwen3-VL adds deepstack features
    # after layer 1, so layers 2 and 3 see them.
    path = build_tiny_model(family, tmp_path / family, text_layers=3)
    budget = {"min_image_tokens": 8, "max_image_tokens": 48}
    encoder = Encoder(path, model_type(family), **budget)
    samples = conversations()
    items = [encoder.encode(s, i) for s, i in zip(samples, images)]
    reference = ReferenceModel(path, model_type(family), dtype="float32", layer=1, **budget)
    with torch.inference_mode():
        inputs, _ = reference.encode(samples[0], images[0])
        full = reference.model(**inputs, output_hidden_states=True, output_attentions=True)
    assert len(full.hidden_states) == 4 and len(full.attentions) == 3
    first_vectors = {}
    for layer in (1, 2, 3):
        reference.layer = layer
        fast = TruncatedVLM(path, model_type(family), dtype="float32", layer=layer)
        # Layers 1..L are built, no LM head; layer L's attention carries the capture.
        assert len(fast.model.language_model.layers) == layer
        assert not hasattr(fast.model, "lm_head")
        expected = [reference.represent(s, i) for s, i in zip(samples, images)]
        batched = fast.represent(collate(items))
        for ref, got in zip(expected, batched):
            assert ref.status == got.status == "ok"
            assert margin(ref.weights.astype(np.float64), 0.9) > MARGIN
            assert np.abs(got.vector - ref.vector).max() <= TOLERANCE
            assert np.array_equal(got.kept, ref.kept)
            assert np.abs(got.weights - ref.weights).max() <= 1e-6
        first_vectors[layer] = expected[0].vector
    # The layers really differ: each layer gives another vector.
    assert not np.allclose(first_vectors[1], first_vectors[2])
    assert not np.allclose(first_vectors[2], first_vectors[3])


@pytest.mark.parametrize("family", ["llava", "qwen3-vl"])
def test_last_layer_is_final_norm_output(family: str, images, tmp_path: Path) -> None:
    """Independent of the reference: hidden_states[-1] of a full forward is the final
    norm's output (transformers' choice, as the original tool read it), and the last
    layer's representation is made from it."""
    path = build_tiny_model(family, tmp_path / family)
    encoder = Encoder(path, model_type(family), min_image_tokens=8, max_image_tokens=48)
    item = encoder.encode(conversations()[0], images[0])
    fast = TruncatedVLM(path, model_type(family), dtype="float32", layer=2)
    normed = []
    fast.model.language_model.norm.register_forward_hook(lambda m, a, out: normed.append(out))
    result = fast.represent(collate([item]))[0]
    vision = np.flatnonzero(item.roles.numpy() == VISION)
    kept_rows = normed[0][0, vision[result.kept]].numpy()
    assert np.abs(result.vector - kept_rows.mean(0)).max() <= 1e-6
    with pytest.raises(UserError, match="layer 3 is not in 1..2"):
        TruncatedVLM(path, model_type(family), layer=3)


# --------------------------------------------------------------------------- what the mutation
# run of bench/RESULTS.md found unpinned


def eager_instruction_attention(q, k, allowed, rows, scaling):
    """Head- and row-mean of softmax(q k^T * scaling) over the allowed keys, in float64
    loops: the textbook computation, one sample, head and row at a time."""
    batch, heads, length, _ = q.shape
    group = heads // k.shape[1]
    out = np.zeros((batch, length))
    for b in range(batch):
        picked = np.flatnonzero(rows[b])
        for h in range(heads):
            for r in picked:
                s = (q[b, h, r] @ k[b, h // group].T) * scaling
                s = np.where(allowed[b, r], s, -np.inf)
                e = np.exp(s - s.max())
                out[b] += e / e.sum()
        out[b] /= heads * max(1, len(picked))
    return out


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_instruction_attention_is_the_head_and_row_mean_of_the_softmax(monkeypatch, mask_kind: str) -> None:
    from scalselect.extract import representation

    rng = np.random.default_rng(3)
    batch, heads, kv_heads, length, dim = 2, 4, 2, 7, 8  # grouped-query attention
    q = rng.standard_normal((batch, heads, length, dim))
    k = rng.standard_normal((batch, kv_heads, length, dim))
    rows = np.zeros((batch, length), bool)
    rows[0, [1, 2, 5]] = True
    rows[1, [4]] = True
    causal = np.tril(np.ones((length, length), bool))
    allowed = np.broadcast_to(causal, (batch, length, length)).copy()
    allowed[1, :, :2] = False  # sample 1 is left-padded by two positions
    allowed[1, :2, :2] = True  # (its padding rows see something, as SDPA's masks do)
    mask = {"none": None, "bool": torch.from_numpy(allowed[:, None]),
            "additive": torch.from_numpy(np.where(allowed, 0.0, -1e9)[:, None]).float()}[mask_kind]
    if mask_kind == "none":
        allowed = np.broadcast_to(causal, (batch, length, length))
    monkeypatch.setattr(representation, "SCORE_BLOCK", 1)  # one head per block
    for scaling, expected_scaling in ((None, dim**-0.5), (0.3, 0.3)):
        got = representation._instruction_attention(
            torch.from_numpy(q).float(), torch.from_numpy(k).float(), mask,
            torch.from_numpy(rows), scaling,
        )
        assert got.dtype == torch.float32 and got.shape == (batch, length)
        expected = eager_instruction_attention(q, k, allowed, rows, expected_scaling)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_a_batch_whose_longest_sample_has_the_fewest_vision_tokens(images, tmp_path: Path) -> None:
    # No padding before the one-image sample: a vision slot past its own would land on
    # real tokens (BOS first), not on zero-attention padding.
    path = build_tiny_model("llava", tmp_path / "llava")
    encoder = Encoder(path, "llava")
    long_chat = [("user", "<image>\n" + "Describe every object you can see, one by one. " * 6),
                 ("assistant", "A cat, a sofa, a lamp and a window with red curtains.")]
    samples = [Sample(0, 0, tuple(Message(r, c) for r, c in long_chat), ("a.jpg",), "coco"),
               conversations()[1]]
    items = [encoder.encode(samples[0], images[0]), encoder.encode(samples[1], images[1])]
    assert items[0].seq_len > items[1].seq_len
    assert (items[0].roles == VISION).sum() < (items[1].roles == VISION).sum()
    fast = TruncatedVLM(path, "llava", dtype="float32")
    batched = fast.represent(collate(items))
    for item, got in zip(items, batched):
        single = fast.represent(collate([item]))[0]
        assert got.truncated is False and got.n_vision == single.n_vision
        assert np.abs(got.vector - single.vector).max() <= TOLERANCE
        assert np.abs(got.weights - single.weights).max() <= 1e-6
        assert np.array_equal(got.kept, single.kept)


def test_image_grids_of_each_family(images, tmp_path: Path) -> None:
    llava = Encoder(build_tiny_model("llava", tmp_path / "llava"), "llava")
    vision = llava.processor.image_processor.crop_size["height"] // 14  # patch 14 (tinymodels)
    item = llava.encode(conversations()[1], images[1])
    assert item.grids == [(vision, vision)] * 2 and item.truncated is False
    qwen = Encoder(build_tiny_model("qwen3-vl", tmp_path / "qwen"), "qwen", min_image_tokens=8, max_image_tokens=48)
    item = qwen.encode(conversations()[1], images[1])
    thw = qwen.processor.image_processor(images=images[1], **qwen.images_kwargs)["image_grid_thw"].tolist()
    assert item.grids == [(h // 2, w // 2) for _, h, w in thw] and len(set(item.grids)) == 2
    assert all(type(n) is int for grid in item.grids for n in grid)
    assert int((item.roles == VISION).sum()) == sum(h * w for h, w in item.grids)


def test_encoder_defaults_and_budget_bounds(tmp_path: Path) -> None:
    import inspect

    path = build_tiny_model("qwen3-vl", tmp_path / "q")
    encoder = Encoder(path, "qwen")
    unit = (encoder.processor.image_processor.patch_size * encoder.processor.image_processor.merge_size) ** 2
    assert encoder.max_length == 4096
    assert encoder.images_kwargs == {"size": {"shortest_edge": 256 * unit, "longest_edge": 576 * unit}}
    Encoder(path, "qwen", min_image_tokens=1, max_image_tokens=1)  # the smallest budget
    with pytest.raises(UserError, match=re.escape("min_image_tokens must be at least 1, got 0")):
        Encoder(path, "qwen", min_image_tokens=0, max_image_tokens=4)
    # Remote code stays off unless asked for.
    for cls in (Encoder, TruncatedVLM):
        assert inspect.signature(cls).parameters["trust_remote_code"].default is False


def test_encoder_failure_details(images, tmp_path: Path) -> None:
    """Image-count and length failures (the others: test_conversation's test_encode_failures)."""
    from scalselect.extract.conversation import SampleFailure

    encoder = Encoder(build_tiny_model("qwen2-vl", tmp_path / "q"), "qwen", min_image_tokens=8,
                      max_image_tokens=48)
    with pytest.raises(ValueError, match=re.escape("2 images given for 1 image paths")):
        encoder.encode(conversations()[0], images[1])
    # Nothing to drop from a lone instruction; a round can be dropped from the others.
    instruction = Sample(0, 0, (Message("user", "<image>\nDescribe this image."),), ("a",), "x")
    encoder.max_length = 10
    length = encoder._process(encoder._render(chat_messages(instruction)), images[0])["input_ids"].shape[1]
    with pytest.raises(SampleFailure) as failure:
        encoder.encode(instruction, images[0])
    assert (failure.value.reason, failure.value.detail) == ("too_long", f"{length} tokens > max_length 10")
    with pytest.raises(SampleFailure) as failure:
        encoder.encode(conversations()[1], images[1])
    assert failure.value.detail.endswith(
        "> max_length 10, even with only the images and the first instruction")


def test_collate_pads_with_the_pad_token_and_int8_roles(images, tmp_path: Path) -> None:
    encoder = Encoder(build_tiny_model("llava", tmp_path / "llava"), "llava")
    assert encoder.pad_token_id != 0  # so that a zero fill would show
    items = [encoder.encode(s, i) for s, i in zip(conversations()[:2], images[:2])]
    batch = collate(items)
    pad = batch.roles.shape[1] - items[0].seq_len
    assert pad > 0 and batch.roles.dtype == torch.int8
    assert (batch.inputs["input_ids"][0, :pad] == encoder.pad_token_id).all()


def test_select_tokens_keeps_ties_in_sequence_order_at_scale() -> None:
    # 1024 equal weights (a size at which an unstable sort reorders ties; 1/1024 adds up
    # exactly): the first 513 in sequence order are kept at tau = 0.5.
    p, keep, n_kept = select_tokens(torch.ones(1, 1024), torch.ones(1, 1024, dtype=torch.bool), 0.5)
    assert n_kept.tolist() == [513] and keep[0].tolist() == [True] * 513 + [False] * 511
    # Per sample: at tau = 1 the first row's partial sums pass 1 by rounding at its fourth
    # token, the second row's never do (all its tokens are kept).
    weights = torch.tensor([[0.8098922664319728, 0.630590313395585, 0.19588814570920787,
                             0.15272623787792838, 0.0], [1.0, 1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    _, keep, n_kept = select_tokens(weights, torch.ones(2, 5, dtype=torch.bool), 1.0)
    assert n_kept.tolist() == [4, 5]
