# Helpers shared by all the rule files; validated configuration and per-run settings.
import copy
import os
import re
import shlex
import sys

import yaml
from snakemake.utils import validate

from snakemake.logging import logger

from scalselect.config import (
    kmeans_budget_problems,
    made_by_workflow,
    problem_report,
    run_problems,
    schema_problems,
    shard_group_problems,
)
from scalselect.methods import BASELINES, picks_name
from scalselect.settings import RESULT_KEYS

# Run sections override the global stage sections key by key; keep what the user wrote
# before schema validation fills defaults into them.
RUN_OVERRIDES = copy.deepcopy(config.get("runs") or {})

# Every wrong key in one short message; then Snakemake's validation fills the defaults.
with open(os.path.join(workflow.basedir, "config/schema.yaml")) as schema_file:
    _problems = schema_problems(config, yaml.safe_load(schema_file))
if _problems:
    raise WorkflowError(problem_report(_problems, "configuration"))
validate(config, "../config/schema.yaml")

RUNS = list(config["runs"])

# Jobs run `python -m scalselect` from this checkout with the interpreter of the
# Snakemake that schedules them (first on PATH), whether or not its environment is
# activated; SLURM jobs run that same interpreter path on the shared filesystem.
# Bash strict mode kept, as Snakemake's default prefix has it.
shell.prefix(
    "set -euo pipefail; export PATH="
    + shlex.quote(os.path.dirname(sys.executable))
    + ":$PATH PYTHONPATH="
    + shlex.quote(workflow.basedir)
    + "${{PYTHONPATH:+:$PYTHONPATH}}; "
)


def run_config(run):
    """The validated run entry (dataset, image_root, model)."""
    return config["runs"][run]


def settings(run, stage):
    """Settings of one stage for one run: global section, then the run's overrides."""
    return {**config[stage], **RUN_OVERRIDES[run].get(stage, {})}


# Checks the schema cannot express (files, the model's own config, related keys), all
# reported at once before any job starts.
_problems = []
for run in RUNS:
    _problems += run_problems(run, run_config(run), settings(run, "select"))
    tokens = settings(run, "extract")
    if tokens["min_image_tokens"] > tokens["max_image_tokens"]:
        _problems.append(
            f"runs.{run}: extract.min_image_tokens ({tokens['min_image_tokens']}) is"
            f" larger than extract.max_image_tokens ({tokens['max_image_tokens']})"
        )
if _problems:
    raise WorkflowError(problem_report(_problems, "configuration"))

# Budgets below the k-means clusters, said once per run and budget on the console: the
# counts now, before any job; the percentages once the scored samples are known.
_KMEANS_WARNED = set()


def warn_kmeans_budgets(run, n_scored=None):
    """Warn of the run's budgets below `select.kmeans_clusters` (percentages only with
    `n_scored`), each once."""
    values = settings(run, "select")
    if "kmeans" not in values["methods"]:
        return
    for problem in kmeans_budget_problems(
        values["kmeans_clusters"], values["budgets"], n_scored
    ):
        if (run, problem) not in _KMEANS_WARNED:
            _KMEANS_WARNED.add((run, problem))
            logger.warning(f"runs.{run}: select: {problem}")


for run in RUNS:
    warn_kmeans_budgets(run)


def slurm_problems():
    """Problems of the SLURM profile's extract settings (slurm/config.yaml sets
    `shards_per_job` and `job_runtime`, in minutes, on extract); none without it."""
    extract = workflow.resource_settings.overwrite_resources.get("extract", {})
    if "shards_per_job" not in extract:
        return []
    return shard_group_problems(
        *(extract[key].value for key in ("shards_per_job", "runtime", "job_runtime"))
    )


if slurm_problems():
    raise WorkflowError(problem_report(slurm_problems(), "SLURM profile"))


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


def validate_parts(wildcards):
    """Input function of `validate`: the part of every validation shard, in order."""
    n = settings(wildcards.run, "validate")["shards"]
    return [
        f"results/{wildcards.run}/validate/parts/shard-{i}-of-{n}.npz" for i in range(n)
    ]


def shard_names(run):
    """The run's extraction shards: `shard-{i}-of-{n}` for i = 0..n-1."""
    n = settings(run, "extract")["shards"]
    return [f"shard-{i}-of-{n}" for i in range(n)]


# BLAS threads of the scoring steps (the moments in extract jobs, and `cur`): they change
# float64 rounding, so every run of a step uses the same number.
SCORE_THREADS = 2


def score_partials(wildcards):
    """Input function of `cur`: the moments of every extraction shard (written by its
    extract job)."""
    return [
        f"results/{wildcards.run}/score/partials/{shard}.npz"
        for shard in shard_names(wildcards.run)
    ]


def selection_files(wildcards):
    """Input function of `select_summary`: the top-N and random-N files of the run's
    budgets. A percentage becomes a count once the scored samples are known (checkpoint
    `cur`); a budget above that count fails here, with its reason."""
    run = wildcards.run
    ext = dataset_extension(run)
    files = []
    for n in resolved_budgets(run):
        files.append(f"results/{run}/select/top-{n}.{ext}")
        files += [
            f"results/{run}/select/random-{n}-seed{seed}.{ext}"
            for seed in random_seeds(run)
        ]
    return files


def resolved_budgets(run):
    """The run's budgets as sample counts (after checkpoint `cur`)."""
    from scalselect.selection import read_scores, resolve_budget

    n_valid = len(read_scores(checkpoints.cur.get(run=run).output.table))
    warn_kmeans_budgets(run, n_valid)
    return [resolve_budget(b, n_valid) for b in settings(run, "select")["budgets"]]


def random_seeds(run):
    """Seeds of the run's random subsets; none when `random` is not a method."""
    values = settings(run, "select")
    return values["random_seeds"] if "random" in values["methods"] else []


def baseline_picks(wildcards):
    """Input function of `plots_methods` and `browse`: the picks tables of the run's
    baseline selectors (`select.methods`) for each budget, named after their selections
    `<method>-<N>.<ext>` (`dataset_extension`), which the same jobs write."""
    run = wildcards.run
    methods = settings(run, "select")["methods"]
    ext = dataset_extension(run)
    return [
        f"results/{run}/select/{picks_name(method, n, ext)}"
        for method in BASELINES
        if method in methods
        for n in resolved_budgets(run)
    ]


def run_shards(wildcards):
    """Input function: the run's extraction shard directories."""
    return [
        f"results/{wildcards.run}/extract/{shard}"
        for shard in shard_names(wildcards.run)
    ]


def features_mem_mb(wildcards, input):
    """Resources: memory of a job holding all of a run's representations, preprocessed
    (float32) and a float64 block, with margin: 3x the features files + 2 GB."""
    size = sum(
        os.path.getsize(os.path.join(shard, "features.npy"))
        for shard in input.shards
        if os.path.exists(os.path.join(shard, "features.npy"))
    )
    return 3 * size // 2**20 + 2000


def dataset_extension(run):
    """`jsonl` when the run's dataset is JSON Lines, `parquet` when it is parquet, else
    `json`: the filtered dataset and every selection keep the dataset's file format."""
    from scalselect.dataset import file_kind

    return file_kind(run_config(run)["dataset"])


def filtered_path(run):
    """The run's filtered dataset, `filter/dataset.json`, `.jsonl` or `.parquet`
    (`dataset_extension`)."""
    return f"results/{run}/filter/dataset.{dataset_extension(run)}"


def filtered_dataset(wildcards):
    """Input function: the run's filtered dataset (`filtered_path`)."""
    return filtered_path(wildcards.run)


def filtered_index(wildcards):
    """Input function of `extract`: the filtered dataset's index (written by `filter`)."""
    return f"{filtered_path(wildcards.run)}.index.npz"


def model_value(key):
    """Params function: a key of the run's model entry (path, type)."""

    def value(wildcards):
        return run_config(wildcards.run)["model"][key]

    return value


def model_input(wildcards):
    """Input function of `extract`: the model directory when it is a file of this
    workflow (an existing path, or one `rule demo` makes), else nothing (a hub name)."""
    path = run_config(wildcards.run)["model"]["path"]
    return [path] if os.path.exists(path) or made_by_workflow(path) else []


def extract_setting(key):
    """Resources function: an `extract` setting that does not change results (batch
    size, workers, GPUs, cache); as a resource, not a param, so that changing it does
    not rerun finished shards."""

    def value(wildcards):
        return settings(wildcards.run, "extract")[key]

    return value


def extract_cache_dirs(wildcards):
    """Resources function: the `--cache-dir` arguments of `extract` (the feature stores,
    quoted for the shell); a resource, so changing the stores does not rerun shards."""
    return " ".join(
        shlex.quote(d) for d in settings(wildcards.run, "extract")["cache_dirs"]
    )


def source_runs(wildcards):
    """Params of `sources`: `--run REPORT keep|drop` for each run (whether its filter
    keeps the text-only samples its report counts)."""
    return " ".join(
        f"--run results/{run}/validate/report.json"
        f" {'keep' if settings(run, 'filter')['keep_text_only'] else 'drop'}"
        for run in RUNS
    )


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
        caption = f"../report/{caption_file}"
        return report(path, caption, category, subcategory, labels)

    return [output(fmt) for fmt in formats]


def plot_options(wildcards):
    """Params: formats and resolution of every figure (global `plots` section)."""
    values = config["plots"]
    return f"--formats {' '.join(values['formats'])} --dpi {values['dpi']}"


def gallery_setting(wildcards):
    """Params: samples per gallery row (a run may override it)."""
    return settings(wildcards.run, "plots")["gallery_samples"]


def gallery_gpus(wildcards):
    """Resources of `plots_gallery` (and of k-center and the methods comparison, which
    use a GPU when present): one GPU when extraction uses GPUs, else none."""
    return min(settings(wildcards.run, "extract")["gpus"], 1)


# Validation settings that change speed only.
VALIDATE_SPEED_KEYS = ("shards",)


def without(values, keys):
    """A settings dict without `keys`."""
    return {k: v for k, v in values.items() if k not in keys}


def comparison_groups():
    """Runs whose filtered datasets are identical by construction (same dataset file,
    image root, format and data-stage settings), by group name `<run>_vs_<run>...`;
    only groups of two or more runs, which `plots_compare` compares."""
    groups = {}
    for run in RUNS:
        entry = run_config(run)
        key = repr(
            (
                entry["dataset"],
                entry.get("image_root"),
                entry.get("format"),
                without(settings(run, "validate"), VALIDATE_SPEED_KEYS),
                settings(run, "filter"),
            )
        )
        groups.setdefault(key, []).append(run)
    return {"_vs_".join(runs): runs for runs in groups.values() if len(runs) > 1}


def comparison_inputs(kind):
    """Input function of `plots_compare`: each run's `scores` or filtered `dataset`."""
    path = {
        "scores": "results/{}/score/scores.parquet".format,
        "dataset": filtered_path,
    }[kind]

    def inputs(wildcards):
        return [path(run) for run in comparison_groups()[wildcards.group]]

    return inputs


def comparison_runs(wildcards, input):
    """Params of `plots_compare`: `--run NAME SCORES DATASET` for each run of the group."""
    runs = comparison_groups()[wildcards.group]
    return " ".join(
        f"--run {run} {scores} {dataset}"
        for run, scores, dataset in zip(runs, input.scores, input.datasets)
    )


# Stage sections of a run entry (compared through `settings`, overrides applied).
STAGES = ("validate", "filter", "extract", "score", "select", "plots")


def layer_groups():
    """Runs that differ only in `extract.layer` (same data, model, other result
    settings), by group name `<run>_vs_<run>...`: the layer ablations."""
    groups = {}
    for run in RUNS:
        entry = {k: v for k, v in run_config(run).items() if k not in STAGES}
        extract = {k: settings(run, "extract")[k] for k in RESULT_KEYS if k != "layer"}
        stages = [without(settings(run, "validate"), VALIDATE_SPEED_KEYS)]
        stages += [settings(run, s) for s in ("filter", "score", "select")]
        groups.setdefault(repr((entry, extract, stages)), []).append(run)
    return {
        "_vs_".join(runs): runs
        for runs in groups.values()
        if len({settings(run, "extract")["layer"] for run in runs}) > 1
    }


def layer_runs(wildcards):
    """Params of `plots_layers`: `--run NAME LAYER SPECTRUM SCORES` for each run."""
    return " ".join(
        f"--run {run} {settings(run, 'extract')['layer']}"
        f" results/{run}/score/spectrum.json results/{run}/score/scores.parquet"
        for run in layer_groups()[wildcards.group]
    )


def layer_inputs(kind):
    """Input function of `plots_layers`: each run's `spectrum` or `scores`."""
    path = {
        "spectrum": "results/{}/score/spectrum.json",
        "scores": "results/{}/score/scores.parquet",
    }[kind]

    def inputs(wildcards):
        return [path.format(run) for run in layer_groups()[wildcards.group]]

    return inputs


def plot_targets(run):
    """The figures and tables of one run."""
    formats = config["plots"]["formats"]
    stems = [
        "score_histogram",
        "score_violin",
        "spectrum",
        "score_ranking",
        "score_cumulative",
        "score_distribution",
        "composition",
        "attention_gallery",
    ]
    files = [f"results/{run}/plots/{stem}.{fmt}" for stem in stems for fmt in formats]
    files += [f"results/{run}/plots/methods.{fmt}" for fmt in formats]
    tables = [
        "budgets.csv",
        "budgets.tex",
        "composition.csv",
        "methods.csv",
        "methods.tex",
    ]
    return files + [f"results/{run}/plots/{name}" for name in tables]


def comparison_targets():
    """The cross-run figures and tables of every comparison group."""
    formats = config["plots"]["formats"]
    targets = []
    for group in comparison_groups():
        targets += [
            f"results/compare/{group}/{stem}.{fmt}"
            for stem in ("overlap", "rank_agreement")
            for fmt in formats
        ]
        targets += [
            f"results/compare/{group}/comparison.{ext}" for ext in ("csv", "tex")
        ]
    return targets


def all_targets():
    """Every file the default target builds, for every run."""
    targets = []
    for run in RUNS:
        targets += [
            f"results/{run}/validate/report.json",
            filtered_path(run),
            *(f"results/{run}/extract/{shard}" for shard in shard_names(run)),
            f"results/{run}/score/importance_scores.jsonl",
            f"results/{run}/select/summary.csv",
            *plot_targets(run),
            f"results/{run}/browse",
        ]
    formats = config["plots"]["formats"]
    for group in layer_groups():
        targets += [
            f"results/layers/{group}/layer_ablation.{ext}"
            for ext in (*formats, "csv", "tex")
        ]
    return targets + comparison_targets()
