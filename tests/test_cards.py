"""Selection cards: the digests' definitions on real files in every format, and the cards
the demo writes beside every selection, checked against values computed here from the
selection files, the dataset, the images, the model files and the scores; two runs write
the same bytes, a result setting changes them."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tomllib
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
import yaml
from card_helpers import (
    as_llava_parquet,
    digest_of_record,
    fingerprint,
    selection_fingerprint,
    sha256,
    shuffled,
    write_array,
    write_lines,
)
from conftest import copy_workflow, demo_parquet, snakemake
from PIL import Image

from scalselect.cli import main
from scalselect.select.digests import dataset_facts

SELECTION = re.compile(r"(top|random|kcenter|kmeans)-(\d+)(?:-seed(\d+))?\.json")
METHOD = {"top": "scalselect", "random": "random", "kcenter": "kcenter", "kmeans": "kmeans"}
LLAVA_FROM = {"user": "human", "assistant": "gpt", "system": "system"}


def test_a_dataset_fingerprint_ignores_order_file_and_record_format(tmp_path: Path) -> None:
    images = tmp_path / "images"
    records = []
    for i in range(20):
        path = f"src{i % 3}/{i}.png"
        (images / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 6), (i, 0, 0)).save(images / path)
        records.append({"id": i, "images": [path], "messages": [
            {"role": "user", "content": f"<image>\nQ {i} ∂"},
            {"role": "assistant", "content": f"A {i}"}]})
    array, lines, parquet = tmp_path / "a.json", tmp_path / "b.jsonl", tmp_path / "c.parquet"
    write_array(array, records)
    write_lines(lines, shuffled(records))
    as_llava_parquet(parquet, shuffled(records, seed=9), images)
    expected = fingerprint([digest_of_record(r) for r in records])
    facts = [dataset_facts(path) for path in (array, lines, parquet)]
    assert [f["fingerprint"] for f in facts] == [expected] * 3
    assert [f["records"] for f in facts] == [20] * 3
    assert [f["sha256"] for f in facts] == [sha256(p) for p in (array, lines, parquet)]
    assert [(f["file_format"], f["record_format"]) for f in facts] == [
        ("json", "sharegpt"), ("jsonl", "sharegpt"), ("parquet", "llava")]
    # One changed answer, or one record fewer, is another dataset.
    records[4]["messages"][1]["content"] = "A 4!"
    write_lines(lines, records)
    assert dataset_facts(lines)["fingerprint"] != expected
    write_lines(lines, records[1:])
    assert dataset_facts(lines)["records"] == 19


def test_cards_name_the_projects_version() -> None:
    import scalselect

    assert scalselect.__version__ == project_version()


# --------------------------------------------------------------------------- the demo


def project_version() -> str:
    return tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "version"]


def model_digest(folder: Path) -> str:
    """Digest of a model folder: each file's relative path and SHA-256, in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if not any(part.startswith(".") for part in relative.split("/")):
            digest.update(f"{relative}\0{sha256(path)}\n".encode())
    return digest.hexdigest()


def demo_cards(workdir: Path) -> dict[Path, Path]:
    """Every selection of the demo and its card."""
    found = {}
    for path in sorted(workdir.glob("results/*/select/*.json")):
        if SELECTION.fullmatch(path.name):
            found[path] = Path(f"{path}.card.json")
    return found


def record_images(record: dict) -> list[str]:
    """The image paths of a ShareGPT or LLaVA record."""
    image = record.get("image", record.get("images"))
    return [] if not image else [image] if isinstance(image, str) else image


def check_selected(workdir: Path, selection: Path, card: dict) -> None:
    """The card's selection: its records, fingerprint, sources, file, method, budget."""
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    results = workdir / "results" / selection.parts[-3]
    images = workdir / config["runs"][selection.parts[-3]]["image_root"]
    kind, n, seed = SELECTION.fullmatch(selection.name).groups()
    chosen = json.loads(selection.read_text())
    filtered = json.loads((results / "filter/dataset.json").read_text())
    scores = pd.read_parquet(results / "score/scores.parquet")
    importance = dict(zip(scores["index"], scores["importance"], strict=True))
    position = {json.dumps(r): i for i, r in enumerate(filtered)}
    # The selected records: digests, ids, image bytes, scores, sources.
    expected = sorted(({
        "digest": digest_of_record(r), "id": r["id"],
        "images": [sha256(images / p) for p in record_images(r)],
        "score": importance[position[json.dumps(r)]],
        "source": record_images(r)[0].split("/")[0] if record_images(r) else "text-only",
    } for r in chosen), key=lambda e: (e["digest"], json.dumps(e, sort_keys=True)))
    got = card["selection"]
    assert got["records"] == expected
    assert got["fingerprint"] == selection_fingerprint([e["digest"] for e in expected])
    assert got["sources"] == dict(sorted(Counter(e["source"] for e in expected).items()))
    assert got["file"] == {"name": selection.name, "file_format": "json",
                           "sha256": sha256(selection)}
    # The method, the budget as asked and as resolved, the seed.
    assert got["method"] == METHOD[kind] and got["n"] == int(n) == len(chosen)
    assert got["seed"] == (int(seed) if seed is not None else None)
    asked = [str(b) for b in config["select"]["budgets"]
             if str(b) == n or (str(b).endswith("%") and math.floor(
                 Fraction(str(b)[:-1]) * len(scores) / 100 + Fraction(1, 2)) == int(n))]
    assert got["budget"] == asked[0]


def check_provenance(workdir: Path, selection: Path, card: dict) -> None:
    """The card's dataset, pool, model, settings, scoring and software."""
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    entry = config["runs"][selection.parts[-3]]
    results = workdir / "results" / selection.parts[-3]
    filtered = json.loads((results / "filter/dataset.json").read_text())
    # The dataset and the pool it was drawn from.
    dataset = workdir / entry["dataset"]
    assert card["dataset"]["name"] == dataset.name
    assert card["dataset"]["sha256"] == sha256(dataset)
    assert card["dataset"]["records"] == len(json.loads(dataset.read_text()))
    assert card["pool"]["fingerprint"] == fingerprint([digest_of_record(r) for r in filtered])
    assert card["pool"]["records"] == len(filtered)
    # The model, the settings, scoring.
    model = workdir / entry["model"]["path"]
    layer = entry.get("extract", {}).get("layer", config["extract"]["layer"])
    assert card["model"] | {"store_key": None} == {
        "name": entry["model"]["path"], "sha256": model_digest(model),
        "family": entry["model"]["type"], "layer": layer, "store_key": None}
    spectrum = json.loads((results / "score/spectrum.json").read_text())
    assert card["scoring"] == {"k": spectrum["k"], "rank": spectrum["rank"],
                               "scored": len(pd.read_parquet(results / "score/scores.parquet"))}
    settings = card["settings"]
    assert settings["score"] == config["score"]
    assert settings["extract"]["dtype"] == "float32"  # "auto", resolved on the CPU
    assert settings["extract"]["attention_threshold"] == config["extract"]["attention_threshold"]
    assert settings["validate"]["decode_images"] is True and "shards" not in settings["validate"]
    assert settings["filter"] == config["filter"]
    assert settings["select"] == ({"kmeans_clusters": config["select"]["kmeans_clusters"],
                                   "kmeans_seed": config["select"]["kmeans_seed"]}
                                  if selection.name.startswith("kmeans") else {})
    assert card["software"]["scalselect"] == project_version()
    assert card["software"]["commit"] is None  # the test's copy is no git checkout


@pytest.mark.slow
def test_the_demo_writes_a_card_beside_every_selection(demo_workflow: Path) -> None:
    cards = demo_cards(demo_workflow)
    kinds = Counter(SELECTION.fullmatch(s.name)[1] for s in cards)
    # 4 runs x 2 budgets of top, random (1 seed), k-center and k-means.
    assert kinds == {"top": 8, "random": 8, "kcenter": 8, "kmeans": 8}
    for selection, card in cards.items():
        text = card.read_text()
        assert str(demo_workflow) not in text and "/tmp" not in text
        check_selected(demo_workflow, selection, json.loads(text))
        check_provenance(demo_workflow, selection, json.loads(text))


@pytest.mark.slow
def test_the_demo_writes_one_llava_export(demo_workflow: Path) -> None:
    exports = sorted(p.relative_to(demo_workflow).as_posix()
                     for p in demo_workflow.glob("results/*/export/*"))
    top = sorted(p for p in demo_workflow.glob("results/demo-llava/select/top-*.json")
                 if SELECTION.fullmatch(p.name))
    assert exports == [f"results/demo-llava/export/{p.stem}-llava" for p in top]
    for selection in top:
        written = json.loads((demo_workflow / "results/demo-llava/export"
                              / f"{selection.stem}-llava/{selection.stem}.json").read_text())
        assert written == [{
            "id": r["id"], **({"image": r["images"][0]} if r["images"] else {}),
            "conversations": [{"from": LLAVA_FROM[m["role"]], "value": m["content"]}
                              for m in r["messages"]],
        } for r in json.loads(selection.read_text())]


@pytest.mark.slow
def test_a_demo_card_rebuilds_its_selection_from_a_parquet_copy(
        demo_workflow: Path, tmp_path: Path) -> None:
    """The LLaVA-format run's card, applied to the same samples as parquet rows with
    embedded images (ids as strings), in another order."""
    demo = demo_workflow / "resources/demo"
    rows = pd.read_parquet(demo_parquet(demo))
    copy = tmp_path / "copy.parquet"
    rows.sample(frac=1.0, random_state=3).to_parquet(copy, index=False)
    selection = demo_workflow / "results/demo-llava-format/select/top-32.json"
    out = tmp_path / "top-32.parquet"
    assert main(["apply", f"{selection}.card.json", "--dataset", str(copy), "--out", str(out),
                 "--image-root", str(demo / "images")]) == 0
    wanted = [str(r["id"]) for r in json.loads(selection.read_text())]
    got = pd.read_parquet(out)
    assert sorted(got["id"]) == sorted(wanted)
    order = pd.read_parquet(copy)["id"].tolist()
    assert got["id"].tolist() == [i for i in order if i in set(wanted)]


@pytest.mark.slow
def test_cards_are_the_same_bytes_in_a_second_run_and_follow_result_settings(
        demo_workflow: Path, tmp_path: Path) -> None:
    first = demo_cards(demo_workflow)
    second = copy_workflow(tmp_path / "second")
    # The same inputs (the demo's files) and the feature store (results only: the
    # representations it holds are those any run computes); everything else runs again.
    shutil.copytree(demo_workflow / "resources", second / "resources")
    shutil.copytree(demo_workflow / "results/.cache", second / "results/.cache")
    targets = [str(card.relative_to(demo_workflow)) for card in first.values()]
    snakemake(second, *targets, "--cores", "2")
    for card in first.values():
        again = second / card.relative_to(demo_workflow)
        assert again.read_bytes() == card.read_bytes(), card.name
    # One result setting of one run changes its cards, there and only there.
    config_path = second / "config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["runs"]["demo-llava"]["score"] = {"sv_threshold": 0.5}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    target = "results/demo-llava/select/top-32.json.card.json"
    other = "results/demo-qwen/select/top-32.json.card.json"
    snakemake(second, target, other, "--cores", "2")
    before = json.loads((demo_workflow / target).read_text())
    after = json.loads((second / target).read_text())
    assert after != before
    assert after["settings"]["score"]["sv_threshold"] == 0.5
    assert before["settings"]["score"]["sv_threshold"] == 0.9
    assert after["dataset"] == before["dataset"] and after["model"] == before["model"]
    assert (second / other).read_bytes() == (demo_workflow / other).read_bytes()
