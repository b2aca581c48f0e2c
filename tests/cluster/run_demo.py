"""The tiny demo through a real SLURM cluster, checked against a local run.

    sudo tests/cluster/slurm_cluster.sh up      # a one-node cluster on this machine
    python tests/cluster/run_demo.py [--workdir DIR]

Runs the workflow's test demo (``tests.conftest.write_demo_config``: 16 subjects, the
small stage-2 grid the workflow tests run; ``device: auto``) twice: locally with ``--cores 2``, and through
``snakemake --profile workflow/profiles/slurm``. While the SLURM run goes, one running
``train`` job is killed with ``scancel``; the profile's ``retries`` must resubmit it.
Then it checks, from ``sacct``:

- every job the dry run plans went through SLURM (one SLURM job per job of each rule, the
  grouped rules as group jobs; only ``all`` runs in the Snakemake process), with the
  partition, CPUs, memory, runtime limit and GPU request the profile asks for that rule
  (``set-resources``, ``default-resources``, ``set-threads``; CPUs are the job's threads;
  the partition with GPUs from the profile's partition file for a job that asks for a GPU,
  the one without for every other job, ``encode_cpu``'s tabular stores included);
- the per-shard preprocessing jobs (``group: preprocess``) ran as group jobs of up to
  ``group-components`` shards, asking for their shards' CPUs and memory together;
- the cancelled job shows as CANCELLED and its rule and wildcards completed in a later job;

and that the two results trees hold the same stores, predictions and metrics files, and
every array of every store (bags included), every run's predictions and test metrics are
equal. The test cluster has no default partition, so a job the profile gave no partition
would not be accepted.

Prints the sacct rows, the timings and each check; exits 1 when a check fails. Needs the
``slurm`` extra (``pip install -e ".[slurm]"``). Not part of ``.ci/run``: it needs root
for the cluster and takes minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.conftest import jobs_of, snakemake_cmd, write_demo_config  # noqa: E402

PROFILE = REPO / "workflow" / "profiles" / "slurm"
SACCT_FIELDS = ("JobID", "JobName", "Partition", "AllocCPUS", "ReqMem", "Timelimit",
                "ReqTRES", "State", "ElapsedRaw", "Comment")


def snakemake(workdir: Path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(snakemake_cmd(workdir, *args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def run_to_end(proc: subprocess.Popen, log: Path) -> int:
    out, _ = proc.communicate()
    log.write_text(out)
    return proc.returncode


class Canceller(threading.Thread):
    """Cancel the first ``train`` job seen running for a few seconds."""

    def __init__(self, proc: subprocess.Popen, rule: str = "train", after_s: float = 3.0):
        super().__init__(daemon=True)
        self.proc, self.rule, self.after_s = proc, rule, after_s
        self.cancelled: tuple[str, str] | None = None
        self.run_names: set[str] = set()  # the plugin names a run's jobs by its run uuid

    def run(self) -> None:
        seen: dict[str, float] = {}
        while self.proc.poll() is None and self.cancelled is None:
            out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%j|%k"], capture_output=True,
                                 text=True).stdout
            for line in out.splitlines():
                jobid, state, name, comment = line.split("|", 3)
                self.run_names.add(name)
                if state != "RUNNING" or not comment.startswith(f"rule_{self.rule}_"):
                    continue
                first = seen.setdefault(jobid, time.monotonic())
                if time.monotonic() - first >= self.after_s:
                    subprocess.run(["scancel", jobid], check=True)
                    self.cancelled = (jobid, comment)
                    break
            time.sleep(0.5)


def sacct_rows(since: str) -> list[dict[str, str]]:
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-S", since, "-E", "now",
                          f"--format={','.join(SACCT_FIELDS)}"],
                         capture_output=True, text=True, check=True).stdout
    return [dict(zip(SACCT_FIELDS, line.split("|", len(SACCT_FIELDS) - 1), strict=True))
            for line in out.splitlines() if line.strip()]


def _minutes(timelimit: str) -> int:
    """sacct's Timelimit ([D-]HH:MM:SS) in minutes."""
    days, _, hms = timelimit.rpartition("-")
    h, m, s = (int(v) for v in hms.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (s > 0)


def partitions(profile: dict) -> dict[str, dict]:
    """The profile's partition file (``slurm-partition-config``, beside its config)."""
    path = PROFILE / profile["slurm-partition-config"]
    return yaml.safe_load(path.read_text())["partitions"]


def _resource(value, attempt: int):
    """A profile's resource as Snakemake reads it: a number, or an expression of
    ``attempt`` (``8000 * attempt``)."""
    return eval(value, {"__builtins__": {}}, {"attempt": attempt}) if isinstance(
        value, str) else value


def expected(rule: str, profile: dict, gpu: bool = False, attempt: int = 1) -> dict:
    """What the profile asks SLURM for a job of ``rule`` (``gpu``: whether the job asks
    for one) at its ``attempt`` (2 for a retry). The partition is the rule's
    ``slurm_partition`` when the profile sets one, else the partition file's with GPUs
    for a GPU job and without for the others (the file names one of each, so the
    plugin's choice is that one)."""
    res = {**profile.get("default-resources", {}),
           **profile.get("set-resources", {}).get(rule, {})}
    threads = profile.get("set-threads", {}).get(rule, 1)
    partition = res.get("slurm_partition") or next(
        name for name, limits in partitions(profile).items()
        if (limits.get("max_gpu", 0) > 0) == gpu)
    return {"partition": partition, "cpus": res.get("cpus_per_task", threads),
            "mem_mb": _resource(res.get("mem_mb"), attempt),
            "runtime": _resource(res.get("runtime"), attempt)}


def rule_of(comment: str) -> tuple[str, str]:
    """(rule, wildcards) from the plugin's comment ``rule_<name>[_wildcards_<w>]``."""
    body = comment.removeprefix("rule_")
    name, _, wildcards = body.partition("_wildcards_")
    return name, wildcards


def group_of(name: str, groups: dict[str, str]) -> str | None:
    """The group a job's comment names: a group job's is ``rule_<group>_<rule>_<rule>...``
    (as the plugin wrote it on the real run)."""
    return next((g for g in set(groups.values()) if name == g or name.startswith(f"{g}_")),
                None)


def check_sacct(rows: list[dict], profile: dict, config: dict, planned: dict[str, int],
                cancelled: tuple[str, str] | None) -> list[str]:
    """The profile's requests against what SLURM ran; the failures, as sentences.

    ``planned`` is the run's jobs per rule (Snakemake's job stats). A group job is asked
    for what its components need together: their threads and memory summed (they run side
    by side), the rules' time limit."""
    failures = []
    groups = profile.get("groups", {})
    attempts: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: int(r["JobID"])):
        rule, wildcards = rule_of(row["Comment"])
        # a job's n-th submission (SLURM job ids grow) is Snakemake's attempt n; group jobs
        # share one comment, so each is read as a first attempt (none is cancelled)
        attempt = attempts[row["Comment"]] = attempts.get(row["Comment"], 0) + 1
        if group_of(rule, groups):
            attempt = 1
        got = {"partition": row["Partition"], "cpus": int(row["AllocCPUS"]),
               "mem_mb": int(row["ReqMem"].rstrip("M")) if row["ReqMem"].endswith("M")
               else row["ReqMem"], "runtime": _minutes(row["Timelimit"]),
               "gpu": "gres/gpu=1" in row["ReqTRES"]}
        group = group_of(rule, groups)
        if group:
            members = [r for r, g in groups.items() if g == group and r in rule]
            n = min(sum(planned.get(r, 0) for r in members),
                    profile.get("group-components", {}).get(group, 1))
            one = expected(members[0], profile, attempt=attempt)
            want = {"partition": one["partition"], "cpus": n * one["cpus"],
                    "mem_mb": n * one["mem_mb"], "runtime": one["runtime"], "gpu": False}
        else:
            gpu = asks_for_gpu(rule, wildcards, config)
            want = {**expected(rule, profile, gpu, attempt), "gpu": gpu}
        for key, value in want.items():
            if got[key] != value:
                failures.append(f"job {row['JobID']} ({row['Comment']}): {key} {got[key]!r}, "
                                f"the profile asks {value!r}")
    states: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        states.setdefault(row["Comment"], []).append((row["JobID"], row["State"]))
    for comment, seen in states.items():
        if seen[-1][1] != "COMPLETED":
            failures.append(f"{comment}: last SLURM job {seen[-1]} did not complete")
    if cancelled is None:
        failures.append("no train job was seen running long enough to cancel")
    else:
        jobid, comment = cancelled
        seen = states.get(comment, [])
        if not any(j == jobid and s.startswith("CANCELLED") for j, s in seen):
            failures.append(f"cancelled job {jobid} is not CANCELLED in sacct: {seen}")
        if not any(s == "COMPLETED" and int(j) > int(jobid) for j, s in seen):
            failures.append(f"{comment}: no later job completed after the cancel: {seen}")
    # every planned job ran in SLURM: the grouped rules as group jobs, the others one each
    # (`all` only collects the targets and runs in the Snakemake process)
    rules = [rule_of(comment)[0] for comment in states]
    for rule in set(groups) & set(rules):
        failures.append(f"{rule} ran as its own SLURM jobs, not in a group job")
    for group in set(groups.values()):
        members = sum(n for r, n in planned.items() if groups.get(r) == group)
        size = profile.get("group-components", {}).get(group, 1)
        want, got = -(-members // size), sum(group_of(r, groups) == group for r in rules)
        if got != want:
            failures.append(f"group {group}: {got} SLURM job(s) for {members} planned jobs, "
                            f"expected {want} ({size} a job)")
    for rule, n in planned.items():
        if rule != "all" and rule not in groups and rules.count(rule) != n:
            failures.append(f"rule {rule}: {rules.count(rule)} job(s) in SLURM, {n} planned")
    return failures


def compare_results(local: Path, slurm: Path) -> tuple[list[str], dict[str, int]]:
    """Every store (every array in it, bags included), every run's predictions and test
    metrics of the two results trees: (differences, how many of each were compared). A
    file in one tree only is a difference."""
    import warnings

    import polars as pl
    import zarr

    # Snakemake's marker in a directory output is no Zarr node: zarr warns, rightly
    warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")

    def files(root: Path, pattern: str) -> set[Path]:
        return {p.relative_to(root) for p in (root / "results").rglob(pattern)}

    diffs, counts = [], {}
    for what, pattern in (("stores", "*.zarr"), ("predictions", "predictions*.parquet"),
                          ("metrics", "metrics.json")):
        mine, theirs = files(local, pattern), files(slurm, pattern)
        diffs += [f"{rel}: only in the local run" for rel in sorted(mine - theirs)]
        diffs += [f"{rel}: only in the SLURM run" for rel in sorted(theirs - mine)]
        counts[what] = len(mine & theirs)
        for rel in sorted(mine & theirs):
            if what == "stores":
                a, b = zarr.open_group(local / rel, mode="r"), zarr.open_group(slurm / rel,
                                                                                mode="r")
                names = sorted(name for name, _ in a.arrays()) + [
                    f"bag/{name}" for name, _ in (a["bag"].arrays() if "bag" in a else [])]
                for name in names:
                    x, y = np.asarray(a[name][:]), np.asarray(b[name][:])
                    if x.shape != y.shape or not np.array_equal(
                            x, y, equal_nan=x.dtype.kind == "f"):
                        diffs.append(f"{rel}/{name} differs")
            elif what == "predictions":
                if not pl.read_parquet(local / rel).equals(pl.read_parquet(slurm / rel)):
                    diffs.append(f"{rel} differs")
            elif (json.loads((local / rel).read_text()).get("test")
                  != json.loads((slurm / rel).read_text()).get("test")):
                diffs.append(f"{rel}: test metrics differ")
    diffs += [f"no {what} to compare" for what, n in counts.items() if n == 0]
    return diffs, counts


def write_cluster_config(workdir: Path) -> None:
    """The test demo's config with ``device: auto`` (the test demo's is ``cpu``): network
    encoders then ask for the GPU the test cluster's gres offers (on /dev/null: torch
    finds no CUDA and runs on the CPU, as the local run does), so the GPU partition is
    exercised; under ``cpu`` nothing would ask for one."""
    write_demo_config(workdir)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    (workdir / "config.yaml").write_text(yaml.safe_dump({**config, "device": "auto"}))


def asks_for_gpu(rule: str, wildcards: str, config: dict) -> bool:
    """Whether the job should ask for a GPU: a ``segment`` job whose TotalSegmentator
    runs on one, an encoding job whose encoder type runs a network (the registry's
    ``needs_gpu``, which the workflow turns into ``encode``'s wildcard constraint: a
    store of the other kind in that rule would hold a GPU node, and the check says so)
    unless the config runs on the CPU, and a training job of a torch method under
    ``device: cuda``."""
    from mmpipe.encoders.device import names_cuda
    from mmpipe.encoders.registry import get_encoder_type

    if rule == "segment":  # preprocess.smk
        return ((config.get("preprocess") or {}).get("totalsegmentator") or {}).get(
            "device", "cpu") == "gpu"
    if rule in ("train", "train_method"):  # common.smk train_gpus
        from mmpipe.methods.hparams import method_kind

        method = max((name for name in config["methods"]
                      if f"_{name}_" in f"_{wildcards}_"), key=len)
        return (names_cuda(config["device"])
                and method_kind(config["methods"][method]["type"]) == "torch")
    if rule not in ("encode", "encode_cpu"):
        return False
    # the plugin joins the wildcard values with "_" (cohort, modality, encoder): the
    # encoder is the longest configured name the string ends with
    encoder = max((name for name in config["encoders"] if wildcards.endswith(f"_{name}")),
                  key=len)
    # common.smk encode_gpus
    return (get_encoder_type(config["encoders"][encoder]["type"]).needs_gpu
            and str(config["device"]).strip().lower() != "cpu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="mmpipe-slurm-"))
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    local, slurm = root / "local", root / "slurm"
    shutil.rmtree(slurm, ignore_errors=True)  # the SLURM run starts from nothing; a
    # finished local run of an earlier call is reused (Snakemake finds nothing to do)
    for workdir in (local, slurm):
        workdir.mkdir(parents=True, exist_ok=True)
        write_cluster_config(workdir)

    start = time.monotonic()
    rc = run_to_end(snakemake(local, "--cores", "2"), root / "local.log")
    local_s = time.monotonic() - start
    print(f"local run: exit {rc}, {local_s:.0f} s (log {root / 'local.log'})", flush=True)
    if rc:
        return 1

    dry = snakemake(slurm, "-n", "--cores", "1").communicate()[0]
    planned = jobs_of(dry)
    print(f"planned: {sum(planned.values())} jobs {planned}", flush=True)
    since = dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    start = time.monotonic()
    proc = snakemake(slurm, "--profile", str(PROFILE),
                     "--slurm-init-seconds-before-status-checks", "5")
    canceller = Canceller(proc)
    canceller.start()
    rc = run_to_end(proc, root / "slurm.log")
    slurm_s = time.monotonic() - start
    print(f"SLURM run: exit {rc}, {slurm_s:.0f} s (log {root / 'slurm.log'})", flush=True)
    print(f"cancelled: {canceller.cancelled}")
    rows = [row for row in sacct_rows(since) if row["JobName"] in canceller.run_names]
    print("\n" + " | ".join(SACCT_FIELDS))
    for row in rows:
        print(" | ".join(row[f] for f in SACCT_FIELDS))
    print()
    if rc:
        return 1
    config = yaml.safe_load((slurm / "config.yaml").read_text())
    failures = check_sacct(rows, profile, config, planned, canceller.cancelled)
    local_rules = {line.split()[1].rstrip(":") for line in
                   (root / "slurm.log").read_text().splitlines() if line.startswith("localrule ")}
    if local_rules - {"all"}:
        failures.append(f"rules run in the Snakemake process, not in SLURM: {local_rules}")
    diffs, counts = compare_results(local, slurm)
    print(f"{len(rows)} SLURM jobs; compared with the local run: "
          + ", ".join(f"{n} {what}" for what, n in counts.items()) + f"; {len(diffs)} differ")
    for line in failures + diffs:
        print("FAIL:", line)
    if not failures and not diffs:
        print("PASS: every job went through SLURM as the profile asks; the cancelled job was "
              "rerun; results equal the local run")
    return 1 if failures or diffs else 0


if __name__ == "__main__":
    sys.exit(main())
