"""GPU readiness check: the workflow's CUDA path measured by one command in minutes.

Three sections, printed as tables and written as one Markdown block ready to paste at
the end of ``bench/RESULTS.md``:

1. **Fidelity** on the device: the tiny models of the four families
   (``scalselect.demo.tinymodels``), eight samples in one left-padded batch. The fast path in
   float32 on the device against the original recipe in float32 on the CPU (pass: max
   abs difference <= 1e-5 and the same kept vision tokens for every sample not within
   float noise of the threshold; the workflow's settings, i.e. PyTorch's defaults), the
   same with TF32 off (diagnosis: PyTorch runs cuDNN convolutions in TF32 by default),
   and the fast path in bfloat16 against float32 on the device (min cosine, share of
   samples with the same kept set).
2. **Throughput**, end to end as the workflow runs it (``extract_shard``: JPEG decoding
   and processing in DataLoader workers, pinned batches, length-grouped batches,
   chunked shard output) on the randomly initialised real LLaVA-1.5-7B and Qwen3-VL-8B
   configurations of ``bench/extract.py`` (built on the GPU in bfloat16), for a short
   batch-size sweep, with the original recipe measured in the same run for the ratio.
3. **Peak GPU memory** of each sweep point, and the batch size to use on an 80 GB card:
   among the points whose peak reserved memory is at most half of 80 GB (headroom for
   sequences longer than these ~800-token samples; the out-of-memory split handles the
   rest), the smallest batch within 5% of the best throughput.

Usage::

    python bench/gpu_check.py                        # on a GPU: ~5 minutes, at most 8
    python bench/gpu_check.py --device cpu --quick   # CPU smoke test (CI): < 1 minute

``--quick`` replaces the real configurations by the tiny models and shrinks every
count: its figures test the script, they are not GPU figures. The block goes to
``--out`` (default ``$OUT/gpu_check.md`` when ``$OUT`` is set, else
``results/gpu_check.md``). The exit status is 1 when fidelity fails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from extract import ARCHS, build_model, run_ours, run_reference, write_dataset  # noqa: E402

from scalselect.demo.tinymodels import FAMILIES, build_tiny_model  # noqa: E402

TOLERANCE = 1e-5  # float32 fast path against the original recipe (README, tests)
# A sample whose sorted cumulative weights come this close to the threshold could flip
# its kept set by float noise alone; its kept set is not compared.
MARGIN = 1e-5
THRESHOLD = 0.9
CARD_BYTES = 80e9  # the card the default batch size is chosen for
MEMORY_SHARE = 0.5  # of the card, at most, at the benchmark's sequence lengths
NEAR_BEST = 0.95  # throughput within this share of the best counts as the best
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to measure for one model in the throughput section."""

    name: str
    family: str  # tiny family, for the processor (and the model itself with --quick)
    image_size: tuple[int, int]
    samples: int  # through our pipeline, per batch size
    reference_samples: int  # through the original recipe
    batch_sizes: tuple[int, ...]
    target: float | None = None  # samples/s the issue asks for on one H100, end to end


FULL = (
    Plan("llava-1.5-7b", "llava", (640, 480), 2048, 64, (16, 32, 64), target=300),
    Plan("qwen3-vl-8b", "qwen3-vl", (768, 768), 512, 32, (8, 16, 32), target=60),
)
QUICK = (
    Plan("tiny-llava", "llava", (160, 120), 12, 3, (2, 4)),
    Plan("tiny-qwen3-vl", "qwen3-vl", (160, 120), 12, 3, (2, 4)),
)
FIDELITY_SAMPLES = 8


def model_type(family: str) -> str:
    """The workflow's ``model.type`` of a tiny family."""
    return "llava" if family == "llava" else "qwen"


def selection_margin(p: np.ndarray, threshold: float) -> float:
    """How far a kept set is from flipping: the smallest distance of a partial sum of the
    sorted weights to the threshold, or of the two weights either side of the cut."""
    ranked = np.sort(p)[::-1]
    cumulative = np.cumsum(ranked)
    distance = float(np.abs(cumulative - threshold).min())
    over = cumulative > threshold
    kept = int(np.argmax(over)) + 1 if over.any() else len(p)
    if kept < len(p):
        distance = min(distance, float(ranked[kept - 1] - ranked[kept]))
    return distance


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def decoded_samples(dataset: Path) -> list[tuple]:
    """Every sample of ``dataset`` with its images decoded with Pillow."""
    from PIL import Image

    from scalselect.data.readers import load_dataset
    from scalselect.data.records import resolve_image

    data = load_dataset(dataset)
    decoded = []
    for index in range(len(data)):
        sample = data.sample(index)
        images = []
        for path in sample.images:
            with Image.open(resolve_image(dataset.parent, path)) as image:
                images.append(image.convert("RGB"))
        decoded.append((sample, images))
    return decoded


@contextlib.contextmanager
def ieee_float32():
    """Full-precision float32 convolutions and matmuls on CUDA while inside (PyTorch runs
    cuDNN convolutions, such as the vision towers' patch embeddings, in TF32 by default);
    no effect on the CPU."""
    import torch

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


def check_fidelity(family: str, device: str, work: Path) -> dict:
    """Section 1 for one tiny family (see the module docstring)."""
    from scalselect.extract.reference import ReferenceModel
    from scalselect.extract.representation import Encoder, TruncatedVLM, collate

    path = build_tiny_model(family, work / family)
    dataset = write_dataset(work / f"{family}-data", FIDELITY_SAMPLES, (200, 150), seed=1)
    kind = model_type(family)
    budget = {"min_image_tokens": 8, "max_image_tokens": 48}
    decoded = decoded_samples(dataset)
    encoder = Encoder(path, kind, **budget)
    items = [encoder.encode(sample, images) for sample, images in decoded]
    # The original recipe from the raw samples, with its own encoding (scalselect.extract.reference).
    reference = ReferenceModel(path, kind, dtype="float32", device="cpu", **budget)
    expected = [reference.represent(sample, images) for sample, images in decoded]
    batch = collate(items)
    full = TruncatedVLM(path, kind, dtype="float32", device=device).represent(batch)
    # If TF32 is what breaks float32 fidelity on a GPU, this says so without a second run.
    with ieee_float32():
        ieee = TruncatedVLM(path, kind, dtype="float32", device=device).represent(batch)
    half = TruncatedVLM(path, kind, dtype="bfloat16", device=device).represent(batch)
    clear = [selection_margin(r.weights.astype(np.float64), THRESHOLD) > MARGIN for r in expected]
    ok = all(r.status == "ok" for r in [*expected, *full, *ieee, *half])

    def max_diff(results: list) -> float:
        return max(float(np.abs(f.vector - r.vector).max()) for f, r in zip(results, expected)) if ok else np.inf

    diff = max_diff(full)
    same_kept = ok and all(np.array_equal(f.kept, r.kept) for f, r, c in zip(full, expected, clear) if c)
    return {
        "family": family,
        "samples": len(items),
        "max_abs_diff": diff,
        "ieee_max_abs_diff": max_diff(ieee),
        "same_kept": same_kept,
        "near_threshold": clear.count(False),
        "passed": ok and diff <= TOLERANCE and same_kept,
        "bf16_min_cosine": min(cosine(h.vector, f.vector) for h, f in zip(half, full)) if ok else np.nan,
        "bf16_same_kept": float(np.mean([np.array_equal(h.kept, f.kept) for h, f in zip(half, full)])),
    }


class Memory:
    """Peak GPU memory of one measurement (nothing on the CPU)."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"

    def reset(self) -> None:
        """Free what earlier measurements left and start counting afresh."""
        gc.collect()  # models hold reference cycles (hooks); free them now
        if self.cuda:
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> tuple[float, float] | None:
        """(allocated, reserved) peak bytes since :meth:`reset`."""
        if not self.cuda:
            return None
        import torch

        return float(torch.cuda.max_memory_allocated()), float(torch.cuda.max_memory_reserved())


def measure_throughput(plan: Plan, args: argparse.Namespace, work: Path, deadline: float,
                       memory: Memory) -> dict:
    """Sections 2 and 3 for one model: our pipeline per batch size, then the original recipe."""
    from scalselect.extract import features

    began = time.perf_counter()
    if args.quick:
        model_dir = build_tiny_model(plan.family, work / "model")
    else:
        model_dir = build_model(plan.name, work / "model", args.device)
    built = time.perf_counter() - began
    dataset = write_dataset(work / "data", plan.samples, plan.image_size,
                            distinct_images=min(plan.samples, 64))
    kind = model_type(plan.family)
    ours, skipped = [], []
    # Each sweep point needs a fresh cache (or it would be served from the previous one),
    # but the model's file digests (~15 GB to hash) are memoised once for all of them.
    digests = work / "digests"
    digests.mkdir()
    for batch_size in plan.batch_sizes:
        if time.perf_counter() > deadline:
            skipped.append(batch_size)
            continue
        memory.reset()
        settings = argparse.Namespace(batch_size=batch_size, num_workers=args.num_workers,
                                      chunk_size=512)
        out = work / f"ours-{batch_size}" / "shard"
        (out.parent / "cache").mkdir(parents=True)
        (out.parent / "cache" / "digests").symlink_to(digests, target_is_directory=True)
        result = run_ours(model_dir, kind, dataset, plan.samples, settings, out)
        ours.append({"batch_size": batch_size, **result, "peak": memory.peak()})
        progress(f"{plan.name}: batch {batch_size}: {result['samples_per_s']:.1f} samples/s")
        last = out
    memory.reset()
    n_ref = min(plan.reference_samples, plan.samples)
    reference = run_reference(model_dir, kind, dataset, n_ref, args.device, work / "reference.npz")
    reference["peak"] = memory.peak()
    progress(f"{plan.name}: original recipe: {reference['samples_per_s']:.1f} samples/s")
    agreement = {}
    if ours:
        rows, matrix = features.open_shard(last)
        with np.load(work / "reference.npz") as npz:
            vectors = npz["representations"]
        agreement = {
            "max_abs_diff": float(np.abs(vectors - matrix[:n_ref]).max()),
            "min_cosine": min(cosine(a, b) for a, b in zip(vectors, matrix[:n_ref])),
            "same_kept_counts": float(np.mean(rows["n_kept"].to_numpy()[:n_ref] == reference["kept"])),
            "statuses": rows["status"].value_counts().to_dict(),
            "mean_seq_len": float(rows["seq_len"].mean()),
        }
    shutil.rmtree(work, ignore_errors=True)  # ~15-17 GB of weights for a real configuration
    return {"plan": plan, "build_s": built, "ours": ours, "skipped": skipped,
            "reference": reference, "agreement": agreement,
            "recommended": recommend(ours)}


def recommend(ours: list[dict]) -> int | None:
    """The batch size for an 80 GB card (module docstring, section 3); None without GPU
    memory figures."""
    fits = [r for r in ours if r["peak"] is not None and r["peak"][1] <= MEMORY_SHARE * CARD_BYTES]
    if not fits:
        return None
    best = max(r["samples_per_s"] for r in fits)
    return min(r["batch_size"] for r in fits if r["samples_per_s"] >= NEAR_BEST * best)


def gib(peak: tuple[float, float] | None) -> str:
    return "–" if peak is None else f"{peak[0] / GIB:.1f} / {peak[1] / GIB:.1f}"


def machine(device: str) -> str:
    """The device and software in words."""
    import torch
    import transformers

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        what = (f"{props.name} ({props.total_memory / GIB:.0f} GiB), CUDA {torch.version.cuda}, "
                f"float32 precision of cuDNN convolutions {torch.backends.cudnn.conv.fp32_precision}"
                f" and matmuls {torch.backends.cuda.matmul.fp32_precision}")
    else:
        what = f"CPU only ({platform.processor() or platform.machine()})"
    return (f"{what}, {os.cpu_count()} CPU cores; torch {torch.__version__}, "
            f"transformers {transformers.__version__}")


def report(fidelity: list[dict], throughput: list[dict], skipped_plans: list[str],
           args: argparse.Namespace, command: str, elapsed: float) -> str:
    """The Markdown block for ``bench/RESULTS.md``."""
    device = args.device
    lines = [
        f"## Issue 13: GPU readiness check (`bench/gpu_check.py`), {device.upper()}",
        f"`{command}` — {datetime.date.today().isoformat()}, {machine(device)}; "
        f"whole check {elapsed:.0f} s.",
        "",
    ]
    if args.quick:
        lines += ["**CPU smoke test: tiny models and a few samples, so these are not GPU "
                  "figures;** they show that every section of the script runs.", ""]
    lines += [
        f"**Fidelity** (tiny models, {FIDELITY_SAMPLES} samples in one left-padded batch; "
        f"float32 on {device} against the original recipe in float32 on the CPU; "
        f"pass: max abs diff ≤ {TOLERANCE:g} and the same kept tokens):",
        "",
        "| family | max abs diff | same kept tokens | near τ (not compared) | pass "
        "| max abs diff, TF32 off | bf16 vs fp32: min cosine | bf16: same kept set |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in fidelity:
        lines.append(
            f"| {row['family']} | {row['max_abs_diff']:.2e} | {'yes' if row['same_kept'] else 'NO'} "
            f"| {row['near_threshold']} | {'yes' if row['passed'] else 'NO'} "
            f"| {row['ieee_max_abs_diff']:.2e} "
            f"| {row['bf16_min_cosine']:.5f} | {row['bf16_same_kept']:.0%} |")
    lines += [
        "",
        "**Throughput**, end to end (JPEG decoding and processing in DataLoader workers: "
        f"{args.num_workers}; model load not counted), peak GPU memory allocated / reserved:",
        "",
        "| model | recipe | batch | samples | samples/s | × original | peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in throughput:
        name, ref = result["plan"].name, result["reference"]
        lines.append(f"| {name} | original recipe | 1 | {ref['samples']} "
                     f"| {ref['samples_per_s']:.2f} | 1 | {gib(ref['peak'])} |")
        for row in result["ours"]:
            lines.append(
                f"| {name} | ours | {row['batch_size']} | {row['samples']} "
                f"| {row['samples_per_s']:.2f} | {row['samples_per_s'] / ref['samples_per_s']:.1f} "
                f"| {gib(row['peak'])} |")
    lines.append("")
    for name in skipped_plans:
        lines.append(f"- {name}: not measured (time budget spent before it started).")
    for result in throughput:
        plan, agreement = result["plan"], result["agreement"]
        note = f"- {plan.name}: model built and saved in {result['build_s']:.0f} s"
        if agreement:
            note += (f"; mean sequence {agreement['mean_seq_len']:.0f} tokens, statuses "
                     f"{agreement['statuses']}; ours against the original recipe on its "
                     f"{result['reference']['samples']} samples: max abs diff "
                     f"{agreement['max_abs_diff']:.2e}, min cosine {agreement['min_cosine']:.5f}, "
                     f"same kept count {agreement['same_kept_counts']:.0%}")
        if plan.target and result["ours"]:
            best = max(row["samples_per_s"] for row in result["ours"])
            note += (f"; best {best:.0f} samples/s against the H100 target of {plan.target:.0f}: "
                     + ("met" if best >= plan.target else "NOT met"))
        if result["skipped"]:
            note += f"; batch sizes {result['skipped']} skipped (time budget)"
        recommended = result["recommended"]
        note += ("; batch size for an 80 GB card: " +
                 (f"**{recommended}**" if recommended else "n/a (no GPU memory figures)"))
        lines.append(note + ".")
    sizes = [r["recommended"] for r in throughput if r["recommended"]]
    if sizes:
        lines.append(f"- Default `extract.batch_size` for an 80 GB card: **{min(sizes)}** "
                     f"(the smaller of the models'; the out-of-memory split covers longer samples).")
    return "\n".join(lines) + "\n"


_START = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _START:6.1f} s] {message}", flush=True)


def main() -> int:
    import torch
    import transformers

    from scalselect.io import atomic_write

    transformers.utils.logging.disable_progress_bar()

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true",
                        help="Tiny models and a few samples: a smoke test of the script.")
    default_out = Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "results"
    parser.add_argument("--out", type=Path, default=default_out / "gpu_check.md",
                        help="Markdown block to write (default: %(default)s).")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="DataLoader workers (default: 1 with --quick, else cores - 1, at most 12).")
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="No new throughput measurement starts after this many seconds.")
    parser.add_argument("--tmp", default=tempfile.gettempdir(),
                        help="Scratch space (real configurations need ~17 GB).")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible (use --device cpu --quick)")
    if args.num_workers is None:
        args.num_workers = 1 if args.quick else max(1, min(12, (os.cpu_count() or 2) - 1))
    command = "python bench/gpu_check.py " + " ".join(sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=args.tmp))
    deadline = _START + args.budget_s
    memory = Memory(args.device)
    try:
        fidelity = []
        for family in FAMILIES:
            fidelity.append(check_fidelity(family, args.device, work / "fidelity"))
            progress(f"fidelity {family}: max abs diff {fidelity[-1]['max_abs_diff']:.2e}, "
                     f"{'pass' if fidelity[-1]['passed'] else 'FAIL'}")
        throughput, skipped_plans = [], []
        for plan in QUICK if args.quick else FULL:
            if not args.quick and plan.name not in ARCHS:
                raise KeyError(f"{plan.name} is not an architecture of bench/extract.py")
            if time.perf_counter() > deadline:
                skipped_plans.append(plan.name)
                continue
            throughput.append(measure_throughput(plan, args, work / plan.name, deadline, memory))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    block = report(fidelity, throughput, skipped_plans, args, command, time.perf_counter() - _START)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as handle:
        handle.write(block)
    passed = all(row["passed"] for row in fidelity)
    print("\n" + block + f"\nfidelity: {'PASS' if passed else 'FAIL'}; block written to {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
