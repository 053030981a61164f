# Helpers shared by all the rule files; validated configuration and per-run settings.
import copy
import os
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


def shard_names(run):
    """The run's extraction shards: `shard-{i}-of-{n}` for i = 0..n-1."""
    n = settings(run, "extract")["shards"]
    return [f"shard-{i}-of-{n}" for i in range(n)]


def score_partials(wildcards):
    """Input function of `cur`: the moments of every extraction shard."""
    return [
        f"results/{wildcards.run}/score/partials/{shard}.npz"
        for shard in shard_names(wildcards.run)
    ]


def score_second_pass(wildcards):
    """Input function of `cur`: the shards again when rows are L2-normalised (the Gram
    of normalised rows needs a second pass over them), else nothing."""
    if not settings(wildcards.run, "score")["l2_normalize"]:
        return []
    return [
        f"results/{wildcards.run}/extract/{shard}"
        for shard in shard_names(wildcards.run)
    ]


def score_parts(wildcards):
    """Input function of `cur_merge`: the scores of every extraction shard."""
    return [
        f"results/{wildcards.run}/score/parts/{shard}.parquet"
        for shard in shard_names(wildcards.run)
    ]


def selection_files(wildcards):
    """Input function of `select_summary`: the top-N and random-N files of the run's
    budgets. A percentage becomes a count once the scored samples are known (checkpoint
    `cur_merge`); a budget above that count fails here, with its reason."""
    from scalselect.selection import read_scores, resolve_budget

    run = wildcards.run
    n_valid = len(read_scores(checkpoints.cur_merge.get(run=run).output.table))
    values = settings(run, "select")
    files = []
    for budget in values["budgets"]:
        n = resolve_budget(budget, n_valid)
        files.append(f"results/{run}/select/top-{n}.json")
        files += [
            f"results/{run}/select/random-{n}-seed{seed}.json"
            for seed in values["random_seeds"]
        ]
    return files


def model_value(key):
    """Params function: a key of the run's model entry (path, type)."""

    def value(wildcards):
        return run_config(wildcards.run)["model"][key]

    return value


def model_input(wildcards):
    """Input function of `extract`: the model directory when it is a file of this
    workflow (an existing path, or one `rule demo` makes), else nothing (a hub name)."""
    path = run_config(wildcards.run)["model"]["path"]
    return [path] if os.path.exists(path) or path.startswith("resources/") else []


def extract_setting(key):
    """Resources function: an `extract` setting that does not change results (batch
    size, workers, GPUs, cache); as a resource, not a param, so that changing it does
    not rerun finished shards."""

    def value(wildcards):
        return settings(wildcards.run, "extract")[key]

    return value


def all_targets():
    """Every file the default target builds, for every run."""
    targets = []
    for run in RUNS:
        targets += [
            f"results/{run}/validate/report.json",
            f"results/{run}/filter/dataset.json",
            *(f"results/{run}/extract/{shard}" for shard in shard_names(run)),
            f"results/{run}/score/importance_scores.jsonl",
            f"results/{run}/select/summary.csv",
        ]
    return targets
