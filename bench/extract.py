"""Benchmark of extraction (METHOD.md stage 1): the original recipe against our pipeline.

Both run in this process, on the same randomly initialised model of a real architecture
and the same dataset, end to end: JPEG files decoded with Pillow, conversations rendered
and preprocessed by the model's processor, representations written.

- original recipe (``scalselect.extract.reference.ReferenceModel``): one sample at a time, the
  full model with eager attention returning every hidden state and attention map, images
  decoded and preprocessed in the same loop, all vectors gathered, then one ``.npz``;
- ours (``scalselect.extract.shard.extract_shard``): first decoder layer only on SDPA,
  length-grouped left-padded batches, DataLoader workers, chunked shard output.

Throughput counts from the moment the model is loaded (loading is reported apart):
``--arch llava-1.5-7b`` / ``qwen3-vl-8b`` use the real configurations (random weights,
written to ``--tmp`` first: ~15-17 GB); ``small-llava`` / ``small-qwen3-vl`` are small
configurations of the same shape for the CPU. Images are 640x480 (LLaVA: 576 vision
tokens at 336 px) or 768x768 (Qwen3-VL: 576 vision tokens), text ~200 tokens.
Agreement of the two outputs (max abs difference, same kept counts) is printed too.

Usage::

    python bench/extract.py --arch small-llava --samples 48            # CPU
    python bench/extract.py --arch llava-1.5-7b --device cuda --samples 2000 \\
        --reference-samples 200 --batch-size 32 --num-workers 12
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scalselect.demo.tinymodels import build_tiny_model  # noqa: E402
from scalselect.extract import features  # noqa: E402

# config.json overrides on top of the tiny model of the family (which provides the
# tokenizer, processor and special-token ids).
ARCHS = {
    "llava-1.5-7b": ("llava", {
        "text_config": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                        "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128,
                        "vocab_size": 32064, "rms_norm_eps": 1e-5},
        "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                          "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
                          "projection_dim": 768},
    }),
    # The small configurations keep the real depths, vocabularies, image sizes and the
    # vision/text width ratio, at 1/8 of the text width.
    "small-llava": ("llava", {
        "text_config": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 32,
                        "num_attention_heads": 8, "num_key_value_heads": 8, "head_dim": 64,
                        "vocab_size": 32064, "rms_norm_eps": 1e-5},
        "vision_config": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 24,
                          "num_attention_heads": 4, "image_size": 336, "patch_size": 14,
                          "projection_dim": 96},
    }),
    "qwen3-vl-8b": ("qwen3-vl", {
        "text_config": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                        "vocab_size": 151936,
                        "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0,
                                            "mrope_section": [24, 20, 20]}},
        "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304,
                          "num_heads": 16, "out_hidden_size": 4096, "patch_size": 16,
                          "spatial_merge_size": 2, "deepstack_visual_indexes": [8, 16, 24],
                          "num_position_embeddings": 2304},
    }),
    "small-qwen3-vl": ("qwen3-vl", {
        "text_config": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 36,
                        "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
                        "vocab_size": 151936,
                        "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0,
                                            "mrope_section": [12, 10, 10]}},
        "vision_config": {"depth": 27, "hidden_size": 144, "intermediate_size": 538,
                          "num_heads": 4, "out_hidden_size": 512, "patch_size": 16,
                          "spatial_merge_size": 2, "deepstack_visual_indexes": [8, 16, 24],
                          "num_position_embeddings": 2304},
    }),
}
SENTENCES = [
    "Describe the image in detail and explain what is happening in this scene.",
    "The image shows a man riding a bicycle down a busy street in the city.",
    "What color is the sky? The sky is blue with a few white clouds above the mountains.",
    "How many people are in the picture? There are three people near the train station.",
    "A plate of food with rice, vegetables and grilled chicken sits on a wooden table.",
]


def build_model(arch: str, out: Path, device: str) -> Path:
    """A random model of ``arch`` saved under ``out`` (processor from the tiny family)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    family, overrides = ARCHS[arch]
    build_tiny_model(family, out)
    config = json.loads((out / "config.json").read_text())
    for section, values in overrides.items():
        config[section].update(values)
    config["text_config"]["initializer_range"] = config["vision_config"]["initializer_range"] = 0.02
    (out / "config.json").write_text(json.dumps(config))
    if family == "llava":
        # 336 px images: 24 x 24 = 576 vision tokens, as LLaVA-1.5.
        processor = json.loads((out / "processor_config.json").read_text())
        processor["image_processor"]["size"] = {"shortest_edge": 336}
        processor["image_processor"]["crop_size"] = {"height": 336, "width": 336}
        (out / "processor_config.json").write_text(json.dumps(processor))
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(out), dtype=dtype)
    model.save_pretrained(out)
    del model
    return out


def write_dataset(root: Path, n: int, size: tuple[int, int], seed: int = 0,
                  distinct_images: int | None = None) -> Path:
    """``n`` one-image samples of ~200 text tokens, JPEG photos-like images of ``size``.

    With ``distinct_images``, only that many image files are written and the samples use
    them in turn (decoding costs the same; writing thousands of large JPEGs does not).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    width, height = size
    records = []
    yy, xx = np.mgrid[0:height, 0:width]
    distinct = n if distinct_images is None else max(1, distinct_images)
    for i in range(n):
        if i < distinct:
            base = np.stack([np.sin(xx / rng.uniform(20, 80) + c) * np.cos(yy / rng.uniform(20, 80))
                             for c in range(3)], -1)
            pixels = ((base + 1) * 110 + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "img" / f"{i}.jpg", quality=90)
        turns = []
        for r in range(2):
            question = str(rng.choice(SENTENCES))
            answer = " ".join(rng.choice(SENTENCES, 2))
            turns += [{"role": "user", "content": ("<image>\n" if r == 0 else "") + question},
                      {"role": "assistant", "content": answer}]
        records.append({"id": i, "messages": turns, "images": [f"img/{i % distinct}.jpg"]})
    path = root / "dataset.json"
    path.write_text(json.dumps(records))
    return path


def run_reference(model_dir: Path, model_type: str, dataset: Path, n: int, device: str,
                  out: Path) -> dict:
    """The original recipe over the first ``n`` samples; vectors saved to ``out``."""
    from PIL import Image

    from scalselect.data.readers import load_dataset
    from scalselect.data.records import resolve_image
    from scalselect.extract.reference import ReferenceModel

    began = time.perf_counter()
    model = ReferenceModel(model_dir, model_type, device=device)
    loaded = time.perf_counter()
    data = load_dataset(dataset)
    vectors, ids, kept = [], [], []
    for index in range(n):
        sample = data.sample(index)
        images = []
        for path in sample.images:
            with Image.open(resolve_image(dataset.parent, path)) as image:
                images.append(image.convert("RGB"))
        result = model.represent(sample, images)
        vectors.append(result.vector)
        ids.append(sample.id)
        kept.append(result.n_kept)
    np.savez(out, representations=np.stack(vectors), sample_ids=np.asarray(ids))
    done = time.perf_counter()
    return {"load_s": loaded - began, "run_s": done - loaded, "samples": n,
            "samples_per_s": n / (done - loaded), "kept": kept}


class _Stamps(logging.Handler):
    """Times of the extraction log messages (the loop starts after the model is loaded)."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.stamps.append((time.perf_counter(), record.getMessage()))


def run_ours(model_dir: Path, model_type: str, dataset: Path, n: int, args: argparse.Namespace,
             out: Path) -> dict:
    """Our pipeline over the whole dataset (one shard, fresh cache)."""
    from scalselect.extract.shard import Job, extract_shard
    from scalselect.settings import ExtractSettings

    stamps = _Stamps()
    logger = logging.getLogger("scalselect.extract.shard")
    logger.addHandler(stamps)
    logger.setLevel(logging.INFO)
    job = Job(dataset=str(dataset), image_root=str(dataset.parent), model=str(model_dir),
              out=str(out), settings=ExtractSettings(model_type),
              batch_size=args.batch_size, num_workers=args.num_workers,
              chunk_size=args.chunk_size, cache_dirs=(str(out.parent / "cache"),))
    began = time.perf_counter()
    extract_shard(job)
    done = time.perf_counter()
    logger.removeHandler(stamps)
    loop_start = next(t for t, message in stamps.stamps if message.startswith("rank 0:"))
    return {"load_s": loop_start - began, "run_s": done - loop_start, "samples": n,
            "samples_per_s": n / (done - loop_start)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="small-llava")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--samples", type=int, default=48, help="Samples through our pipeline.")
    parser.add_argument("--reference-samples", type=int, default=None,
                        help="Samples through the original recipe (default: --samples).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 1)))
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--tmp", default=tempfile.gettempdir())
    args = parser.parse_args()
    family = ARCHS[args.arch][0]
    model_type = "llava" if family == "llava" else "qwen"
    n_ref = min(args.reference_samples or args.samples, args.samples)
    work = Path(tempfile.mkdtemp(prefix="bench-extract-", dir=args.tmp))
    try:
        t = time.perf_counter()
        model_dir = build_model(args.arch, work / "model", args.device)
        print(f"built {args.arch} in {time.perf_counter() - t:.1f} s", flush=True)
        size = (640, 480) if family == "llava" else (768, 768)
        dataset = write_dataset(work / "data", args.samples, size)
        ours = run_ours(model_dir, model_type, dataset, args.samples, args, work / "ours" / "shard")
        reference = run_reference(model_dir, model_type, dataset, n_ref, args.device,
                                  work / "reference.npz")
        rows, matrix = features.open_shard(work / "ours" / "shard")
        with np.load(work / "reference.npz") as npz:
            diff = float(np.abs(npz["representations"] - matrix[:n_ref]).max())
            scale = float(np.abs(npz["representations"]).max())
        same_kept = rows["n_kept"].to_numpy()[:n_ref].tolist() == reference["kept"]
        device = "cpu"
        if args.device == "cuda":
            import torch

            device = torch.cuda.get_device_name(0)
        print(json.dumps({
            "arch": args.arch, "device": device, "batch_size": args.batch_size,
            "num_workers": args.num_workers, "statuses": rows["status"].value_counts().to_dict(),
            "mean_seq_len": float(rows["seq_len"].mean()), "mean_vision": float(rows["n_vision"].mean()),
            "original": {k: v for k, v in reference.items() if k != "kept"}, "ours": ours,
            "ratio": ours["samples_per_s"] / reference["samples_per_s"],
            "max_abs_diff": diff, "max_abs_value": scale, "same_kept_counts": same_kept,
        }, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
