"""`snakemake --profile slurm` on a real one-node SLURM cluster (tests/slurm/cluster.sh).

The demo's LLaVA run, cut into two shards (so that one can fail while the other
completes; a few minutes on 2 cores), runs in a temporary copy of the repository with
the shipped profile unchanged; the cluster's partition and account come from
SBATCH_PARTITION / SBATCH_ACCOUNT, as a user would set theirs. The only extra flags make
status checks quick for a tiny run. Accounting (slurmdbd) is real, so `sacct` tells
which jobs went through sbatch.

One sequence of runs, each asserting what was submitted:
1. a fresh run with one extraction shard made to crash (a fault injected from outside
   the product: tests/slurm/fault/sitecustomize.py) fails that shard and reports its log,
   while everything independent of it completes;
2. with the fault removed, a rerun submits only that shard and what depends on it;
3. an unchanged rerun submits nothing;
4. a new selection budget submits only selection and plot jobs;
5. the run again from scratch (the feature store kept) with both shards in one GPU job
   (SCALSELECT_SHARDS_PER_JOB): one sbatch job runs both, asking for one GPU and their
   summed time; the run waits in the queue 4 times (counted from sacct's submit and end
   times); scores and selections are byte-identical to those of runs 1-4.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_workflow, workflow_env

sys.path.insert(0, str(REPO / "bench"))
from slurm_levels import sacct_levels  # noqa: E402

# Every test here runs Snakemake (and SLURM): `make test-fast` leaves them out.
pytestmark = pytest.mark.integration

CLUSTER_SH = REPO / "tests/slurm/cluster.sh"
FAULT_DIR = REPO / "tests/slurm/fault"
# The test cluster's non-default partition and non-default account: seeing them in
# sacct proves the user's settings reached sbatch.
PARTITION = "gpu"
ACCOUNT = "ci-project"
# Quick status checks for a small run (the profile's values suit real clusters).
FAST_STATUS = (
    "--slurm-init-seconds-before-status-checks", "2",
    "--seconds-between-status-checks", "2",
)
RUN, SHARDS = "demo-llava", 2
# The shard made to fail.
FAULT_SHARD = 1
NEW_BUDGET = 24
GPU_RULES = {"extract", "plots_gallery"}
# Group `methods` (slurm/config.yaml) runs with the gallery: on the GPU partition.
GPU_PARTITION_RULES = GPU_RULES | {
    "plots_methods", "select_kcenter", "select_kmeans_clusters", "select_kmeans", "browse",
}
# Queue waits of one run: validate+filter, extract, cur, selection and figures.
LEVELS = 4
# Rules whose memory follows the size of the run's features (README, "Running on SLURM").
FEATURE_SIZED_RULES = {"select_kcenter", "select_kmeans_clusters", "plots_methods"}
SELECTION_RULES = {
    "select", "select_random", "select_summary", "select_export", "select_kcenter",
    "select_kmeans", "plots",
    "plots_compare", "plots_methods", "plots_scores", "plots_gallery", "browse",
}
# Rules that run where Snakemake runs: the target, the demo's builder and `sources`.
LOCAL_RULES = {"all", "demo", "sources"}
RULES = set(re.findall(
    r"^(?:rule|checkpoint) (\w+):", "".join(p.read_text() for p in (REPO / "rules").glob("*.smk")),
    flags=re.MULTILINE,
))


def _why_not_runnable() -> str | None:
    if os.geteuid() != 0:
        return "the test SLURM cluster needs root (it installs Debian packages and starts daemons)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and apt-get is not available to install it"
    return None


needs_cluster = pytest.mark.skipif(
    _why_not_runnable() is not None, reason=str(_why_not_runnable())
)


@dataclass(frozen=True)
class SlurmJob:
    """One sbatch submission as sacct records it. ``rule`` is the rule, or for a job
    group ``<group>_<its rules, sorted, joined by _>`` (the plugin's comment)."""

    job_id: int
    rule: str
    wildcards: str
    state: str
    partition: str
    account: str
    req_tres: str
    alloc_tres: str
    timelimit: str
    submit: datetime
    start: datetime
    end: datetime

    @property
    def rules(self) -> set[str]:
        """The rules this job ran: its rule, or the rules of its group."""
        if self.rule in RULES:
            return {self.rule}
        group, _, names = self.rule.partition("_")
        found, words = set(), names.split("_")
        while words:  # the longest rule name at the front first (select_random, select)
            size = next(n for n in range(len(words), 0, -1) if "_".join(words[:n]) in RULES)
            found.add("_".join(words[:size]))
            words = words[size:]
        return found

    @property
    def group(self) -> str | None:
        return None if self.rule in RULES else self.rule.partition("_")[0]


def _cluster(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), command], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """Environment of a user of the test cluster; starts it, stops it if it started it."""
    was_running = _cluster("status").returncode == 0
    started = _cluster("start")
    assert started.returncode == 0, started.stdout + started.stderr
    conf = re.search(r"SLURM_CONF=(\S+)", _cluster("env").stdout).group(1)
    env = workflow_env()
    env.update(SLURM_CONF=conf, SBATCH_PARTITION=PARTITION, SBATCH_ACCOUNT=ACCOUNT)
    yield env
    if not was_running:
        _cluster("stop")


def sacct_jobs(env: dict[str, str], workdir: Path) -> list[SlurmJob]:
    """Every job submitted from ``workdir``, oldest first."""
    out = subprocess.run(
        ["sacct", "--allusers", "--allocations", "--noheader", "--parsable2",
         "--starttime", "now-1days",
         "--format", "JobID,Comment,State,Partition,Account,ReqTRES,AllocTRES,Timelimit,"
         "Submit,Start,End,WorkDir"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    jobs = []
    for line in out.splitlines():
        (job_id, comment, state, partition, account, req, alloc, timelimit,
         *times, job_workdir) = line.split("|")
        if Path(job_workdir) != workdir:
            continue
        match = re.fullmatch(r"rule_(.+?)(?:_wildcards_(.*))?", comment)
        assert match, f"job {job_id} has no rule comment: {comment!r}"
        jobs.append(SlurmJob(int(job_id), match[1], match[2] or "", state.split()[0],
                             partition, account, req, alloc, timelimit,
                             *map(datetime.fromisoformat, times)))
    return sorted(jobs, key=lambda job: job.job_id)


def job_steps(env: dict[str, str], job_id: int) -> list[tuple[datetime, datetime, str]]:
    """(start, end, command line) of each srun step of a job, in start order."""
    out = subprocess.run(
        ["sacct", "-j", str(job_id), "--noheader", "--parsable2",
         "--format", "JobID,Start,End,SubmitLine"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    steps = []
    for line in out.splitlines():
        step, start, end, command = line.split("|", 3)
        if re.fullmatch(rf"{job_id}\.\d+", step):
            steps.append((datetime.fromisoformat(start), datetime.fromisoformat(end), command))
    return sorted(steps)


def run_profile(
    env: dict[str, str], workdir: Path
) -> tuple[subprocess.CompletedProcess, list[SlurmJob]]:
    """``snakemake --profile slurm`` in ``workdir``; returns the run and the jobs it
    submitted."""
    before = {job.job_id for job in sacct_jobs(env, workdir)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--profile", "slurm", *FAST_STATUS],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
    )
    new = [job for job in sacct_jobs(env, workdir) if job.job_id not in before]
    return result, new


def submissions(output: str) -> set[tuple[int, str]]:
    """(SLURM job id, rule or group name) of every job Snakemake's output says it
    submitted."""
    found = re.findall(
        r"has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/(?:rule|group)_(\w+)/",
        output,
    )
    return {(int(job_id), rule) for job_id, rule in found}


def assert_all_jobs_submitted(output: str, jobs: list[SlurmJob]) -> None:
    """Every job of a successful run went through sbatch, alone or in its group; only
    the target rule `all` and the demo's builder ran locally. (A failed run's output
    also holds the failed job's log, which names rules.)"""
    ran = re.findall(r"^ *(rule|checkpoint|localrule) (\w+):$", output, flags=re.MULTILINE)
    assert {rule for kind, rule in ran if kind == "localrule"} <= LOCAL_RULES, ran
    remote = {rule for kind, rule in ran if kind != "localrule"}
    assert remote == set().union(*(job.rules for job in jobs)), (remote, jobs)
    assert submissions(output) == {(job.job_id, job.rule) for job in jobs}


def queue_levels(jobs: list[SlurmJob]) -> int:
    """Dependent submission levels: the longest chain of jobs each submitted after the
    previous one ended, from sacct's times (bench/slurm_levels.py)."""
    return max(sacct_levels(jobs).values())


def planned_resources(env: dict[str, str], workdir: Path) -> dict[str, str]:
    """Rule -> the resources line of its first job in a dry run with the slurm profile."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--profile", "slurm", "--dry-run"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    # Jobs of a group are printed indented under their group.
    found = re.findall(r"^( *)rule (\w+):\n(?:\1    .*\n)*?\1    resources: (.*)$",
                       result.stdout, flags=re.MULTILINE)
    return {rule: resources for _, rule, resources in reversed(found)}


def test_profile_takes_site_settings_from_the_environment(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "workflow")
    env = workflow_env()
    for name in list(env):
        if name.startswith(("SBATCH_", "SCALSELECT_")):
            del env[name]
    plain = planned_resources(env, workdir)
    assert "slurm_partition" not in plain["validate"] and "slurm_account" not in plain["validate"]
    assert "gpu=1" in plain["extract"] and "gpu_model" not in plain["extract"]
    assert "runtime=120" in plain["validate"] and "runtime=720" in plain["extract"]
    assert "gpu=" not in plain["validate"]

    env.update(SBATCH_PARTITION="a100-queue", SBATCH_ACCOUNT="lab42",
               SCALSELECT_GPU_MODEL="a100", SCALSELECT_GPUS="4",
               SCALSELECT_EXTRACT_RUNTIME="2d", SCALSELECT_RUNTIME="30m")
    site = planned_resources(env, workdir)
    for rule in ("validate", "extract"):
        assert "slurm_partition=a100-queue" in site[rule] and "slurm_account=lab42" in site[rule]
    assert "gpu=4" in site["extract"] and "gpu_model=a100" in site["extract"]
    assert "runtime=2880" in site["extract"] and "runtime=30" in site["validate"]


def test_shards_per_job_must_fit_the_extract_time_limit(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "workflow")
    env = workflow_env()
    for name in list(env):
        if name.startswith(("SBATCH_", "SCALSELECT_")):
            del env[name]
    # Four shards per job at the default 12 h per shard would ask for 48 h.
    env.update(SCALSELECT_SHARDS_PER_JOB="4")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--profile", "slurm", "--dry-run"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (
        "SLURM profile: 1 problem, nothing was run:\n  SCALSELECT_SHARDS_PER_JOB=4 shards x"
        " SCALSELECT_SHARD_RUNTIME=12h = 48h exceeds SCALSELECT_EXTRACT_RUNTIME=12h"
    ) in output, output[-3000:]
    assert "Traceback" not in output
    env.update(SCALSELECT_SHARD_RUNTIME="3h")
    assert "runtime=180," in planned_resources(env, workdir)["extract"]


def readme_memory_table() -> dict[str, int]:
    """Variable -> default memory in MB, from the README's SLURM table."""
    section = (REPO / "README.md").read_text().split("## Running on SLURM")[1].split("\n## ")[0]
    table = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 3 and "MEM_MB" in cells[0]:
            table[re.search(r"`(\w*MEM_MB)`", cells[0]).group(1)] = int(cells[2].split(",")[0])
    return table


def test_gpu_jobs_get_their_own_partition_and_the_documented_memory(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "workflow")
    env = workflow_env()
    for name in list(env):
        if name.startswith(("SBATCH_", "SCALSELECT_")):
            del env[name]
    memory = readme_memory_table()
    plain = planned_resources(env, workdir)
    assert GPU_RULES <= set(plain) and len(plain) > len(GPU_RULES)
    for rule, resources in plain.items():
        if rule in FEATURE_SIZED_RULES:
            # 3 x the features files + 2000 MB; a dry run has no features yet.
            expected = 2000
        else:
            expected = memory["SCALSELECT_EXTRACT_MEM_MB" if rule in GPU_RULES else "SCALSELECT_MEM_MB"]
        assert f"mem_mb={expected}," in resources, (rule, resources)

    env.update(SBATCH_PARTITION="cpu-queue", SCALSELECT_GPU_PARTITION="gpu-queue")
    site = planned_resources(env, workdir)
    assert "plots_methods" in site
    for rule, resources in site.items():
        partition = "gpu-queue" if rule in GPU_PARTITION_RULES else "cpu-queue"
        assert f"slurm_partition={partition}" in resources, (rule, resources)

    # Without a GPU partition of its own, every job goes to SBATCH_PARTITION.
    del env["SCALSELECT_GPU_PARTITION"]
    for rule, resources in planned_resources(env, workdir).items():
        assert "slurm_partition=cpu-queue" in resources, (rule, resources)


@pytest.mark.slow
@needs_cluster
def test_demo_on_slurm(slurm_env: dict[str, str], tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path / "workflow")
    (workdir / ".venv").symlink_to(REPO / ".venv")
    config_path = workdir / "config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["runs"] = {RUN: config["runs"][RUN]}
    config["extract"]["shards"] = SHARDS
    # The baselines run like any other job; the local workflow tests cover them.
    config["select"]["methods"] = ["scalselect", "random"]
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    shard = f"shard-{FAULT_SHARD}-of-{SHARDS}"
    fault_env = dict(slurm_env)
    fault_env["PYTHONPATH"] = str(FAULT_DIR)
    fault_env["SCALSELECT_FAULT_MATCH"] = f"--out results/{RUN}/extract/{shard}"

    # 1. Fresh run, one shard crashes.
    result, jobs = run_profile(fault_env, workdir)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    # Every job went through sbatch (the target rule `all` is local), into the user's
    # partition and account.
    assert jobs, "no job went through sbatch:\n" + output[-3000:]
    assert submissions(output) == {(job.job_id, job.rule) for job in jobs}
    assert {(job.partition, job.account) for job in jobs} == {(PARTITION, ACCOUNT)}
    # Extract jobs asked for a GPU and got one; only model jobs did.
    extract_jobs = [job for job in jobs if job.rule == "extract"]
    assert len(extract_jobs) == SHARDS
    for job in extract_jobs:
        assert "gres/gpu=1" in job.req_tres and "gres/gpu=1" in job.alloc_tres, job
    assert all("gres/gpu" not in job.req_tres for job in jobs if job.rule not in GPU_RULES)
    assert "scalselect.launch --processes 1 extract" in output
    # The crashed shard is reported as failed, with its log.
    failed = [job for job in jobs if job.state != "COMPLETED"]
    assert [(job.rule, job.wildcards, job.state) for job in failed] == [
        ("extract", f"{RUN}_{FAULT_SHARD}_{SHARDS}", "FAILED")
    ], failed
    assert f"SLURM-job '{failed[0].job_id}' failed" in output
    assert f"results/{RUN}/logs/extract/{shard}.log" in output
    assert "injected fault" in output  # the log's content, shown by the profile
    # Extract jobs saw the GPUs SLURM gave them (fake ones: torch then uses the CPU).
    for i in range(SHARDS):
        log = (workdir / f"results/{RUN}/logs/extract/shard-{i}-of-{SHARDS}.log").read_text()
        assert re.match(r"CUDA_VISIBLE_DEVICES=\d", log), log[-2000:]
    # What does not depend on the failed shard completed (keep-going).
    ok_shard = f"shard-{1 - FAULT_SHARD}-of-{SHARDS}"
    assert (workdir / f"results/{RUN}/extract/{ok_shard}/manifest.json").exists()
    assert (workdir / f"results/{RUN}/score/partials/{ok_shard}.npz").exists()
    assert not (workdir / f"results/{RUN}/score/importance_scores.jsonl").exists()
    # `status` tells the same from the files: the crashed shard failed, with its log.
    found = json.loads(subprocess.run(
        [sys.executable, "-m", "scalselect", "status", "--configfile", "config/config.yaml",
         "--json"], cwd=workdir, capture_output=True, text=True, check=True).stdout)
    states = {s["name"]: s for s in found["runs"][RUN]["shards"]}
    assert states[ok_shard]["state"] == "done"
    assert states[shard]["state"] == "failed"
    assert states[shard]["detail"].startswith(f"results/{RUN}/logs/extract/{shard}.log: ")
    assert found["runs"][RUN]["stages"]["extract"]["state"] == "failed"

    # 2. Fault removed: only that shard and what depends on it.
    result, jobs = run_profile(slurm_env, workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert all(job.state == "COMPLETED" for job in jobs), jobs
    assert_all_jobs_submitted(output, jobs)
    submitted = Counter(job.rule for job in jobs)
    assert (jobs[0].rule, jobs[0].wildcards) == ("extract", f"{RUN}_{FAULT_SHARD}_{SHARDS}")
    # The shard's moments came with it; scoring is one job; selection and figures in
    # group jobs (one per set of connected jobs: the gallery and the browser need no
    # other), side by side.
    assert submitted["extract"] == 1 and submitted["cur"] == 1, submitted
    assert {job.group for job in jobs if job.group} == {"methods", "select"}, jobs
    assert len(jobs) == 2 + 5, jobs
    assert not {"demo", "validate", "filter"} & set().union(*(job.rules for job in jobs))
    assert queue_levels(jobs) == LEVELS - 1
    assert (workdir / f"results/{RUN}/score/importance_scores.jsonl").exists()

    # 3. Unchanged: nothing is submitted.
    result, jobs = run_profile(slurm_env, workdir)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert jobs == []
    assert "Nothing to be done" in result.stdout + result.stderr

    # 4. A new budget: only selection and plot jobs.
    assert not (workdir / f"results/{RUN}/select/top-{NEW_BUDGET}.json").exists()
    config["select"]["budgets"].append(NEW_BUDGET)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    result, jobs = run_profile(slurm_env, workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert_all_jobs_submitted(output, jobs)
    # Snakemake prints every job of a group it submits.
    submitted = Counter(re.findall(r"^ *rule (\w+):$", output, flags=re.MULTILINE))
    n_seeds = len(config["select"]["random_seeds"])
    assert submitted["select"] == 1 and submitted["select_random"] == n_seeds, submitted
    assert set(submitted) <= SELECTION_RULES, submitted
    assert {job.group for job in jobs} <= {"select", "methods"} and len(jobs) <= 3, jobs
    assert queue_levels(jobs) == 1
    assert (workdir / f"results/{RUN}/select/top-{NEW_BUDGET}.json").exists()

    # 5. From scratch (the feature store kept), both shards in one GPU job.
    results = workdir / f"results/{RUN}"
    # (model.npz is a zip stamped with the time it was written: its arrays are in scores.)
    kept = {path: path.read_bytes() for path in results.glob("score/*.*[!z]")}
    kept |= {path: path.read_bytes() for path in results.glob("select/*.json")}
    assert len(kept) == 3 + len(list(results.glob("select/*.json"))) > 3, kept
    shutil.rmtree(results)
    grouped_env = dict(slurm_env, SCALSELECT_SHARDS_PER_JOB=str(SHARDS),
                       SCALSELECT_SHARD_RUNTIME="30m", SCALSELECT_EXTRACT_RUNTIME="1h")
    result, jobs = run_profile(grouped_env, workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert all(job.state == "COMPLETED" for job in jobs), jobs
    assert_all_jobs_submitted(output, jobs)
    assert queue_levels(jobs) == LEVELS, [(job.rule, job.submit, job.end) for job in jobs]
    [extract] = [job for job in jobs if "extract" in job.rules]
    assert extract.group == "extract", extract
    # One GPU and the shards' summed time (2 x 30 min), not two GPUs for 30 min.
    assert "gres/gpu=1" in extract.alloc_tres and extract.timelimit == "01:00:00", extract
    # Its job steps (one srun per shard) ran the shards one after another.
    steps = job_steps(slurm_env, extract.job_id)
    shards = sorted(re.search(r"--target-jobs extract:run=\S*,i=(\d+),n=", line)[1]
                    for _, _, line in steps)
    assert shards == [str(i) for i in range(SHARDS)], steps
    assert steps[0][1] <= steps[1][0], steps
    for i in range(SHARDS):
        log = (results / f"logs/extract/shard-{i}-of-{SHARDS}.log").read_text()
        assert re.search(r"(?<!\d)0 samples computed", log), log[-2000:]
    assert {path: path.read_bytes() for path in kept} == kept
