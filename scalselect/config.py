"""Checks of the workflow configuration that run when the DAG is built, before any job.

Pure functions, each returning the problems it finds as short messages (an empty list
when all is well), so that the workflow reports every problem of a configuration in one
error instead of stopping at the first:

- :func:`schema_problems`: the configuration against ``config/schema.yaml``, one line
  per wrong key (its path, what was expected, the closest valid key), never a dump of
  the schema.
- :func:`budget_problems`: percentages above 100% or at 0% of the scored samples;
  :func:`count_budget_problems` and :func:`shard_count_problems` (run by ``filter``):
  counts above the filtered samples, and more extract shards than filtered samples.
- :func:`kmeans_budget_problems`: budgets smaller than the k-means clusters (a warning:
  the k-means baseline is then not cluster-balanced).
- :func:`model_problems`: a model path that is neither a folder nor in the local
  Hugging Face cache, or a checkpoint whose ``config.json`` is not of the configured
  ``model.type``.
- :func:`path_problems`: a dataset file or image root that does not exist.
- :func:`shard_group_problems`: with the SLURM profile, extract shards per job whose
  summed time limit exceeds the time limit of the job that runs them.

Files under :data:`WORKFLOW_MADE` (the demo's dataset and models) are made by a rule of
the workflow and are not checked before they exist.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scalselect.budgets import Budget, BudgetError
from scalselect.locations import check, is_url

WORKFLOW_MADE = "resources/"


def made_by_workflow(path: str) -> bool:
    """Whether ``path`` is a file a rule of this workflow makes (``resources/...``)."""
    return path.startswith(WORKFLOW_MADE)


def _key_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _closest(word: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f", did you mean {match[0]!r}?" if match else ""


def _schema_message(error: Any) -> list[str]:
    """Short messages for one ``jsonschema.ValidationError``."""
    where = _key_path(error.absolute_path)
    schema = error.schema
    if error.validator == "additionalProperties":
        known = list(schema.get("properties", {}))
        prefix = f"{where}." if error.absolute_path else ""
        messages = []
        for key in sorted(set(error.instance) - set(known)):
            hint = _closest(key, known) or f" (valid keys here: {', '.join(known)})"
            messages.append(f"{prefix}{key}: unknown key{hint}")
        return messages
    value = json.dumps(error.instance, ensure_ascii=False)
    if error.validator == "enum":
        options = [str(option) for option in error.validator_value]
        return [
            f"{where}: {value} is not one of {', '.join(options)}"
            f"{_closest(str(error.instance), options)}"
        ]
    if error.validator == "required":
        return [f"{where}: missing key {error.message.split(' is a required')[0]}"]
    if error.validator in ("anyOf", "oneOf") and "description" in schema:
        return [f"{where}: {value} is not {schema['description']}"]
    if error.validator == "type":
        return [f"{where}: expected {error.validator_value}, got {value}"]
    return [f"{where}: {error.message}"]


def schema_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every violation of ``schema`` (JSON Schema 2020-12) in ``config``, one short line
    each, sorted by key path; unknown keys name the closest valid key."""
    from jsonschema import Draft202012Validator

    problems = []
    for error in Draft202012Validator(schema).iter_errors(config):
        problems += _schema_message(error)
    return sorted(problems)


def budget_problems(budgets: Sequence[int | str]) -> list[str]:
    """Budgets that no number of scored samples can satisfy: one that is no budget, a
    percentage above 100% or at 0%. Counts and their digit strings (``"50"``, as
    ``--config`` passes them) are fine here; a count above the dataset's size is found by
    ``filter``."""
    problems = []
    for budget in budgets:
        try:
            problem = Budget.parse(budget).problem()
        except BudgetError as error:
            problem = str(error)
        if problem:
            problems.append(problem)
    return problems


def count_budget_problems(budgets: Sequence[int | str], n_kept: int) -> list[str]:
    """Count budgets larger than the ``n_kept`` samples that passed the filter (no
    scoring can reach them; percentages always fit)."""
    counts = [(budget, Budget.parse(budget).count) for budget in budgets]
    return [
        f"{budget!r} asks for more samples than the {n_kept} that passed the filter"
        for budget, count in counts
        if count is not None and count > n_kept
    ]


def shard_count_problems(shards: int, n_kept: int) -> list[str]:
    """More extract shards than the ``n_kept`` samples that passed the filter: some shards
    would hold no sample, and each would fail as its own extract job (after its own
    queue wait on a cluster), so ``filter`` refuses the configuration first.

    >>> shard_count_problems(4, 248)
    []
    >>> shard_count_problems(300, 248)[0][:60]
    'extract.shards is 300 but only 248 samples passed the filter'
    """
    if shards <= n_kept:
        return []
    return [
        f"extract.shards is {shards} but only {n_kept} samples passed the filter: "
        f"{shards - n_kept} of the shards would hold no sample; set extract.shards to at "
        f"most {n_kept}"
    ]


def kmeans_budget_problems(
    clusters: int, budgets: Sequence[int | str], n_scored: int | None = None
) -> list[str]:
    """Budgets that pick fewer samples than the k-means baseline has clusters: it then
    takes one sample from each of the largest clusters and none from the others, so it
    is not cluster-balanced. A warning, with the fix, not an error: one clustering
    serves every budget, and the larger budgets may want the clusters.

    Percentages are checked only when ``n_scored`` (the scored samples) is given.

    >>> kmeans_budget_problems(8, [32, "16%"], 248)
    []
    >>> kmeans_budget_problems(100, [20, "25%", 500])  # doctest: +NORMALIZE_WHITESPACE
    ['budget 20 picks 20 samples but select.kmeans_clusters is 100: k-means takes one
      sample from each of the 20 largest clusters and none from the other 80; set
      select.kmeans_clusters to at most 20 (one clustering serves every budget) or leave
      kmeans out of select.methods']
    """
    problems = []
    for budget in budgets:
        parsed = Budget.parse(budget)
        if parsed.is_percentage and n_scored is None:
            continue
        n = parsed.count if n_scored is None else parsed.resolve(n_scored)
        if n < clusters:
            problems.append(
                f"budget {budget} picks {n} samples but select.kmeans_clusters is {clusters}:"
                f" k-means takes one sample from each of the {n} largest clusters and none"
                f" from the other {clusters - n}; set select.kmeans_clusters to at most {n}"
                " (one clustering serves every budget) or leave kmeans out of select.methods"
            )
    return problems


def checkpoint_config(path: str) -> Path | None:
    """The ``config.json`` of a model: in its folder, else in the local Hugging Face
    cache (hub name); None when neither has it."""
    if os.path.isdir(path):
        candidate = Path(path) / "config.json"
        return candidate if candidate.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(path, "config.json")
    except ValueError:  # not a valid hub name either (e.g. a missing absolute path)
        return None
    return Path(cached) if isinstance(cached, str) else None


def model_problems(path: str, model_type: str) -> list[str]:
    """Whether the model at ``path`` exists and is of ``model_type`` (``llava``/``qwen``)."""
    from scalselect.settings import MODEL_TYPES

    config_file = checkpoint_config(path)
    if config_file is None:
        if os.path.isdir(path):
            return [f"model.path {path!r} is a folder without config.json"]
        return [
            f"model.path {path!r} is neither a folder nor a model in the local Hugging Face"
            " cache (download it first, e.g. `hf download NAME`, or give its folder)"
        ]
    try:
        found = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as error:
        return [f"model.path {path!r}: cannot read {config_file}: {error}"]
    if found in MODEL_TYPES.get(model_type, ()):
        return []
    fitting = [name for name, types in MODEL_TYPES.items() if found in types]
    hint = f"; set model.type: {fitting[0]}" if fitting else " (not a supported model)"
    return [
        f"model.type is {model_type!r} but {config_file} says model_type {found!r}{hint}"
    ]


def _relative(path: str) -> str:
    """Where a relative path was looked for: the working directory, not the config
    file's folder (README, "Your own dataset and model")."""
    return "" if os.path.isabs(path) else f" in {os.getcwd()}, the folder Snakemake runs in"


def path_problems(entry: Mapping[str, Any]) -> list[str]:
    """A run's dataset file or image root that does not exist (unless a rule makes it),
    cannot be read, or is a URL carrying a credential. A URL is asked for once (with
    retries): a missing object, refused access, a wrong endpoint or expired credentials
    are found here, before any job."""
    problems = []
    dataset, image_root = entry["dataset"], entry.get("image_root", ".")
    for name, value, folder in (("dataset", dataset, False), ("image_root", image_root, True)):
        if made_by_workflow(value):
            continue
        if is_url(value):
            problem = check(value, folder=folder)
            if problem:
                problems.append(f"{name}: {problem}")
        elif folder and not os.path.isdir(value):
            problems.append(
                f"image_root {value!r} does not exist{_relative(value)} (or is not a folder)")
        elif not folder and not os.path.isfile(value):
            problems.append(
                f"dataset {value!r} does not exist{_relative(value)} (or is not a file)")
    return problems


def run_problems(run: str, entry: Mapping[str, Any], select: Mapping[str, Any]) -> list[str]:
    """Every problem of one run (paths, model, budgets), each prefixed ``runs.<run>:``.

    ``entry`` is the validated run entry, ``select`` the run's select settings.
    """
    problems = path_problems(entry)
    model = entry["model"]
    if not made_by_workflow(model["path"]):
        problems += model_problems(model["path"], model["type"])
    problems += [f"select.budgets: {p}" for p in budget_problems(select["budgets"])]
    return [f"runs.{run}: {problem}" for problem in problems]


def _duration(minutes: int) -> str:
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes} min"


def shard_group_problems(shards_per_job: int, shard_minutes: int, job_minutes: int) -> list[str]:
    """Extract shards run one after another in one SLURM job (a Snakemake job group):
    their summed time limit must fit the job's.

    Parameters
    ----------
    shards_per_job : int
        Shards one job runs (``SCALSELECT_SHARDS_PER_JOB``).
    shard_minutes : int
        Time limit of one shard in minutes (``SCALSELECT_SHARD_RUNTIME``).
    job_minutes : int
        Time limit of one extract job in minutes (``SCALSELECT_EXTRACT_RUNTIME``).

    Returns
    -------
    list of str
        One message when the shards do not fit, else nothing. Snakemake would ask
        sbatch for ``shards_per_job * shard_minutes``; over the partition's limit such a
        job never starts, and nothing says why.
    """
    if shards_per_job < 1:
        return [f"SCALSELECT_SHARDS_PER_JOB={shards_per_job}: must be 1 or more"]
    total = shards_per_job * shard_minutes
    if total <= job_minutes:
        return []
    return [
        f"SCALSELECT_SHARDS_PER_JOB={shards_per_job} shards x SCALSELECT_SHARD_RUNTIME="
        f"{_duration(shard_minutes)} = {_duration(total)} exceeds SCALSELECT_EXTRACT_RUNTIME="
        f"{_duration(job_minutes)}, the time limit of one extract job: set "
        f"SCALSELECT_SHARD_RUNTIME to at most {_duration(job_minutes // shards_per_job)} "
        "(the time one shard takes), raise SCALSELECT_EXTRACT_RUNTIME or run fewer "
        "shards per job"
    ]


def problem_report(problems: Sequence[str], what: str) -> str:
    """One message listing every problem of ``what`` (e.g. the configuration)."""
    count = f"{len(problems)} problem{'s' * (len(problems) > 1)}"
    lines = "\n".join(f"  {problem}" for problem in problems)
    return f"{what}: {count}, nothing was run:\n{lines}"
