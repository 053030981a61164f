# Helpers shared by all the rule files; validated configuration and per-run settings.
import copy
import re
import shlex

from snakemake.utils import validate

# Run sections override the global stage sections key by key; keep what the user wrote
# before schema validation fills defaults into them.
RUN_OVERRIDES = copy.deepcopy(config.get("runs") or {})

validate(config, "../config/schema.yaml")

RUNS = list(config["runs"])

# Jobs run `python -m scalselect` from this checkout, in whatever environment runs them
# (bash strict mode kept, as Snakemake's default prefix has it).
shell.prefix(
    "set -euo pipefail; export PYTHONPATH="
    + shlex.quote(workflow.basedir)
    + "${{PYTHONPATH:+:$PYTHONPATH}}; "
)


def run_config(run):
    """The validated run entry (dataset, image_root, model)."""
    return config["runs"][run]


def settings(run, stage):
    """Settings of one stage for one run: global section, then the run's overrides."""
    return {**config[stage], **RUN_OVERRIDES[run].get(stage, {})}


def run_value(key):
    """Input/params function: a top-level key of the run entry (dataset, image_root)."""

    def value(wildcards):
        return run_config(wildcards.run)[key]

    return value


def run_options(*keys):
    """Params function: top-level keys of the run entry (format, source_field) as
    command-line options; keys the run does not set are left out."""

    def options(wildcards):
        entry = run_config(wildcards.run)
        return " ".join(cli_option(key, entry[key]) for key in keys if key in entry)

    return options


def cli_option(key, value):
    """One setting as a command-line option: `--min-image-side 28`, `--no-center`."""
    flag = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    if isinstance(value, list):
        return f"--{flag} " + " ".join(shlex.quote(str(v)) for v in value)
    return f"--{flag} {shlex.quote(str(value))}"


def cli_options(stage, *keys):
    """Params function: the run's `keys` settings of `stage` as command-line options.

    Only settings that change results belong here: a change of params reruns the rule
    and everything downstream.
    """

    def options(wildcards):
        values = settings(wildcards.run, stage)
        return " ".join(cli_option(key, values[key]) for key in keys)

    return options


def all_targets():
    """Every file the default target builds, for every run."""
    targets = []
    for run in RUNS:
        targets += [
            f"results/{run}/validate/report.json",
            f"results/{run}/filter/dataset.json",
        ]
    return targets
