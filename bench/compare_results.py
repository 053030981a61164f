"""Compare the files two workflow runs wrote under ``results/``, byte for byte.

    python bench/compare_results.py OLD_CHECKOUT NEW_CHECKOUT

Each checkout is a folder where ``make demo`` (or any ``snakemake`` run) has finished.
Logs, benchmark files and the feature store are left out (they record times, hosts and
the store's history). Prints the counts of identical and differing files, the figures
among the differing ones, and every other differing or missing file.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

LEFT_OUT = ("/logs/", "/benchmarks/")
FIGURES = (".png", ".pdf", ".svg")


def digests(checkout: Path) -> dict[str, str]:
    """SHA-256 of every compared file under ``checkout/results``, by relative path."""
    found = {}
    for path in sorted((checkout / "results").rglob("*")):
        relative = path.relative_to(checkout).as_posix()
        if not path.is_file() or relative.startswith("results/.cache/"):
            continue
        if any(part in relative for part in LEFT_OUT):
            continue
        found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    old, new = digests(args.old), digests(args.new)
    common = sorted(set(old) & set(new))
    differ = [path for path in common if old[path] != new[path]]
    print(f"{len(old)} files in {args.old}, {len(new)} in {args.new}")
    print(f"identical: {len(common) - len(differ)}; differing: {len(differ)}"
          f" ({sum(path.endswith(FIGURES) for path in differ)} figures)")
    for path in differ:
        if not path.endswith(FIGURES):
            print(f"  differs: {path}")
    for path in sorted(set(old) - set(new)):
        print(f"  only in {args.old}: {path}")
    for path in sorted(set(new) - set(old)):
        print(f"  only in {args.new}: {path}")


if __name__ == "__main__":
    main()
