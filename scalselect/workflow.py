"""What the workflow runs, computed from its validated configuration.

:class:`Plan` turns the configuration (``config/config.yaml`` after Snakemake's schema
validation filled in the defaults) into what the rules need: each run's settings (the
global stage sections overridden key by key by the run's own), the files of its shards,
its budgets, the targets of the default rule, the runs that are compared with each other
(same data) or that form a layer ablation (differ only in ``extract.layer``), memory
estimates, and the command-line options of each rule. ``rules/common.smk`` only wires
these into Snakemake's input, params and resources functions.

Pure Python without Snakemake, so that every decision here is unit-tested
(``tests/test_workflow_plan.py``). Snakemake's own objects stay in the rule files: the
checkpoint that gives a run's scored-sample count (passed here as ``n_valid``), the
report wrapper of figure files and the SLURM profile's resources.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from scalselect.budgets import resolve_budget
from scalselect.config import kmeans_budget_problems, made_by_workflow, run_problems
from scalselect.data.readers import file_kind
from scalselect.locations import is_url, version
from scalselect.methods import BASELINES, picks_name
from scalselect.select.selection import budget_names
from scalselect.settings import config_problems, result_keys

# The stage sections a run entry may override.
STAGES = ("validate", "filter", "extract", "score", "select", "plots")
# The `select` settings of the k-means baseline (the other methods' are in their names).
KMEANS_KEYS = ("kmeans_clusters", "kmeans_seed")
# BLAS threads of the scoring steps (the moments in extract jobs, and `cur`): they change
# float64 rounding, so every run of a step uses the same number.
SCORE_THREADS = 2
# The figures of one run (`plots_scores`, `plots`, `plots_gallery`, `plots_methods`).
RUN_FIGURES = (
    "score_histogram",
    "score_violin",
    "spectrum",
    "score_ranking",
    "score_cumulative",
    "score_distribution",
    "composition",
    "attention_gallery",
    "methods",
)
RUN_TABLES = ("budgets.csv", "budgets.tex", "composition.csv", "methods.csv", "methods.tex")
COMPARISON_FIGURES = ("overlap", "rank_agreement")


def cli_option(key: str, value: Any) -> str:
    """One setting as a command-line option.

    >>> cli_option("min_image_side", 28), cli_option("center", False)
    ('--min-image-side 28', '--no-center')
    >>> cli_option("budgets", [32, "16%"])
    '--budgets 32 16%'
    """
    flag = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    if isinstance(value, list):
        return f"--{flag} " + " ".join(shlex.quote(str(v)) for v in value)
    return f"--{flag} {shlex.quote(str(value))}"


class Plan:
    """The runs of one configuration and everything the rules derive from them.

    Parameters
    ----------
    config : mapping
        The configuration after schema validation (defaults filled in).
    overrides : mapping
        The run entries' stage sections as the user wrote them, before validation filled
        defaults into them: a run overrides only the keys it names.
    """

    def __init__(self, config: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
        self.config = config
        self.overrides = copy.deepcopy(dict(overrides))
        self.runs = list(config["runs"])
        self._versions: dict[str, str] = {}

    # -- settings ----------------------------------------------------------------------

    def entry(self, run: str) -> dict[str, Any]:
        """The validated run entry (dataset, image_root, format, model, ...)."""
        return self.config["runs"][run]

    def settings(self, run: str, stage: str) -> dict[str, Any]:
        """Settings of one stage for one run: the global section, then the run's own keys."""
        return {**self.config[stage], **(self.overrides.get(run) or {}).get(stage, {})}

    def problems(self) -> list[str]:
        """What the schema cannot check, for every run: files, the model, budgets, and
        related extract settings; an empty list when all is well."""
        problems = []
        for run in self.runs:
            problems += run_problems(run, self.entry(run), self.settings(run, "select"))
            for stage in STAGES:
                problems += [
                    f"runs.{run}: {problem}"
                    for problem in config_problems(stage, self.settings(run, stage))
                ]
        return problems

    def _result_settings(self, run: str, stage: str) -> dict[str, Any]:
        """The run's settings of ``stage`` that change results (speed knobs left out)."""
        values = self.settings(run, stage)
        return {key: values[key] for key in result_keys(stage)}

    def options(self, run: str, stage: str, keys: Sequence[str]) -> str:
        """The run's ``keys`` settings of ``stage`` as command-line options. Only settings
        that change results belong in params: a change of params reruns the rule."""
        values = self.settings(run, stage)
        return " ".join(cli_option(key, values[key]) for key in keys)

    def entry_options(self, run: str, keys: Sequence[str]) -> str:
        """Keys of the run entry (format, source_field) as options; unset ones left out."""
        entry = self.entry(run)
        return " ".join(cli_option(key, entry[key]) for key in keys if key in entry)

    def cache_dirs(self, run: str) -> str:
        """The run's feature stores as ``--cache-dir`` arguments, quoted for the shell."""
        return " ".join(shlex.quote(d) for d in self.settings(run, "extract")["cache_dirs"])

    def helper_gpus(self, run: str) -> int:
        """GPUs of the jobs that use one when present (gallery, k-center, the methods
        comparison): one when extraction uses GPUs, else none."""
        return min(self.settings(run, "extract")["gpus"], 1)

    def plot_options(self) -> str:
        """Formats and resolution of every figure (global: they name the files)."""
        plots = self.config["plots"]
        return f"--formats {' '.join(plots['formats'])} --dpi {plots['dpi']}"

    # -- files of a run ----------------------------------------------------------------

    def dataset_extension(self, run: str) -> str:
        """``jsonl``, ``parquet`` or ``json``: the filtered dataset and every selection
        keep the run's dataset's file format."""
        return file_kind(self.entry(run)["dataset"])

    def dataset_inputs(self, run: str) -> list[str]:
        """The run's dataset as a Snakemake input: the local file, or nothing for a URL
        (no file for Snakemake to stat; :meth:`dataset_version` tracks it instead)."""
        dataset = self.entry(run)["dataset"]
        return [] if is_url(dataset) else [dataset]

    def dataset_version(self, run: str) -> str:
        """What changes when the run's remote dataset changes (its size and ETag, version
        or blob digest, asked for once per Snakemake invocation): a param of
        ``validate_index``, so a changed object reruns the run and an unchanged one
        nothing. Empty for a local file, which Snakemake tracks itself."""
        dataset = self.entry(run)["dataset"]
        if not is_url(dataset):
            return ""
        if dataset not in self._versions:
            self._versions[dataset] = version(dataset)
        return self._versions[dataset]

    def filtered_path(self, run: str) -> str:
        """The run's filtered dataset, ``filter/dataset.<ext>``."""
        return f"results/{run}/filter/dataset.{self.dataset_extension(run)}"

    def filtered_index(self, run: str) -> str:
        """The filtered dataset's offset index (written by ``filter``)."""
        return f"{self.filtered_path(run)}.index.npz"

    def model_inputs(self, run: str) -> list[str]:
        """The model folder when it is a file of this workflow (an existing path, or one a
        rule makes), else nothing (a hub name)."""
        path = self.entry(run)["model"]["path"]
        return [path] if os.path.exists(path) or made_by_workflow(path) else []

    def validate_parts(self, run: str) -> list[str]:
        """The part of every validation shard, in order."""
        n = self.settings(run, "validate")["shards"]
        return [f"results/{run}/validate/parts/shard-{i}-of-{n}.npz" for i in range(n)]

    def shard_names(self, run: str) -> list[str]:
        """The run's extraction shards, ``shard-{i}-of-{n}``."""
        n = self.settings(run, "extract")["shards"]
        return [f"shard-{i}-of-{n}" for i in range(n)]

    def shard_dirs(self, run: str) -> list[str]:
        """The run's extraction shard directories."""
        return [f"results/{run}/extract/{shard}" for shard in self.shard_names(run)]

    def score_partials(self, run: str) -> list[str]:
        """The moments of every extraction shard (written by its extract job)."""
        return [f"results/{run}/score/partials/{shard}.npz" for shard in self.shard_names(run)]

    # -- budgets and selections --------------------------------------------------------

    def budgets(self, run: str) -> list[int | str]:
        """The run's budgets as asked (its own ``select`` section if it has one)."""
        return self.settings(run, "select")["budgets"]

    def group_budgets(self, runs: Sequence[str]) -> list[int | str]:
        """The budgets of a group of runs compared on the same data: every budget any of
        them asks for, in the order first asked (as the text given, so ``50`` and
        ``"50"`` are one budget)."""
        seen: dict[str, int | str] = {}
        for run in runs:
            for budget in self.budgets(run):
                seen.setdefault(str(budget).strip(), budget)
        return list(seen.values())

    def resolved_budgets(self, run: str, n_valid: int) -> list[int]:
        """The run's budgets as sample counts of its ``n_valid`` scored samples."""
        return [resolve_budget(budget, n_valid) for budget in self.budgets(run)]

    def random_seeds(self, run: str) -> list[int | str]:
        """Seeds of the run's random subsets; none when ``random`` is not a method."""
        values = self.settings(run, "select")
        return values["random_seeds"] if "random" in values["methods"] else []

    def kmeans_warnings(self, run: str, n_scored: int | None = None) -> list[str]:
        """The run's budgets below ``select.kmeans_clusters`` when it makes the k-means
        baseline (percentages only once ``n_scored`` is known)."""
        values = self.settings(run, "select")
        if "kmeans" not in values["methods"]:
            return []
        return kmeans_budget_problems(values["kmeans_clusters"], values["budgets"], n_scored)

    def source_runs(self) -> list[tuple[str, str]]:
        """``(validation report, keep|drop)`` of every run: whether its filter keeps the
        text-only samples its report counts (the sources' colours span all runs)."""
        return [
            (f"results/{run}/validate/report.json",
             "keep" if self.settings(run, "filter")["keep_text_only"] else "drop")
            for run in self.runs
        ]

    def selection_files(self, run: str, n_valid: int) -> list[str]:
        """The top-N and random-N files of the run's budgets."""
        ext = self.dataset_extension(run)
        files = []
        for n in self.resolved_budgets(run, n_valid):
            files.append(f"results/{run}/select/top-{n}.{ext}")
            files += [
                f"results/{run}/select/random-{n}-seed{seed}.{ext}"
                for seed in self.random_seeds(run)
            ]
        return files

    def baseline_picks(self, run: str, n_valid: int) -> list[str]:
        """The picks tables of the run's baselines (``select.methods``) per budget."""
        methods = self.settings(run, "select")["methods"]
        ext = self.dataset_extension(run)
        return [
            f"results/{run}/select/{picks_name(method, n, ext)}"
            for method in BASELINES
            if method in methods
            for n in self.resolved_budgets(run, n_valid)
        ]

    def asked_budget(self, run: str, n: int, n_valid: int) -> str:
        """The budget of the run's selections of ``n`` samples as asked: the first of its
        budgets that resolves to ``n``, a percentage preferred (``"16%"`` stays ``"16%"``,
        as in the figures: :func:`~scalselect.select.selection.budget_names`), else ``n``
        itself (a selection asked for on the command line)."""
        names = budget_names((b, resolve_budget(b, n_valid)) for b in self.budgets(run))
        return names.get(n, str(n))

    def card_settings(self, run: str, method: str) -> str:
        """The settings a selection card takes from the configuration, as one JSON
        option for the shell: the data stages' result settings (extraction's and
        scoring's come from their outputs) and, for k-means, its own."""
        select = self.settings(run, "select")
        settings = {
            "validate": self._result_settings(run, "validate"),
            "filter": self.settings(run, "filter"),
            "select": {key: select[key] for key in KMEANS_KEYS} if method == "kmeans" else {},
        }
        return cli_option("card_settings", json.dumps(settings, sort_keys=True))

    def card_options(self, run: str, method: str, n: int, n_valid: int) -> str:
        """The card's budget as asked (:meth:`asked_budget`) and the settings it records
        (:meth:`card_settings`), as options of a selection command."""
        budget = cli_option("card_budget", self.asked_budget(run, n, n_valid))
        return f"{budget} {self.card_settings(run, method)}"

    def digests_path(self, run: str) -> str:
        """The run's digests table (content digests of the filtered records)."""
        return f"results/{run}/select/digests.parquet"

    def export_dirs(self, run: str, n_valid: int) -> list[str]:
        """The exports of the run's top-N selections (``select.export``), one folder each."""
        formats = self.settings(run, "select")["export"]
        return [f"results/{run}/export/top-{n}-{fmt}"
                for n in self.resolved_budgets(run, n_valid) for fmt in formats]

    # -- groups of runs ----------------------------------------------------------------

    def comparison_groups(self) -> dict[str, list[str]]:
        """Runs whose filtered datasets are identical by construction (same dataset file,
        image root, format and data-stage settings), by name ``<run>_vs_<run>...``; only
        groups of two or more runs."""
        groups: dict[str, list[str]] = {}
        for run in self.runs:
            entry = self.entry(run)
            key = repr((
                entry["dataset"],
                entry.get("image_root"),
                entry.get("format"),
                self._result_settings(run, "validate"),
                self.settings(run, "filter"),
            ))
            groups.setdefault(key, []).append(run)
        return {"_vs_".join(runs): runs for runs in groups.values() if len(runs) > 1}

    def layer_groups(self) -> dict[str, list[str]]:
        """Runs that differ only in ``extract.layer`` (same data, model and other result
        settings), by name ``<run>_vs_<run>...``: the layer ablations."""
        groups: dict[str, list[str]] = {}
        for run in self.runs:
            entry = {k: v for k, v in self.entry(run).items() if k not in STAGES}
            extract = self._result_settings(run, "extract")
            del extract["layer"]
            stages = [self._result_settings(run, "validate")]
            stages += [self.settings(run, s) for s in ("filter", "score", "select")]
            groups.setdefault(repr((entry, extract, stages)), []).append(run)
        return {
            "_vs_".join(runs): runs
            for runs in groups.values()
            if len({self.settings(run, "extract")["layer"] for run in runs}) > 1
        }

    def comparison_runs(self, group: str) -> list[tuple[str, str, str]]:
        """``(run, scores, filtered dataset)`` of each run of a comparison group."""
        return [
            (run, f"results/{run}/score/scores.parquet", self.filtered_path(run))
            for run in self.comparison_groups()[group]
        ]

    def layer_runs(self, group: str) -> list[tuple[str, int, str, str]]:
        """``(run, layer, spectrum, scores)`` of each run of a layer ablation."""
        return [
            (run, self.settings(run, "extract")["layer"], f"results/{run}/score/spectrum.json",
             f"results/{run}/score/scores.parquet")
            for run in self.layer_groups()[group]
        ]

    # -- targets -----------------------------------------------------------------------

    def plot_targets(self, run: str) -> list[str]:
        """The figures and tables of one run."""
        formats = self.config["plots"]["formats"]
        files = [f"results/{run}/plots/{stem}.{fmt}" for stem in RUN_FIGURES for fmt in formats]
        return files + [f"results/{run}/plots/{name}" for name in RUN_TABLES]

    def comparison_targets(self) -> list[str]:
        """The cross-run figures and tables of every comparison group."""
        formats = self.config["plots"]["formats"]
        targets = []
        for group in self.comparison_groups():
            targets += [
                f"results/compare/{group}/{stem}.{fmt}"
                for stem in COMPARISON_FIGURES
                for fmt in formats
            ]
            targets += [f"results/compare/{group}/comparison.{ext}" for ext in ("csv", "tex")]
        return targets

    def layer_targets(self) -> list[str]:
        """The figure and tables of every layer ablation."""
        kinds = (*self.config["plots"]["formats"], "csv", "tex")
        return [
            f"results/layers/{group}/layer_ablation.{kind}"
            for group in self.layer_groups()
            for kind in kinds
        ]

    def all_targets(self) -> list[str]:
        """Every file the default target builds, for every run."""
        targets = []
        for run in self.runs:
            targets += [
                f"results/{run}/validate/report.json",
                self.filtered_path(run),
                *self.shard_dirs(run),
                # Asked for here, not only by the selections (after scoring), so that its
                # job runs beside extraction and the selections wait for nothing more.
                self.digests_path(run),
                f"results/{run}/score/importance_scores.jsonl",
                f"results/{run}/select/summary.csv",
                *self.plot_targets(run),
                f"results/{run}/browse",
            ]
        return targets + self.layer_targets() + self.comparison_targets()


def features_mem_mb(shard_dirs: Sequence[str | os.PathLike]) -> int:
    """Memory (MB) of a job holding all of a run's representations, preprocessed
    (float32), and a float64 block, with margin: 3x the features files + 2 GB."""
    files = (os.path.join(shard, "features.npy") for shard in shard_dirs)
    size = sum(os.path.getsize(path) for path in files if os.path.exists(path))
    return 3 * size // 2**20 + 2000
