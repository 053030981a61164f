# Shared by every rules file: the validated configuration and thin input, params and
# resources functions over scalselect.workflow.Plan, where the (unit-tested) logic lives.
import copy
import os
import re
import shlex
import sys

import yaml
from snakemake.logging import logger
from snakemake.utils import validate

from scalselect.config import problem_report, schema_problems, shard_group_problems
from scalselect.select.export import EXPORTS
from scalselect.select.selection import scored_count
from scalselect.settings import result_keys
from scalselect.workflow import (
    KMEANS_KEYS,
    SCORE_THREADS,
    Plan,
    cli_option,
    features_mem_mb,
)

# A run overrides the stage sections key by key: what the user wrote, before defaults.
_overrides = copy.deepcopy(config.get("runs") or {})

# Every wrong key in one short message; then Snakemake's validation fills the defaults.
with open(os.path.join(workflow.basedir, "config/schema.yaml")) as schema_file:
    _problems = schema_problems(config, yaml.safe_load(schema_file))
if _problems:
    raise WorkflowError(problem_report(_problems, "configuration"))
validate(config, "../config/schema.yaml")

PLAN = Plan(config, _overrides)
RUNS = PLAN.runs

# What the schema cannot check (files, the model's config, related keys), before any job.
_problems = PLAN.problems()
if _problems:
    raise WorkflowError(problem_report(_problems, "configuration"))
# The SLURM profile (slurm/config.yaml) sets shards_per_job and job_runtime on extract.
_extract = workflow.resource_settings.overwrite_resources.get("extract", {})
if "shards_per_job" in _extract:
    _keys = ("shards_per_job", "runtime", "job_runtime")
    _problems = shard_group_problems(*(_extract[key].value for key in _keys))
    if _problems:
        raise WorkflowError(problem_report(_problems, "SLURM profile"))

# Jobs run this checkout's `python -m scalselect` with the interpreter of the Snakemake
# that schedules them (activated or not; SLURM jobs: the same path), in bash strict mode.
shell.prefix(
    "set -euo pipefail; export PATH="
    + shlex.quote(os.path.dirname(sys.executable))
    + ":$PATH PYTHONPATH="
    + shlex.quote(workflow.basedir)
    + "${{PYTHONPATH:+:$PYTHONPATH}}; "
)


def per_run(method, *args):
    """Input/params/resources function: `method(run, *args)` for the job's run."""
    return lambda wildcards: method(wildcards.run, *args)


# Budgets below the k-means clusters, said once per run and budget on the console: the
# counts now, before any job; the percentages once the scored samples are known.
_warned = set()


def warn_kmeans_budgets(run, n_scored=None):
    """Warn once of each budget below `select.kmeans_clusters` (Plan.kmeans_warnings)."""
    for problem in PLAN.kmeans_warnings(run, n_scored):
        if (run, problem) not in _warned:
            _warned.add((run, problem))
            logger.warning(f"runs.{run}: select: {problem}")


for run in RUNS:
    warn_kmeans_budgets(run)


def scored(run):
    """The run's number of scored samples, once checkpoint `cur` has run."""
    n_scored = scored_count(checkpoints.cur.get(run=run).output.table)
    warn_kmeans_budgets(run, n_scored)
    return n_scored


def run_value(key):
    """A top-level key of the run entry (dataset, image_root)."""
    return lambda wildcards: PLAN.entry(wildcards.run)[key]


def model_value(key):
    """A key of the run's model entry (path, type)."""
    return lambda wildcards: PLAN.entry(wildcards.run)["model"][key]


def run_options(*keys):
    """Run-entry keys (format, source_field) as options; unset ones left out."""
    return per_run(PLAN.entry_options, keys)


def cli_options(stage, *keys):
    """The run's `keys` settings of `stage` as options (params: results change)."""
    return per_run(PLAN.options, stage, keys)


def extract_setting(key):
    """An `extract` setting that changes speed only, as a resource (not rerun)."""
    return lambda wildcards: PLAN.settings(wildcards.run, "extract")[key]


filtered_dataset = per_run(PLAN.filtered_path)
dataset_inputs = per_run(PLAN.dataset_inputs)
filtered_index = per_run(PLAN.filtered_index)
model_input = per_run(PLAN.model_inputs)
validate_parts = per_run(PLAN.validate_parts)
run_shards = per_run(PLAN.shard_dirs)
score_partials = per_run(PLAN.score_partials)
extract_cache_dirs = per_run(PLAN.cache_dirs)
gallery_gpus = per_run(PLAN.helper_gpus)
gallery_setting = lambda wildcards: PLAN.settings(wildcards.run, "plots")[
    "gallery_samples"
]
plot_options = lambda wildcards: PLAN.plot_options()
# The budgets reach every rule the same way, from the run's own `select` section.
budget_options = per_run(lambda run: cli_option("budgets", PLAN.budgets(run)))
seed_options = per_run(lambda run: cli_option("random_seeds", PLAN.random_seeds(run)))
selection_files = per_run(lambda run: PLAN.selection_files(run, scored(run)))
baseline_picks = per_run(lambda run: PLAN.baseline_picks(run, scored(run)))
run_digests = per_run(PLAN.digests_path)
# Every run's exports (the default target); a run without exports needs no scores for it.
export_dirs = lambda wildcards: [
    path
    for run in RUNS
    if PLAN.settings(run, "select")["export"]
    for path in PLAN.export_dirs(run, scored(run))
]


def card_options(method):
    """Params of a selection rule: its card's files, budget as asked and settings."""

    def options(wildcards, input, output):
        run, n = wildcards.run, int(wildcards.N)
        files = f"--card {output.card} --card-digests {input.digests} --card-spectrum"
        files += f" {input.spectrum} --card-shards {input.card_shards}"
        return f"{files} {PLAN.card_options(run, method, n, scored(run))}"

    return options


def card_file(selection):
    """A selection's card, in the report (category: the run)."""
    return report(
        f"{selection}.card.json",
        caption="../report/card.rst",
        category="{run}",
        subcategory="Selection cards",
        labels={"selection": os.path.basename(selection)},
    )


def top_selection(wildcards):
    """Input of an export: the run's top-N selection, in the dataset's format."""
    ext = PLAN.dataset_extension(wildcards.run)
    return f"results/{wildcards.run}/select/top-{wildcards.N}.{ext}"


def shards_mem_mb(wildcards, input):
    """Resources: memory of a job holding all of the run's representations."""
    return features_mem_mb(input.shards)


def source_runs(wildcards):
    """Params of `sources`: `--run REPORT keep|drop` for each run."""
    return " ".join(f"--run {report} {keep}" for report, keep in PLAN.source_runs())


def figure_files(stem, caption_file, subcategory):
    """Output files of one figure, `stem.<format>` for each configured format. The PNG
    (else the first format) goes into the report, captioned by `report/<caption>`."""
    formats = config["plots"]["formats"]
    shown = "png" if "png" in formats else formats[0]
    category = "{run}" if "{run}" in stem else "Across runs"
    labels = {"figure": os.path.basename(stem)}

    def output(fmt):
        path = f"{stem}.{fmt}"
        if fmt != shown:
            return path
        return report(path, f"../report/{caption_file}", category, subcategory, labels)

    return [output(fmt) for fmt in formats]


def group_budget_options(groups):
    """Params of `plots_compare` and `plots_layers`: the budgets of the group's runs."""
    return lambda w: cli_option("budgets", PLAN.group_budgets(groups()[w.group]))


def comparison_inputs(kind):
    """Input function of `plots_compare`: each run's `scores` or filtered `dataset`."""
    column = {"scores": 1, "dataset": 2}[kind]
    return lambda w: [run[column] for run in PLAN.comparison_runs(w.group)]


def comparison_runs(wildcards, input):
    """Params of `plots_compare`: `--run NAME SCORES DATASET` for each run."""
    runs = PLAN.comparison_groups()[wildcards.group]
    return " ".join(map("--run {} {} {}".format, runs, input.scores, input.datasets))


def layer_inputs(kind):
    """Input function of `plots_layers`: each run's `spectrum` or `scores`."""
    column = {"spectrum": 2, "scores": 3}[kind]
    return lambda w: [run[column] for run in PLAN.layer_runs(w.group)]


def layer_runs(wildcards):
    """Params of `plots_layers`: `--run NAME LAYER SPECTRUM SCORES` for each run."""
    runs = PLAN.layer_runs(wildcards.group)
    return " ".join("--run " + " ".join(map(str, run)) for run in runs)
