"""The start-up benchmark's job specs give the rule scripts every param they read."""

from __future__ import annotations

import re
import sys

from mmpipe.config import load_config
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from startup import snakemake_object, train_params  # noqa: E402


def test_the_train_probe_gives_every_param_the_train_script_reads():
    """The script began to read `stores` (its stores' check) and the probe, which gave
    `train` alone, failed with an AttributeError: `limits.py` stopped before stage 2."""
    script = (REPO / "workflow" / "scripts" / "train.py").read_text()
    read = set(re.findall(r"\bsm\.params\.(\w+)", script)) - {"cells"}  # train_jobs: method
    assert read and read <= set(train_params(load_config(REPO / "config.yaml"), "mmare"))


def test_the_probes_give_every_attribute_the_rule_scripts_read():
    """`train.py` reads `sm.resources` (its GPU slot): the probe's object had none."""
    spec = {"input": {}, "params": {}, "wildcards": {}, "output": "x", "config": {}}
    given = set(snakemake_object(spec))
    for rule in ("train", "encode"):
        script = (REPO / "workflow" / "scripts" / f"{rule}.py").read_text()
        read = set(re.findall(r"\bsm\.(\w+)", script))
        assert read and read <= given, (rule, read - given)
