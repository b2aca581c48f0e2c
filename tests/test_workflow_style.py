"""The workflow's files meet the Snakemake workflow catalog's checks: `snakemake --lint`
finds nothing, and the Snakefile and rules are formatted by snakefmt (configured in
pyproject.toml, `[tool.snakefmt]`)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

WORKFLOW_FILES = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]


def test_snakefmt_leaves_the_workflow_unchanged():
    run = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "--diff",
                          *map(str, WORKFLOW_FILES)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, f"run `snakefmt Snakefile workflow/rules`:\n{run.stdout}{run.stderr}"


def test_snakemake_lint_finds_nothing():
    run = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--cores", "1"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Lints for" not in run.stdout + run.stderr, run.stdout[-3000:]


def test_every_job_keeps_a_log_and_a_benchmark_file():
    # the manifest (which walks a whole download), splits, masks, prompts, the stage-1
    # summary and the report had a log but no time or memory record of their own
    import re

    text = "\n".join(p.read_text() for p in WORKFLOW_FILES)
    rules = [r for r in re.split(r"\n(?=(?:rule|checkpoint) \w+:)", text)[1:]
             if re.search(r"\n    (script|shell|run):", r)]  # not a target rule (all)
    assert len(rules) >= 10
    missing = {part: [r.split(":", 1)[0] for r in rules if f"    {part}:" not in r]
               for part in ("log", "benchmark")}
    assert missing == {"log": [], "benchmark": []}
