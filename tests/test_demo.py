"""The bundled demo: deterministic, as designed (uneven groups, text-only samples, a real
photograph, the listed breakages), and the same samples in both dataset formats."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO
from PIL import Image

from scalselect.data.readers import load_dataset
from scalselect.data.validation import validate_file
from scalselect.demo.build import (
    BREAKAGES,
    DEMO_MODELS,
    GROUPS,
    build_dataset,
    build_demo,
)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root``."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo built once through its command-line entry point, as the rule runs it."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    subprocess.run(
        [sys.executable, str(REPO / "scripts/make_demo.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        cwd=tmp_path_factory.getbasetemp(),
    )
    return out


@pytest.mark.integration  # scripts/make_demo.py in a fresh interpreter
def test_build_is_byte_identical(demo: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_demo(again)
    first, second = tree_digest(demo), tree_digest(again)
    assert len(first) > 250
    assert first == second
    # Rebuilding the dataset over an existing demo gives the same tree (stale images
    # removed).
    (again / "images" / "stale.jpg").write_bytes(b"old")
    build_dataset(again)
    assert tree_digest(again) == first


def validate_reasons(demo: Path, name: str) -> dict[int, list[str]]:
    """Index -> reasons of every sample that validate rejects in ``demo/name``."""
    report = validate_file(demo / name, demo / "images", workers=1, progress=False)
    return {entry["index"]: entry["reasons"] for entry in report["invalid"]}


def expected_reasons(demo: Path) -> dict[int, list[str]]:
    expected = json.loads((demo / "EXPECTED_INVALID.json").read_text())
    return {int(index): [reason] for index, reason in expected.items()}


def test_another_seed_gives_another_demo_with_exactly_the_listed_breakages(
    demo: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    build_dataset(other, seed=1)
    assert (other / "dataset.json").read_bytes() != (demo / "dataset.json").read_bytes()
    assert validate_reasons(other, "dataset.json") == expected_reasons(other)


def test_counts_and_groups_as_designed(demo: Path) -> None:
    groups = json.loads((demo / "groups.json").read_text())
    records = json.loads((demo / "dataset.json").read_text())
    assert len(records) >= 240
    assert len(groups["samples"]) == len(records)
    counts = Counter(groups["samples"])
    for group in GROUPS:
        assert counts[group.name] == group.count == groups["groups"][group.name]["count"]
    image_counts = sorted((counts[g.name] for g in GROUPS), reverse=True)
    n_images = sum(image_counts)
    # Very uneven: the largest group holds about a third, the rarest about 1-2%.
    assert image_counts[0] / n_images > 0.3
    assert image_counts[-1] / n_images < 0.02
    assert image_counts[0] >= 10 * image_counts[-1]
    # Text-only samples (~3%) carry no images; every other sample's source is its folder.
    text_only = [r for r, g in zip(records, groups["samples"]) if g == "text-only"]
    assert 0.02 <= len(text_only) / len(records) <= 0.05
    assert all(r["images"] == [] for r in text_only)
    sources = {g.name: g.source for g in GROUPS}
    for record, group in zip(records, groups["samples"]):
        if group in sources:
            assert record["images"][0].split("/")[0] == sources[group]


def test_images_are_real_and_varied(demo: Path) -> None:
    records = json.loads((demo / "dataset.json").read_text())
    expected = json.loads((demo / "EXPECTED_INVALID.json").read_text())
    sizes, formats = set(), Counter()
    for index, record in enumerate(records):
        if str(index) in expected:
            continue
        for rel in record["images"]:
            with Image.open(demo / "images" / rel) as image:
                image.load()
                sizes.add(image.size)
                formats[image.format] += 1
                assert 96 <= min(image.size) and max(image.size) <= 320, (rel, image.size)
    assert len(sizes) > 50
    assert len({round(w / h, 1) for w, h in sizes}) >= 5
    assert set(formats) == {"JPEG", "PNG"}


def test_real_photograph_is_used(demo: Path) -> None:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photo = Image.open(handle).convert("RGB")
    groups = json.loads((demo / "groups.json").read_text())["samples"]
    records = json.loads((demo / "dataset.json").read_text())
    photos = [r["images"][0] for r, g in zip(records, groups) if g == "photo"]
    assert len(photos) >= 2
    # A real photograph has many more distinct colours than any drawn pattern.
    for rel in photos:
        with Image.open(demo / "images" / rel) as image:
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 5000
    assert len(photo.getcolors(maxcolors=1 << 20)) > 5000


def test_conversations_vary_as_designed(demo: Path) -> None:
    records = json.loads((demo / "dataset.json").read_text())
    rounds = Counter(sum(m["role"] == "user" for m in r["messages"]) for r in records)
    assert set(rounds) >= {1, 2, 3, 4}
    assert any(r["messages"][0]["role"] == "system" for r in records)
    assert sum(len(r["images"]) == 2 for r in records) >= 3
    first_user = [
        next(m for m in r["messages"] if m["role"] == "user")["content"]
        for r in records
        if r["images"]
    ]
    assert any(c.startswith("<image>") for c in first_user)
    assert any("<image>" in c and not c.startswith("<image>") for c in first_user)
    assert any("<image>" not in c for c in first_user)
    ids = [r["id"] for r in records if "id" in r]
    assert sum(isinstance(i, int) for i in ids) > 0.8 * len(ids)
    assert any(isinstance(i, str) and i.startswith("0") for i in ids)


def test_validate_reports_exactly_the_listed_breakages(demo: Path) -> None:
    expected = expected_reasons(demo)
    assert {reason for reasons in expected.values() for reason in reasons} == set(
        BREAKAGES.values()
    )
    for name in ("dataset.json", "dataset_llava.json"):
        assert validate_reasons(demo, name) == expected, name
    # Breakages never cost a rare group a sample: only the largest group lends one (the
    # first holder of the repeated id).
    groups = json.loads((demo / "groups.json").read_text())["samples"]
    assert Counter(groups[i] for i in expected) == {"broken": len(BREAKAGES), GROUPS[0].name: 1}


def test_both_formats_describe_the_same_samples(demo: Path) -> None:
    sharegpt = load_dataset(demo / "dataset.json")
    llava = load_dataset(demo / "dataset_llava.json")
    assert (sharegpt.format, llava.format) == ("sharegpt", "llava")
    assert len(sharegpt) == len(llava)
    for a, b in zip(sharegpt, llava):
        assert (a.index, a.id, a.messages, a.images, a.source) == (
            b.index,
            b.id,
            b.messages,
            b.images,
            b.source,
        )
    raw = json.loads((demo / "dataset_llava.json").read_text())
    assert all("image" not in r for r, s in zip(raw, sharegpt) if not s.images)
    assert any(isinstance(r.get("image"), list) for r in raw)


def test_tiny_models_load_and_one_conversation_exceeds_their_context(demo: Path) -> None:
    from transformers import AutoConfig, AutoProcessor

    records = json.loads((demo / "dataset.json").read_text())
    (long_index,) = json.loads((demo / "groups.json").read_text())["long_conversations"]
    for name in DEMO_MODELS:
        path = demo / "models" / name
        processor = AutoProcessor.from_pretrained(path)
        assert AutoConfig.from_pretrained(path).model_type in ("llava", "qwen3_vl")
        lengths = [
            sum(len(processor.tokenizer(m["content"])["input_ids"]) for m in r["messages"])
            for r in records
        ]
        # The message texts alone exceed 4096 tokens; every other sample fits easily.
        assert lengths[long_index] > 4096
        assert max(n for i, n in enumerate(lengths) if i != long_index) < 1024
