"""Command line: ``python -m scalselect <stage> ...``.

Each stage lives in ``scalselect/cli/<stage>.py`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Those modules stay light: heavy
imports (torch, transformers) happen inside ``run``, and only the chosen command's
``add_arguments`` runs, so each stage pays for its own imports alone.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from scalselect.errors import UserError

# Command name -> module under scalselect.cli, in workflow order.
COMMANDS = {
    "validate-index": "validate_index",
    "validate": "validate",
    "validate-merge": "validate_merge",
    "filter": "filter",
    "extract": "extract",
    "export-npz": "export_npz",
    "cache": "cache",
    "score": "score",
    "score-partial": "score_partial",
    "score-fit": "score_fit",
    "score-apply": "score_apply",
    "score-merge": "score_merge",
    "score-shards": "score_shards",
    "digests": "digests",
    "select": "select",
    "select-summary": "select_summary",
    "kmeans-clusters": "kmeans_clusters",
    "select-baseline": "select_baseline",
    "sources": "sources",
    "export": "export",
    "apply": "apply",
    "compare": "compare",
    "plot": "plot",
    "plot-compare": "plot_compare",
    "plot-methods": "plot_methods",
    "plot-layers": "plot_layers",
    "browse": "browse",
    "status": "status",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser; with ``command``, only that command's arguments are
    built (the others are listed with their help line)."""
    parser = argparse.ArgumentParser(
        prog="python -m scalselect",
        description="ScalSelect: training-free, linear-time multimodal data selection.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="Log debug messages."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"scalselect.cli.{module_name}")
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        if command in (None, name):
            module.add_arguments(sub)
            sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The only top-level option (-v) takes no value: the first other word is the command.
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        return args.handler(args)
    except UserError as error:
        logging.getLogger("scalselect").error("%s", error)
        return 2
