"""The values a method's hyper-parameters take, checked while the DAG is built: a bad one
is refused there, naming the method, the setting and what it takes, instead of failing
the training job after Snakemake removed that job's old results."""

from __future__ import annotations

import copy
import re

import pytest

from mmpipe.config import validate_config
from mmpipe.errors import ConfigError
from mmpipe.methods import METHODS, TRAINER_KEYS, method_class
from mmpipe.methods.hparams import CHOICES, VALUES, hyperparameter_schemas, is_valid


@pytest.mark.parametrize("type_name", sorted(METHODS))
def test_every_hyper_parameter_has_values_its_default_is_among(type_name):
    """A method's new hyper-parameter needs its entry in VALUES (one name, one kind of
    value across methods), and the imported class's defaults pass their own check."""
    schemas = hyperparameter_schemas(type_name)
    own = set(method_class(type_name).defaults) - set(TRAINER_KEYS)
    assert set(schemas) == own
    for name, value in method_class(type_name).defaults.items():
        if name in schemas:
            assert is_valid(schemas[name], value), (name, value)


def _least(schema: dict) -> int | None:
    """The least integer ``schema`` takes (a list of widths: the least width)."""
    if "anyOf" in schema:
        found = [m for b in schema["anyOf"] if (m := _least(b)) is not None]
        return min(found) if found else None
    if schema.get("type") == "array":
        return _least(schema["items"])
    return schema.get("minimum") if schema.get("type") == "integer" else None


@pytest.mark.parametrize("type_name", sorted(METHODS))
def test_tuning_scales_capacity_down_to_the_least_value_the_method_takes(type_name):
    """Tuning's floor for a scaled capacity (``capacity_floor``, hgb's two leaves) is the
    least value the setting's own check takes: a floor below it spends a trial on a
    setting the method refuses, a floor above it leaves out a value it takes."""
    cls = method_class(type_name)
    schemas = hyperparameter_schemas(type_name)
    for key in getattr(cls, "tuning_keys", {}).get("capacity", ()):
        assert _least(schemas[key]) == getattr(cls, "capacity_floor", 1), key


@pytest.mark.parametrize("type_name", sorted(METHODS))
def test_the_kind_and_tuning_knobs_read_from_source_are_the_classes(type_name):
    from mmpipe.methods.hparams import method_kind, tuning_knobs

    cls = method_class(type_name)
    assert method_kind(type_name) == getattr(cls, "kind", "torch")
    assert tuning_knobs(type_name) == set(getattr(cls, "tuning_keys", {}))


def test_no_entry_is_left_over():
    used = set().union(*(hyperparameter_schemas(t) for t in METHODS))
    assert set(VALUES) == used


@pytest.mark.parametrize("method, setting, value, says", [
    ("mmare", "head", [-1], "a list of positive integers"),  # built, then the job failed
    ("mmare", "head", 128, "a list of positive integers"),   # a width where widths go
    ("mmare", "dim", 0, "a positive integer"),
    ("mmare", "dropout", 1.5, "a number in [0, 1]"),
    ("mmare", "conditioning", "no", "a boolean"),
    ("unilmmv", "mlp_ratio", 2.5, "a positive integer"),    # the model cut it to 2
    ("drim", "depth", 0, "a positive integer"),
    ("muse", "edge_drop_p", -0.1, "a number in [0, 1]"),
    ("logreg", "C", -1, "'auto' or a positive number"),
    ("hgb", "max_bins", 300, "an integer in [2, 255]"),
    ("hgb", "validation_fraction", 0, "null or a decimal number in (0, 1) or a positive integer"),
    ("hgb", "max_depth", 0, "null or a positive integer"),
    ("hypermm", "emb_dim", 5.0, "a positive integer"),        # JSON Schema's integer; nn fails
    ("hgb", "max_features", 1, "a decimal number in (0, 1]"),  # scikit-learn refuses an int
    ("hgb", "validation_fraction", 1.0, "null or a decimal number in (0, 1) or a positive"),
    ("logreg", "class_weight", "None", "null or 'balanced'"),  # the word, not YAML's null
    ("logreg", "C", float("inf"), "'auto' or a positive number"),  # logreg refused it built
    ("logreg", "tol", 0, "a positive number"),   # logreg refused it built, in the job
    ("mmare", "dropout", float("nan"), "a number in"),  # NaN compares false with every bound
    ("muse", "ffn_layers", 0, "a positive integer"),
    ("ham", "hyper_hidden", [], "a non-empty list of positive integers"),
    ("modality_dropout", "p_drop", 1.0, "a number in [0, 1)"),
    ("drim", "disc_lr", "1e-3", "a positive number (YAML reads 1e-3 as a string: write 1.0e-3)"),
    ("mmare", "fusion", "meann", "one of 'pairwise', 'mean'"),  # the job failed, built
    ("drim", "quiet_softmax", "Official", "one of 'official', 'exact'"),
    ("hypermm", "rho_layers", 4, "one of 2, 3"),
])
def test_a_bad_value_is_refused_naming_what_it_takes(raw_config, method, setting, value, says):
    cfg = copy.deepcopy(raw_config)
    cfg["methods"][method][setting] = value
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert f"config.methods.{method}.{setting}: {value!r} is not {says}" in str(err.value)


@pytest.mark.parametrize("method, setting, value", [
    ("hgb", "max_depth", None),            # null: not set, where the setting allows it
    ("hgb", "validation_fraction", 20),    # scikit-learn's absolute count
    ("hgb", "max_features", 0.5),
    ("drim", "disc_lr", 1.0e-3),
    ("ham", "hyper_hidden", [16]),
    ("hypermm", "hyper_hidden", 16),       # a width here, a list of widths in HAM
    ("hypermm", "phi_max_epochs", 0),      # no φ pre-training
    ("logreg", "C", 0.5),
    ("mmare", "head", []),                 # no hidden layer
])
def test_a_good_value_passes(raw_config, method, setting, value):
    cfg = copy.deepcopy(raw_config)
    cfg["methods"][method][setting] = value
    validate_config(cfg)


# a method of these types needs a setting besides the one tried, to be built at all
_REQUIRED = dict.fromkeys(("bd", "bd_filling", "ae_impute"), {"missing_modality": "b"})
_CHOICE_CASES = [(t, name, values) for t, named in sorted(CHOICES.items())
                 for name, values in named.items()]


@pytest.mark.parametrize("type_name, setting, values", _CHOICE_CASES)
def test_the_choices_checked_in_the_dag_are_the_ones_the_method_builds_with(
        type_name, setting, values):
    """CHOICES (the DAG's check) and the method's own check when built hold one list: each
    value builds, and one more is refused by the method too."""
    shapes = {"a": (8,), "b": (8,)}
    build = method_class(type_name)
    for value in values:
        build(list(shapes), shapes, 2, **_REQUIRED.get(type_name, {}), **{setting: value})
    other = "not_a_choice" if isinstance(values[0], str) else max(values) + 1
    with pytest.raises(ValueError, match=setting):
        build(list(shapes), shapes, 2, **_REQUIRED.get(type_name, {}), **{setting: other})


@pytest.mark.parametrize("type_name", sorted(METHODS))
def test_every_word_setting_says_which_words(type_name):
    """A new setting that takes a word has its words in CHOICES, or a misspelt one passes
    the DAG and fails in the training job (a modality is checked against the feature
    sets instead)."""
    for name, schema in hyperparameter_schemas(type_name).items():
        if schema.get("type") == "string" and name not in ("modality", "missing_modality"):
            pytest.fail(f"{type_name}.{name} takes any string: give its words in CHOICES")


def test_every_choice_is_a_setting_of_its_method():
    for type_name, named in CHOICES.items():
        assert set(named) <= set(hyperparameter_schemas(type_name)), type_name


_RULE_CASES = [
    ("bd", ["a", "b"], {}, "'missing_modality' is required"),
    ("bd_filling", ["b"], {"missing_modality": "b"}, "needs at least one modality besides"),
    ("ae_impute", ["b"], {"missing_modality": "b"}, "needs at least one modality besides"),
    ("largo", ["a"], {}, "needs at least two modalities"),
    # no CP rank fits one dedicated model's budget: five modalities at hidden 64
    ("largo", list("abcde"), {"hidden": 64}, "no CP rank fits the budget"),
    ("muse", ["a", "b"], {"ffn_layers": 1}, "ffn_layers must be >= 2"),
    ("unilmmv", ["a", "b"], {"width": 30, "heads": 8}, "width 30 is not divisible by heads 8"),
    ("adacomed", ["a", "b"], {"max_combination_size": 3},
     r"max_combination_size must lie in 1..2"),
    ("adacomed", list("abcdefg"), {}, r"7 modalities give 127 experts"),
]


@pytest.mark.parametrize("type_name, modalities, settings, says", _RULE_CASES)
def test_the_rules_checked_in_the_dag_are_the_ones_the_method_builds_with(
        type_name, modalities, settings, says):
    """RULES (the DAG's check of a setting against another or the feature set) and the
    method's own check when built refuse the same settings: a width of 30 over 8 heads
    passed the config and failed in the training job."""
    from mmpipe.methods.hparams import RULES, method_problems

    assert type_name in RULES
    shapes = {m: (8,) for m in modalities}
    with pytest.raises(ValueError, match=says):
        method_class(type_name)(modalities, shapes, 2, **settings)
    problems = method_problems(type_name, settings, modalities)
    assert len(problems) == 1 and re.search(says, problems[0])
    # and what builds passes
    good = {"bd": {"missing_modality": "b"}, "muse": {"ffn_layers": 2},
            "unilmmv": {"width": 32, "heads": 8}, "adacomed": {"max_combination_size": 1}}
    mods = ["a", "b"]
    fixed = {**settings, **good.get(type_name, {})}
    method_class(type_name)(mods, {m: (8,) for m in mods}, 2, **fixed)
    assert method_problems(type_name, fixed, mods) == []


def test_a_rule_broken_on_a_feature_set_is_refused_naming_the_run(raw_config):
    cfg = copy.deepcopy(raw_config)
    cfg["methods"]["muse"]["ffn_layers"] = 1
    cfg["cohorts"]["demo"]["benchmark"]["runs"]["largo"] = ["clinical_tabular"]
    cfg["methods"].setdefault("largo", {"type": "largo"})
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert ("config.cohorts.demo.benchmark.runs.muse: on feature set 'all' ['clinical', "
            "'ct', 'mri_t1', 'mri_t2', 'wsi'], method type 'muse': ffn_layers must be >= 2"
            ) in str(err.value)
    assert ("runs.largo: on feature set 'clinical_tabular' ['clinical'], method type "
            "'largo': needs at least two modalities") in str(err.value)


def test_hypermm_on_blocks_mixed_with_vectors_is_refused_naming_the_run(raw_config):
    """HyperMM reads [C, H, W] blocks of one shape or vectors: a feature set of VGG11
    slice blocks beside Med3D vectors passed the config and failed in the training job,
    after all of stage 1."""
    cfg = copy.deepcopy(raw_config)
    bench = cfg["cohorts"]["demo"]["benchmark"]
    bench["feature_sets"]["mixed"] = {"mri_t1": "vgg11_slices", "mri_t2": "med3d_demo"}
    bench["runs"]["hypermm_blocks"] = {"feature_sets": ["mixed"], "scenarios": ["natural"]}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert ("runs.hypermm_blocks: on feature set 'mixed' ['mri_t1', 'mri_t2'], method type "
            "'hypermm': every modality must be a [C, H, W] block (VGG) or every modality a "
            "vector [D], got {'mri_t1': '[512, 7, 7]', 'mri_t2': '[512]'}") in str(err.value)
    # a table's encoding is a vector whose width only the data tells
    bench["feature_sets"]["mixed"] = {"mri_t1": "vgg11_slices", "clinical": "tabular"}
    with pytest.raises(ConfigError, match=r"got \{'clinical': '\[D\]', 'mri_t1': '\[512, 7, 7\]'"
                                          r"\}|got \{'mri_t1': '\[512, 7, 7\]', 'clinical': '\[D\]'\}"):
        validate_config(copy.deepcopy(cfg))
    # imported features of a stated shape count as that shape
    pre = copy.deepcopy(raw_config)
    pre["encoders"]["precomputed_blocks"] = {"type": "precomputed", "flatten": False,
                                             "feature_shape": [512, 7, 7]}
    mmist = pre["cohorts"]["mmist_ccrcc"]
    mmist["modalities"]["ct"]["encoders"].append("precomputed_blocks")
    mmist["benchmark"]["feature_sets"]["mixed"] = {"ct": "precomputed_blocks",
                                                   "mri": "precomputed"}
    mmist["benchmark"]["runs"] = {"hypermm": {"feature_sets": ["mixed"]}}
    mmist["benchmark"]["normalize"] = "zscore"  # l2 is refused on blocks (test_config)
    validate_config(copy.deepcopy(pre))  # the other's shape unknown: nothing to compare
    mmist["benchmark"]["feature_sets"]["mixed"]["clinical"] = "tabular"
    with pytest.raises(ConfigError, match=r"feature set 'mixed'.*'ct': '\[512, 7, 7\]'"):
        validate_config(pre)
    from mmpipe.encoders.registry import ENCODER_TYPES, VECTOR_FEATURES

    assert VECTOR_FEATURES <= set(ENCODER_TYPES)
    # the method builds with the same verdict
    with pytest.raises(ValueError, match=r"every modality must be a \[C, H, W\] block"):
        method_class("hypermm")(["a", "b"], {"a": (512, 7, 7), "b": (512,)}, 2)
    # blocks of one shape and vectors of any widths pass
    bench["feature_sets"]["mixed"] = {"mri_t1": "vgg11_slices", "ct": "vgg11_slices"}
    validate_config(copy.deepcopy(cfg))
    bench["feature_sets"]["mixed"] = {"mri_t1": "med3d_demo", "wsi": "clam_resnet50",
                                      "clinical": "tabular"}
    validate_config(cfg)


@pytest.mark.parametrize(("setting", "feature_set"), [({"adapter_dim": 64}, "slices"),
                                                     ({"pool": "gap"}, "all")])
def test_a_hypermm_setting_of_the_other_path_is_refused(raw_config, setting, feature_set):
    """adapter_dim sizes the vector path's adapters, pool pools the conv path's blocks: on
    the other path each was accepted, recorded in the run, and did nothing."""
    cfg = copy.deepcopy(raw_config)
    cfg["methods"]["hypermm_blocks"].update(setting)
    bench = cfg["cohorts"]["demo"]["benchmark"]
    bench["runs"] = {"hypermm_blocks": {"feature_sets": [feature_set], "scenarios": ["natural"]}}
    with pytest.raises(ConfigError, match=f"runs.hypermm_blocks: on feature set "
                                          f"'{feature_set}'.*{next(iter(setting))} .*: remove it"):
        validate_config(cfg)
    # on its own path it is a setting like any other
    bench["runs"]["hypermm_blocks"]["feature_sets"] = ["all" if feature_set == "slices"
                                                       else "slices"]
    validate_config(cfg)


def test_largo_s_subset_stem_without_a_rank_is_checked_on_the_widths_it_knows():
    """stem: subset with rank null, as listed and documented, passed the config and
    failed every training job: its stems alone outgrow one dedicated model's budget at
    real widths. Where a width is known only from the data, the job's own check stands."""
    from mmpipe.methods.hparams import method_problems

    mods, wide = ["a", "b"], {"a": (512,), "b": (512,)}
    with pytest.raises(ValueError, match="no CP rank fits the budget"):
        method_class("largo")(mods, wide, 2, stem="subset")
    assert any("no CP rank fits the budget" in why
               for why in method_problems("largo", {"stem": "subset"}, mods, wide))
    assert method_problems("largo", {"stem": "subset", "rank": 4}, mods, wide) == []
    assert method_problems("largo", {"stem": "subset"}, mods, {"a": (-1,), "b": (512,)}) == []


# hyper-parameters whose None (or "auto") is a setting of its own, not a value the method
# derives when built: what it means, or where the run records the value that ran
_NONE_IS_A_SETTING = {
    ("adacomed", "max_combination_size"): "every combination",
    ("hgb", "max_depth"): "no limit",
    ("hgb", "min_samples_leaf"): "training.estimator",
    ("logreg", "C"): "training.estimator",
    ("hypermm", "phi_lr"): "training.phases",
    ("hypermm", "phi_patience"): "training.phases",
    **{(t, "missing_modality"): "required" for t in ("bd", "bd_filling", "ae_impute")},
    ("single", "modality"): "required",
}


@pytest.mark.parametrize("type_name", sorted(METHODS))
def test_a_setting_left_to_the_method_is_recorded_as_built(type_name):
    """The run records ``derived`` beside ``hparams``: LARGO's CP rank, HyperMM's and
    FeatImpute's adapter widths were recorded as None, though the tuned width moves them."""
    shapes = {"a": (8,), "b": (5,)}
    required = {**_REQUIRED.get(type_name, {}),
                **({"modality": "a"} if type_name == "single" else {})}
    method = method_class(type_name)(list(shapes), shapes, 2, **required)
    left = {k for k, v in method_class(type_name).defaults.items()
            if (v is None or v == "auto") and (type_name, k) not in _NONE_IS_A_SETTING
            and k not in required}
    assert set(method.derived) == left
    assert all(v is None or isinstance(v, int) for v in method.derived.values())


def test_derived_widths_are_the_built_ones():
    from mmpipe.methods.largo import matched_rank

    shapes = {"a": (8,), "b": (5,)}
    largo = method_class("largo")(list(shapes), shapes, 2, hidden=16)
    assert largo.derived == {"rank": largo.rank} and largo.rank == matched_rank(
        [8, 5], 16, int(largo.hparams["n_layers"]), 2, largo.stem_kind)
    assert method_class("hypermm")(list(shapes), shapes, 2).derived == {"phi_dim": 5,
                                                                         "adapter_dim": 5}
    assert method_class("featimpute")(list(shapes), shapes, 2, dim=12).derived == {
        "adapter_dim": 12}
    same = {"a": (8,), "b": (8,)}  # one width: no adapter
    assert method_class("featimpute")(list(same), same, 2).derived == {"adapter_dim": None}
    assert method_class("hypermm")(list(same), same, 2).derived == {"phi_dim": 8,
                                                                     "adapter_dim": None}
