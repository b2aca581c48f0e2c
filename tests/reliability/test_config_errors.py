"""Config mistakes at every level are found by ``mmpipe check-config`` and while the
Snakefile builds the DAG, each naming the key, before any job runs (or deletes an old
output)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from mmpipe.cli import main
from mmpipe.config import validate_config
from mmpipe.errors import ConfigError
from tests.conftest import REPO


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _demo(cfg: dict) -> dict:
    return cfg["cohorts"]["demo"]


TYPOS = {
    "top level": (lambda c: c.update(result="out"), "config: Additional properties"),
    "shards": (lambda c: c["shards"].update(dicm=2), "config.shards: Additional properties"),
    "preprocess.dicom": (lambda c: c["preprocess"]["dicom"].update(min_slice=3),
                         "config.preprocess.dicom: Additional properties"),
    "preprocess.slide": (lambda c: c["preprocess"]["slide"].update(tile=256),
                         "config.preprocess.slide: Additional properties"),
    "benchmark": (lambda c: c["benchmark"].update(seed=[0]),
                  "config.benchmark: Additional properties"),
    "benchmark scenario name": (lambda c: c["benchmark"]["scenarios"].update(mcra=[0.2]),
                                "'mcra' is not one of"),
    "encoder key": (lambda c: c["encoders"]["med3d_demo"].update(batchsize=2),
                    "config.encoders.med3d_demo: Additional properties"),
    "encoder type": (lambda c: c["encoders"]["med3d_demo"].update(type="med3D"),
                     "config.encoders.med3d_demo.type: 'med3D' is not one of"),
    "encoder key of another type": (lambda c: c["encoders"]["med3d_demo"].update(flatten=True),
                                    "config.encoders.med3d_demo.flatten: a 'med3d' encoder does not read it"),
    "transform key": (lambda c: c["encoders"]["med3d_demo"]["transform"].update(resise=[1, 1, 1]),
                      "config.encoders.med3d_demo.transform: Additional properties"),
    "method type": (lambda c: c["methods"]["mmare"].update(type="mmar"),
                    "config.methods.mmare.type: 'mmar' is not one of"),
    "method hyper-parameter": (lambda c: c["methods"]["mmare"].update(dropuot=0.2),
                               "config.methods.mmare: unknown hyper-parameter(s) ['dropuot']"),
    "method trainer key": (lambda c: c["methods"]["deepsets"].update(learning_rate=0.1),
                           "config.methods.deepsets: unknown hyper-parameter(s) "
                           "['learning_rate']"),
    "method modality": (lambda c: c["methods"]["bd"].update(missing_modality="clinic"),
                        "missing_modality 'clinic' is not a modality of feature set"),
    "cohort key": (lambda c: _demo(c).update(label=["label"]),
                   "config.cohorts.demo: Additional properties"),
    "adapter": (lambda c: _demo(c).update(adapter="dem"), "config.cohorts.demo.adapter"),
    "demo option": (lambda c: _demo(c)["demo"].update(n_subject=10),
                    "config.cohorts.demo.demo: Additional properties"),
    "modality key": (lambda c: _demo(c)["modalities"]["ct"].update(column_name="x"),
                     "config.cohorts.demo.modalities.ct: Additional properties"),
    "modality kind": (lambda c: _demo(c)["modalities"]["ct"].update(kind="dcm"),
                      "config.cohorts.demo.modalities.ct.kind"),
    "modality encoder": (lambda c: _demo(c)["modalities"]["ct"].update(encoders=["med3d"]),
                         "unknown encoder 'med3d'"),
    "prompt": (lambda c: _demo(c)["modalities"]["clinical"]["prompt"].update(phrase={}),
               "config.cohorts.demo.modalities.clinical.prompt: Additional properties"),
    "cohort benchmark key": (lambda c: _demo(c)["benchmark"].update(seed=[1]),
                             "config.cohorts.demo.benchmark: Additional properties"),
    "cohort benchmark label": (lambda c: _demo(c)["benchmark"].update(label="lable"),
                               "'lable' is not one of the cohort's labels"),
    "trainer key": (lambda c: _demo(c)["benchmark"]["trainer"].update(epochs=3),
                    "config.cohorts.demo.benchmark.trainer: Additional properties"),
    "run method": (lambda c: _demo(c)["benchmark"]["runs"].update(mmar=["all"]),
                   "unknown method 'mmar'"),
    "run feature set": (lambda c: _demo(c)["benchmark"]["runs"].update(mmare=["al"]),
                        "runs.mmare: unknown feature set 'al'"),
    "run scenario": (lambda c: _demo(c)["benchmark"]["runs"].update(
        ham={"feature_sets": ["all"], "scenarios": ["completenes"]}),
        "scenario 'completenes' is not among the cohort's scenarios"),
    "default scenario": (lambda c: _demo(c)["benchmark"].update(default_scenarios=["mcr"]),
                         "default_scenarios: 'mcr' is not among"),
    "cohort scenario option": (lambda c: _demo(c)["benchmark"]["scenarios"].update(
        testmiss={"rates": [0.5], "modality": "clinical", "drop": "one"}),
        "scenarios.testmiss: options ['drop'] do not apply"),
    "feature set modality": (lambda c: _demo(c)["benchmark"]["feature_sets"]["all"].update(
        pet="med3d_demo"), "feature_sets.all: unknown modality 'pet'"),
    "run cohort": (lambda c: c.update(run_cohorts=["dmeo"]), "unknown cohort 'dmeo'"),
}


@pytest.mark.parametrize("where", list(TYPOS))
def test_a_typo_is_a_config_error_naming_its_key(raw, where):
    mutate, message = TYPOS[where]
    cfg = copy.deepcopy(raw)
    mutate(cfg)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert message in str(info.value)


def test_a_config_without_a_benchmark_block_gets_its_documented_defaults(raw):
    cfg = copy.deepcopy(raw)
    del cfg["benchmark"]
    cfg = validate_config(cfg)
    assert cfg["benchmark"]["seeds"] == [0, 1, 2]
    assert cfg["benchmark"]["scenarios"] == {"natural": [0.0], "mcar": [0.2, 0.4, 0.6]}


def test_check_config_reports_the_typo(raw, tmp_path, capsys):
    cfg = copy.deepcopy(raw)
    cfg["methods"]["mmare"]["dropuot"] = 0.2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["check-config", "--config", str(tmp_path / "config.yaml")]) == 1
    assert "config.methods.mmare: unknown hyper-parameter(s) ['dropuot']" in (
        capsys.readouterr().err)


def test_the_dag_is_not_built_from_a_config_with_an_unknown_method_type(raw, tmp_path):
    """Today's main failed with FileNotFoundError '.../mmpipe/.py' while building the DAG."""
    cfg = copy.deepcopy(raw)
    cfg["methods"]["mmare"]["type"] = "mmar"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                          str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "config.methods.mmare.type: 'mmar' is not one of" in run.stdout + run.stderr
