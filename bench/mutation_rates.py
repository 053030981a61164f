"""Kill rate per module of the last mutation run (``make mutation``), from
``mutmut results --all true``: mutants checked, killed (a test failed, or timed out),
survived, and the survivors' names (judge each: equivalent, or a missing test). With
``--mutants``: the mutant names that ``make mutation`` passes to ``mutmut run``."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

# The modules where a wrong number is silent, whole (validation with its image checks and
# parts); the shard planning (shard ranges live in the dataset index), and the store's key
# functions (``make mutation`` mutates exactly these: MUTANTS). Modules by their path
# under scalselect.
MODULES = (
    "select.selection", "score.leverage", "extract.conversation", "extract.representation",
    "data.validation", "data.validation_part", "data.images",
)
EXTRACTION_FUNCTIONS = ("plan_chunks", "split_batches", "length_estimate")
STORE_FUNCTIONS = (
    "sample_key", "settings_key", "_image_digest", "image_digests", "model_digest", "shard_keys",
)
FUNCTIONS = frozenset(
    [("data.index", "shard_range"), ("io", "file_digest")]
    + [("extract.shard", name) for name in EXTRACTION_FUNCTIONS]
    + [("extract.store", name) for name in STORE_FUNCTIONS]
)
MUTANTS = (
    *(f"scalselect.{module}.*" for module in MODULES),
    *(f"scalselect.{module}.x_{name}__*" for module, name in sorted(FUNCTIONS)),
)
# mutmut names a mutant <module path>.x_<function>__mutmut_<n> (methods: xǁ<class>ǁ<name>).
LINE = re.compile(r"^\s*scalselect\.([\w.]+?)\.x[_ǁ](\S+?)__mutmut_\d+: (.+)$")


def module_of(module: str, function: str) -> str | None:
    """The reported group of a mutant, or None when it is not reported."""
    if module in MODULES:
        return module
    if (module, function) in FUNCTIONS:
        return "extraction (shards, keys)"
    return None


def main() -> int:
    if sys.argv[1:] == ["--mutants"]:
        print(" ".join(MUTANTS))
        return 0
    mutmut = Path(sys.executable).parent / "mutmut"
    out = subprocess.run([str(mutmut), "results", "--all", "true"], capture_output=True,
                         text=True, check=True).stdout
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in out.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        group = module_of(match[1], match[2])
        status = match[3].strip()
        if group is None or status == "not checked":
            continue
        counts[group][status] += 1
        if status == "survived":
            survivors[group].append(line.split(":")[0].strip())
    print(f"{'module':24} {'checked':>8} {'killed':>7} {'survived':>9} {'other':>6} {'kill rate':>10}")
    for group, by_status in counts.items():
        killed = by_status["killed"] + by_status["timeout"]
        survived = by_status["survived"]
        total = sum(by_status.values())
        print(f"{group:24} {total:8d} {killed:7d} {survived:9d} {total - killed - survived:6d}"
              f" {killed / max(1, killed + survived):10.1%}")
    for group, names in survivors.items():
        print(f"\nsurvivors in {group}:")
        print("\n".join(f"  {name}" for name in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
