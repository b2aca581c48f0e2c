"""The SLURM profile sizes the rules that exist, and the copies of those it sizes: a rule
made by ``use rule A as B`` is a rule of its own name, which ``set-resources: A`` does not
reach (``encode_cpu``'s stores ran under the default hour and 8 GB)."""

from __future__ import annotations

import re

import yaml

from tests.conftest import REPO

RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]


def _rules() -> tuple[set[str], dict[str, str]]:
    text = "\n".join(p.read_text() for p in RULE_FILES)
    rules = set(re.findall(r"^rule (\w+):", text, re.M))
    copies = dict((b, a) for a, b in re.findall(r"^use rule (\w+) as (\w+)", text, re.M))
    return rules | set(copies), copies


def test_the_slurm_profile_sizes_rules_that_exist_and_their_copies():
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml")
                             .read_text())
    rules, copies = _rules()
    assert {"encode", "encode_cpu", "train", "train_method"} <= rules
    for key in ("set-resources", "set-threads"):
        sized = set(profile.get(key) or {})
        assert sized <= rules, (key, sized - rules)
    resources = set(profile["set-resources"])
    unsized = sorted(copy for copy, source in copies.items()
                     if source in resources and copy not in resources)
    assert not unsized, f"set-resources sizes {[copies[c] for c in unsized]} but not {unsized}"
