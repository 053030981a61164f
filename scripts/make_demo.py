"""Build the bundled demo (dataset in two formats, images, tiny models) deterministically.

    python scripts/make_demo.py --out resources/demo

All logic lives in :mod:`scalselect.demo.build`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scalselect.demo.build import DEFAULT_SEED, build_demo  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Demo directory to (re)build.")
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="Seed of every random choice."
    )
    args = parser.parse_args(argv)
    summary = build_demo(args.out, seed=args.seed)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
