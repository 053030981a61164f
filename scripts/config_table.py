"""The README's configuration table, made from the declarations in scalselect/settings.py.

``python scripts/config_table.py`` prints the table; ``--write`` puts it into README.md
between the two marker lines. ``tests/test_settings.py`` fails when README.md holds
anything else there, so a changed declaration comes with its row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scalselect.settings import STAGES, Setting, declared  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"
START = "<!-- configuration table: made by scripts/config_table.py from scalselect/settings.py -->"
END = "<!-- end of configuration table -->"


def yaml_text(value: Any) -> str:
    """``value`` as config.yaml writes it: ``true``, ``[pdf, png]``, ``0.9``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(map(yaml_text, value)) + "]"
    return str(value)


def row(stage: str, setting: Setting) -> str:
    """One setting's row: key, default, allowed values, whether it changes results, help."""
    allowed = setting.allowed
    if allowed and isinstance(setting.default, tuple):
        allowed = "each " + allowed
    cells = [f"`{stage}.{setting.name}`", f"`{yaml_text(setting.default)}`", allowed,
             "yes" if setting.changes_results else "no", setting.help.replace("|", "\\|")]
    return "| " + " | ".join(cells) + " |"


def table() -> str:
    """The table of every setting of every configuration section, in declaration order."""
    lines = ["| key | default | allowed | changes results | what it sets |",
             "|---|---|---|---|---|"]
    for stage, declaration in STAGES.items():
        lines += [row(stage, setting) for setting in declared(declaration).values()
                  if not setting.from_run]
    return "\n".join(lines)


def readme_parts(text: str) -> tuple[str, str, str]:
    """README ``text`` before the table (through the start marker), the table, and the
    rest (from the end marker); ValueError without the markers."""
    head, rest = text.split(START + "\n", 1)
    block, tail = rest.split("\n" + END, 1)
    return head + START + "\n", block, "\n" + END + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="Update README.md in place.")
    if not parser.parse_args().write:
        print(table())
        return
    head, _, tail = readme_parts(README.read_text(encoding="utf-8"))
    README.write_text(head + table() + tail, encoding="utf-8")


if __name__ == "__main__":
    main()
