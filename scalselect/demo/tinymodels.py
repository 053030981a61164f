"""Tiny, randomly initialised vision-language models built offline, for tests and the demo.

Each family uses its real configuration, model and processor classes with tiny sizes,
a byte-level BPE tokenizer trained here on a few dozen sentences (plus the family's
special tokens), and a chat template in the style of the real checkpoint's. The result
is saved with ``save_pretrained`` and loads with ``AutoProcessor`` and
``AutoModelForImageTextToText`` like a hub checkpoint. Nothing is downloaded.

The same ``family`` and ``seed`` always give the same weights and the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

FAMILIES = ("llava", "qwen2-vl", "qwen2.5-vl", "qwen3-vl")

# Text the tokenizer is trained on: enough for a few hundred merges of ordinary English.
_CORPUS = [
    "The image shows a cat sitting on a red sofa next to a window.",
    "Describe this image in detail.",
    "What color is the sky? The sky is blue with a few white clouds.",
    "A man is riding a bicycle down a busy street in the city.",
    "How many people are in the picture? There are three people.",
    "Two dogs are playing with a ball in the green park.",
    "What is written on the sign? The sign says stop.",
    "The kitchen has a wooden table, four chairs and a large fridge.",
    "Is there a boat on the water? Yes, a small sailing boat.",
    "Please answer the question using a single word or phrase.",
    "A plate of food with rice, vegetables and grilled chicken.",
    "The train is arriving at the station under a cloudy sky.",
    "What is the woman holding? She is holding an umbrella.",
    "A group of children are reading books in the library.",
    "Where is the clock? The clock hangs on the wall above the door.",
    "The bus is yellow and it is parked near the school.",
    "Explain what is happening in this scene.",
    "A bird is flying over the mountains at sunset.",
    "What animal is this? It is a brown horse in a field.",
    "The computer screen shows a chart with numbers and text.",
    "You are a helpful assistant.",
    "USER: ASSISTANT: user assistant system",
    "Provide a short description of the region in the picture.",
    "The tennis player hits the ball with a racket on the court.",
    "Snow covers the trees and the road in winter.",
    "Why might the person be smiling? Because the weather is nice.",
    "Count the apples on the table: one, two, three, four, five.",
    "A giraffe and an elephant stand near a tree at the zoo.",
    "The airplane is taking off from the airport runway.",
    "Read the text in the image and answer the question below.",
    "0 1 2 3 4 5 6 7 8 9 10 100 2024",
    "Is this photo taken indoors or outdoors? Outdoors.",
]

# LLaVA-1.5 style, as llava-hf's template: "USER: <image>\n... ASSISTANT: ... ", each
# message's images first, then its text followed by a space; system text has no role
# marker. The tokenizer adds the <s> BOS.
_LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Qwen-VL style ChatML. Qwen2-VL and Qwen2.5-VL insert a default system prompt when
# the conversation has none; Qwen3-VL does not.
_QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' and default_system %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_LLAVA_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
_QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Tiny sizes shared by the families: LLM hidden 64 with 4 heads of 16 (2 KV heads).
_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=8192,
)
# Multimodal RoPE sections (temporal, height, width) must sum to head_dim / 2 = 8.
_MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
# Qwen processors' default vision-token budget per image (the extractor overrides it).
_QWEN_MIN_TOKENS, _QWEN_MAX_TOKENS = 4, 64
# Qwen-VL merges 2 x 2 vision patches into one vision token.
_QWEN_MERGE = 2


def _tokenizer(special: list[str], *, bos: str | None, eos: str, pad: str, unk: str | None):
    """A byte-level BPE tokenizer trained on the corpus, with the family's special tokens."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS, trainer=trainer)
    if bos is not None:
        # Like LLaMA's tokenizer: every encoded text starts with BOS.
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))]
        )
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        padding_side="left",
        model_max_length=8192,
        extra_special_tokens={},
    )


def _build_llava(initializer_range: float, text_layers: int):
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _tokenizer(_LLAVA_SPECIAL, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    image_size, patch_size = 84, 14  # a 6 x 6 grid: 36 vision tokens per image
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
        initializer_range=initializer_range,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        initializer_range=initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(_TEXT | {"num_hidden_layers": text_layers}),
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        initializer_range=initializer_range,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_LLAVA_TEMPLATE,
    )
    return LlavaForConditionalGeneration(config), processor


def _build_qwen(family: str, initializer_range: float, text_layers: int):
    tokenizer = _tokenizer(_QWEN_SPECIAL, bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None)
    patch_size = 16 if family == "qwen3-vl" else 14
    model = _qwen_model(family, tokenizer, patch_size, initializer_range, text_layers)
    return model, _qwen_processor(family, tokenizer, patch_size)


def _qwen_model(
    family: str, tokenizer, patch_size: int, initializer_range: float, text_layers: int
):
    """A tiny random Qwen-VL model of ``family`` over ``tokenizer``'s vocabulary."""
    import transformers as tf

    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }
    text_ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=None,  # Qwen has no BOS; the default id is outside a tiny vocabulary
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=initializer_range,
        rope_parameters=dict(_MROPE),
    )
    merge = _QWEN_MERGE
    sizes = _TEXT | {"num_hidden_layers": text_layers}
    if family == "qwen2-vl":
        # Qwen2-VL derives head_dim from hidden_size / num_attention_heads.
        text = tf.Qwen2VLTextConfig(**sizes, **text_ids)
        vision = tf.Qwen2VLVisionConfig(
            depth=2, embed_dim=32, hidden_size=_TEXT["hidden_size"], mlp_ratio=2, num_heads=4,
            patch_size=patch_size, spatial_merge_size=merge, initializer_range=initializer_range,
        )
        config = tf.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        return tf.Qwen2VLForConditionalGeneration(config)
    if family == "qwen2.5-vl":
        text = tf.Qwen2_5_VLTextConfig(**sizes, **text_ids)
        vision = tf.Qwen2_5_VLVisionConfig(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=4,
            out_hidden_size=_TEXT["hidden_size"], patch_size=patch_size, spatial_merge_size=merge,
            window_size=56, fullatt_block_indexes=[1], initializer_range=initializer_range,
        )
        config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        return tf.Qwen2_5_VLForConditionalGeneration(config)
    text = tf.Qwen3VLTextConfig(**sizes, head_dim=16, **text_ids)
    vision = tf.Qwen3VLVisionConfig(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=4,
        out_hidden_size=_TEXT["hidden_size"], patch_size=patch_size, spatial_merge_size=merge,
        num_position_embeddings=256, deepstack_visual_indexes=[0],
        initializer_range=initializer_range,
    )
    config = tf.Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    return tf.Qwen3VLForConditionalGeneration(config)


def _qwen_processor(family: str, tokenizer, patch_size: int):
    """The processor of a tiny Qwen-VL model of ``family``: images of
    ``_QWEN_MIN_TOKENS`` to ``_QWEN_MAX_TOKENS`` vision tokens."""
    import transformers as tf

    merge = _QWEN_MERGE
    if family == "qwen3-vl":
        video_processor = tf.Qwen3VLVideoProcessor(patch_size=patch_size, merge_size=merge)
    else:
        video_processor = tf.Qwen2VLVideoProcessor(patch_size=patch_size, merge_size=merge)
    processor_class, default_system = {
        "qwen2-vl": (tf.Qwen2VLProcessor, True),
        "qwen2.5-vl": (tf.Qwen2_5_VLProcessor, True),
        "qwen3-vl": (tf.Qwen3VLProcessor, False),
    }[family]
    unit = (patch_size * merge) ** 2  # pixels per vision token
    image_processor = tf.Qwen2VLImageProcessor(
        patch_size=patch_size,
        merge_size=merge,
        size={"shortest_edge": _QWEN_MIN_TOKENS * unit, "longest_edge": _QWEN_MAX_TOKENS * unit},
    )
    template = _QWEN_TEMPLATE.replace(
        "default_system", "true" if default_system else "false"
    )
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=template,
    )


def build_tiny_model(
    family: str,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    initializer_range: float = 0.2,
    text_layers: int = 2,
) -> Path:
    """Build a tiny random VLM of ``family`` and save model and processor to ``out_dir``.

    Parameters
    ----------
    family : str
        One of ``"llava"``, ``"qwen2-vl"``, ``"qwen2.5-vl"``, ``"qwen3-vl"``.
    out_dir : path-like
        Directory to write (created if needed); existing files are overwritten.
    seed : int, default 0
        Seed of the weight initialisation; the same seed gives the same files.
    initializer_range : float, default 0.2
        Standard deviation of the initial weights. Larger than the families' 0.02 so
        that first-layer attention is peaked rather than almost uniform.
    text_layers : int, default 2
        Decoder layers of the language model (Qwen3-VL adds its deepstack visual
        features after the first one).

    Returns
    -------
    Path
        ``out_dir``, loadable with ``AutoProcessor.from_pretrained`` and
        ``AutoModelForImageTextToText.from_pretrained``.
    """
    import torch

    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "llava":
            model, processor = _build_llava(initializer_range, text_layers)
        else:
            model, processor = _build_qwen(family, initializer_range, text_layers)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
