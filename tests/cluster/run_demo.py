"""The tiny demo through a real SLURM cluster, checked against a local run.

    sudo tests/cluster/slurm_cluster.sh up      # a one-node cluster on this machine
    python tests/cluster/run_demo.py [--workdir DIR]

Runs the workflow's test demo (``tests.conftest.write_demo_config``: 16 subjects, the
small stage-2 grid the workflow tests run) twice: locally with ``--cores 2``, and through
``snakemake --profile workflow/profiles/slurm``. While the SLURM run goes, one running
``train`` job is killed with ``scancel``; the profile's ``retries`` must resubmit it.
Then it checks, from ``sacct``:

- every job of the run went through SLURM, with the partition, CPUs, memory, runtime
  limit and GPU request the profile asks for that rule (``set-resources``,
  ``default-resources``, ``set-threads``; CPUs are the job's threads);
- the per-shard preprocessing jobs (``group: preprocess``) ran as group jobs, not one
  SLURM job each;
- the cancelled job shows as CANCELLED and its rule and wildcards completed in a later job;

and that every store and every run's predictions and metrics equal the local run's.
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

from tests.conftest import write_demo_config  # noqa: E402

PROFILE = REPO / "workflow" / "profiles" / "slurm"
SACCT_FIELDS = ("JobID", "JobName", "Partition", "AllocCPUS", "ReqMem", "Timelimit",
                "ReqTRES", "State", "ElapsedRaw", "Comment")


def snakemake(workdir: Path, *args: str, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


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


def expected(rule: str, profile: dict) -> dict:
    """What the profile asks SLURM for a job of ``rule``."""
    res = {**profile.get("default-resources", {}),
           **profile.get("set-resources", {}).get(rule, {})}
    threads = profile.get("set-threads", {}).get(rule, 1)
    return {"partition": res.get("slurm_partition"),
            "cpus": res.get("cpus_per_task", threads),
            "mem_mb": res.get("mem_mb"), "runtime": res.get("runtime")}


def rule_of(comment: str) -> tuple[str, str]:
    """(rule, wildcards) from the plugin's comment ``rule_<name>[_wildcards_<w>]``."""
    body = comment.removeprefix("rule_")
    name, _, wildcards = body.partition("_wildcards_")
    return name, wildcards


def is_group(name: str, groups: set[str]) -> bool:
    """A group job's comment names the group and its rules: ``rule_<group>_<rule>_...``."""
    return any(name == g or name.startswith(f"{g}_") for g in groups)


def check_sacct(rows: list[dict], profile: dict, config: dict, groups: set[str],
                cancelled: tuple[str, str] | None) -> list[str]:
    """The profile's requests against what SLURM ran; the failures, as sentences."""
    failures = []
    for row in rows:
        rule, wildcards = rule_of(row["Comment"])
        want = expected(rule, profile)
        got = {"partition": row["Partition"], "cpus": int(row["AllocCPUS"]),
               "mem_mb": int(row["ReqMem"].rstrip("M")) if row["ReqMem"].endswith("M")
               else row["ReqMem"], "runtime": _minutes(row["Timelimit"]),
               "gpu": "gres/gpu=1" in row["ReqTRES"]}
        want["gpu"] = asks_for_gpu(rule, wildcards, config)
        if is_group(rule, groups):
            # a group job: SLURM is asked for what its components need together
            want = {"partition": want["partition"], "gpu": False}
        for key, value in want.items():
            if key == "mem_mb" and isinstance(got[key], int) and got[key] >= value:
                continue  # the plugin may add a small margin (array payloads)
            if got[key] != value:
                failures.append(f"job {row['JobID']} ({row['Comment']}): {key} {got[key]!r}, "
                                f"the profile asks {value!r}")
    states = {}
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
    rules = {rule_of(r["Comment"])[0] for r in rows}
    for shard_rule in ("dicom_to_nifti", "tile_slides"):
        if shard_rule in rules:
            failures.append(f"{shard_rule} ran as its own SLURM jobs, not in a group job")
    if not any(is_group(rule, groups) for rule in rules):
        failures.append(f"no group job ({sorted(groups)}) in sacct")
    return failures


def compare_results(local: Path, slurm: Path) -> tuple[list[str], int]:
    """Stores and runs of the two results trees: (differences, files compared)."""
    import polars as pl
    import zarr

    diffs, n = [], 0
    for store in sorted((local / "results").rglob("*.zarr")):
        other = slurm / store.relative_to(local)
        a, b = zarr.open_group(store, mode="r"), zarr.open_group(other, mode="r")
        for name in ("emb", "present", "subject_id"):
            n += 1
            if not np.array_equal(np.asarray(a[name][:]), np.asarray(b[name][:]),
                                  equal_nan=name == "emb"):
                diffs.append(f"{store.relative_to(local)}/{name} differs")
    for pred in sorted((local / "results").rglob("predictions*.parquet")):
        n += 1
        other = slurm / pred.relative_to(local)
        if not pl.read_parquet(pred).equals(pl.read_parquet(other)):
            diffs.append(f"{pred.relative_to(local)} differs")
    for metrics in sorted((local / "results").rglob("metrics.json")):
        n += 1
        mine = json.loads(metrics.read_text()).get("test")
        theirs = json.loads((slurm / metrics.relative_to(local)).read_text()).get("test")
        if mine != theirs:
            diffs.append(f"{metrics.relative_to(local)}: test metrics differ")
    return diffs, n


def asks_for_gpu(rule: str, wildcards: str, config: dict) -> bool:
    """Whether the rule asks for a GPU: an encode job whose encoder type runs a network
    (the registry's ``needs_gpu``, as the rule's ``encoder_gpus``)."""
    from mmpipe.encoders.registry import get_encoder_type

    if rule != "encode":
        return False
    # the plugin joins the wildcard values with "_" (cohort, modality, encoder): the
    # encoder is the longest configured name the string ends with
    encoder = max((name for name in config["encoders"] if wildcards.endswith(f"_{name}")),
                  key=len)
    return get_encoder_type(config["encoders"][encoder]["type"]).needs_gpu


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
        write_demo_config(workdir)

    start = time.monotonic()
    rc = run_to_end(snakemake(local, "--cores", "2"), root / "local.log")
    local_s = time.monotonic() - start
    print(f"local run: exit {rc}, {local_s:.0f} s (log {root / 'local.log'})", flush=True)
    if rc:
        return 1

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
    groups = set(profile.get("groups", {}).values())
    config = yaml.safe_load((slurm / "config.yaml").read_text())
    failures = check_sacct(rows, profile, config, groups, canceller.cancelled)
    diffs, n = compare_results(local, slurm)
    print(f"{len(rows)} SLURM jobs; {n} stores/predictions/metrics compared with the local "
          f"run, {len(diffs)} differ")
    for line in failures + diffs:
        print("FAIL:", line)
    if not failures and not diffs:
        print("PASS: every job went through SLURM as the profile asks; the cancelled job was "
              "rerun; results equal the local run")
    return 1 if failures or diffs else 0


if __name__ == "__main__":
    sys.exit(main())
