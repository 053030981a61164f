"""Queue waits of a workflow run on SLURM: sbatch submissions and dependent levels.

snakemake-executor-plugin-slurm submits a job only once its inputs exist (never with
``--dependency``), so every level of dependent submissions waits in the queue again.

    python bench/slurm_levels.py dag  [SNAKEMAKE ARGS...]   # planned, from the DAG
    python bench/slurm_levels.py sacct WORKDIR             # what ran, from accounting

``dag`` runs ``snakemake --profile slurm --dry-run --dag ARGS`` in the current directory
and counts the submissions and levels that DAG makes: jobs of a rule listed under
``groups:`` in ``slurm/config.yaml`` that are connected share one submission (Snakemake's
job groups; ``group-components`` is not modelled); the target ``all`` and the rules
named under ``localrules:`` submit nothing. A dry run's DAG holds a checkpoint's
downstream jobs only as far as they are known before it runs. ``sacct`` reads every
job submitted from WORKDIR in the last day.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Submission:
    """One sbatch job: its comment (rule or group) and accounting times."""

    job_id: int
    comment: str
    submit: datetime
    start: datetime
    end: datetime


def sacct_submissions(workdir: Path, env: Mapping[str, str] | None = None) -> list[Submission]:
    """Every job submitted from ``workdir`` in the last day, by job id."""
    out = subprocess.run(
        ["sacct", "--allusers", "--allocations", "--noheader", "--parsable2",
         "--starttime", "now-1days", "--format", "JobID,Comment,Submit,Start,End,WorkDir"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    jobs = []
    for line in out.splitlines():
        job_id, comment, submit, start, end, job_workdir = line.split("|")
        if Path(job_workdir) == workdir:
            times = [datetime.fromisoformat(t) for t in (submit, start, end)]
            jobs.append(Submission(int(job_id), comment, *times))
    return sorted(jobs, key=lambda job: job.job_id)


def sacct_levels(jobs: Sequence[Submission]) -> dict[int, int]:
    """Job id -> its level: 1 + the highest level among the jobs that had ended when it
    was submitted (1 when none had). The largest level is the number of queue waits one
    after another, whatever the DAG said."""
    levels: dict[int, int] = {}
    for job in sorted(jobs, key=lambda j: j.submit):
        before = [levels[j.job_id] for j in jobs if j.job_id in levels and j.end <= job.submit]
        levels[job.job_id] = 1 + max(before, default=0)
    return levels


def profile_groups(profile: Path) -> dict[str, str]:
    """Rule -> group, from the profile's ``groups:`` (its plain, unconditional entries)."""
    text = profile.read_text()
    groups = yaml.safe_load(text).get("groups") or {}
    return {rule: group for rule, group in groups.items() if not rule.startswith("?")}


def workflow_localrules(root: Path) -> set[str]:
    """The target rule ``all`` and every rule a ``localrules:`` directive names."""
    local = {"all"}
    for path in [root / "Snakefile", *sorted((root / "rules").glob("*.smk"))]:
        for block in re.findall(r"^localrules:((?:\s+\w+,)+)", path.read_text(), re.M):
            local.update(re.findall(r"\w+", block))
    return local


def dag_levels(dot: str, groups: Mapping[str, str], local: set[str]) -> tuple[int, int]:
    """(submissions, levels) of a ``snakemake --dag`` graph under ``groups``; the rules
    in ``local`` run where Snakemake runs."""
    rules = {int(n): r for n, r in re.findall(r'^\s*(\d+)\[label = "(\w+)', dot, re.M)}
    edges = [(int(a), int(b)) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M)]
    parents: dict[int, list[int]] = {node: [] for node in rules}
    for parent, child in edges:
        parents[child].append(parent)
    remote = {n for n, rule in rules.items() if rule not in local}

    def group(node: int) -> str | None:
        return groups.get(rules[node])

    level: dict[int, int] = {}

    def visit(node: int) -> int:
        if node not in level:
            level[node] = max(
                (visit(p) + (0 if group(p) is not None and group(p) == group(node) else 1)
                 for p in parents[node] if p in remote),
                default=1,
            )
        return level[node]

    # One submission per connected set of same-group jobs, one per ungrouped job.
    owner = {n: n for n in remote}

    def root(node: int) -> int:
        while owner[node] != node:
            node = owner[node]
        return node

    for parent, child in edges:
        if parent in remote and child in remote and group(parent) and group(parent) == group(child):
            owner[root(child)] = root(parent)
    return len({root(n) for n in remote}), max(visit(n) for n in remote)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("dag", help="planned submissions and levels of a dry run")
    acct = sub.add_parser("sacct", help="submissions and levels of what ran")
    acct.add_argument("workdir", type=Path)
    # `dag` passes every argument it does not know to snakemake.
    args, extra = parser.parse_known_args(argv)
    if extra and args.mode != "dag":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.mode == "dag":
        command = [str(Path(sys.executable).parent / "snakemake"), "--profile", "slurm",
                   "--dry-run", *extra]
        dot = subprocess.run(
            [*command, "--dag"], capture_output=True, text=True, check=True
        ).stdout
        local = workflow_localrules(Path("."))
        groups = profile_groups(Path("slurm/config.yaml"))
        submissions, levels = dag_levels(dot, groups, local)
        print(f"planned: {submissions} sbatch submissions, {levels} dependent levels")
    else:
        jobs = sacct_submissions(args.workdir.resolve())
        levels = sacct_levels(jobs)
        for job in jobs:
            wait = (job.start - job.submit).total_seconds()
            print(f"{job.job_id} level {levels[job.job_id]} queued {wait:.0f} s {job.comment}")
        print(f"ran: {len(jobs)} sbatch submissions, {max(levels.values(), default=0)} "
              "dependent levels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
