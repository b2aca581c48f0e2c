"""A method type's hyper-parameters (names, the values they take) and kind, read from its
source without importing it.

The Snakefile checks every method's settings while it builds the DAG, where importing
the method modules (torch, torch-geometric: about 4 s) for each run of snakemake would
cost more than the check. The names come from each class's ``defaults`` literal,
followed through ``**NAME`` / ``**Class.defaults`` splats and base classes; a test
checks that they equal the imported classes' ``defaults`` for every registered type.

The values a hyper-parameter takes are checked there too (:func:`hyperparameter_schemas`,
:func:`is_valid`): a width of -1 or a dropout of 1.5 otherwise passed the DAG and failed
in the training job, after Snakemake had removed that job's old results. One name is one
concept across methods (``dropout`` is a probability wherever it appears), so
:data:`VALUES` holds a JSON schema per name, and the default's own type narrows it per
method (``hidden`` is a width in one method and a list of widths in another). Which of
a few values a setting takes (``fusion: pairwise | mean``) is the method's own, in
:data:`CHOICES`: the method also checks them when built, and a test builds every method
with each of them and with one more, so that the two lists agree. A bound that one
method alone sets (MUSE's two layers or more), or that reads another setting or the
feature set (a width divisible by the heads; a modality besides the one that goes
missing), is in :data:`RULES`, checked on each run's feature set, and again when the
method is built.
"""

from __future__ import annotations

import ast
import math
from functools import cache, partial

from mmpipe.codehash import module_tree
from mmpipe.config import yaml_validator
from mmpipe.errors import ConfigError
from mmpipe.methods import METHODS, TRAINER_KEYS


def _resolve(module: str, name: str):
    """(module, node) assigned to ``name`` at module level of ``module``, following
    ``from mmpipe.x import name``; ``node`` is a ClassDef or an assigned value."""
    for node in module_tree(module).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                for t in node.targets):
            return module, node.value
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.target.id == name and node.value is not None):
            return module, node.value
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmpipe"):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _resolve(node.module, alias.name)
    raise LookupError(f"{name!r} is not defined at module level of {module}")


def _dict_items(module: str, node) -> dict[str, ast.expr]:
    """The keys of a dict literal (splats followed) with their value expressions."""
    if isinstance(node, ast.Name):
        return _dict_items(*_resolve(module, node.id))
    if (isinstance(node, ast.Attribute) and node.attr == "defaults"
            and isinstance(node.value, ast.Name)):
        return _class_defaults(*_resolve(module, node.value.id))
    if isinstance(node, ast.Dict):
        items: dict[str, ast.expr] = {}
        for k, v in zip(node.keys, node.values, strict=True):
            items.update(_dict_items(module, v) if k is None else {k.value: v})
        return items
    raise LookupError(f"{module}: cannot read dict keys from {ast.dump(node)[:80]}")


def _class_defaults(module: str, cls) -> dict[str, ast.expr]:
    for node in cls.body:
        target = (node.target if isinstance(node, ast.AnnAssign)
                  else node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "defaults" and node.value is not None:
            return _dict_items(module, node.value)
    items: dict[str, ast.expr] = {}
    for base in cls.bases:  # inherited defaults: the first base that has them (MRO order)
        if isinstance(base, ast.Name):
            try:
                found_module, found = _resolve(module, base.id)
            except LookupError:  # nn.Module & co: outside mmpipe, no defaults
                continue
            if isinstance(found, ast.ClassDef):
                items = _class_defaults(found_module, found)
                if items:
                    return items
    return items


@cache
def _defaults(type_name: str) -> dict[str, ast.expr]:
    if type_name not in METHODS:
        raise ConfigError(f"unknown method type {type_name!r} (known: {sorted(METHODS)})")
    module, cls = METHODS[type_name].split(":")
    return _class_defaults(*_resolve(module, cls))


def hyperparameter_names(type_name: str) -> frozenset[str]:
    """The names a method of ``type_name`` accepts as its own hyper-parameters."""
    return frozenset(_defaults(type_name))


def _kind(description: str, **schema) -> dict:
    return {**schema, "description": description}


_POSITIVE_INT = _kind("a positive integer", type="integer", minimum=1)
_WIDTHS = _kind("a list of positive integers", type="array", items=_POSITIVE_INT)
_PROBABILITY = _kind("a number in [0, 1]", type="number", minimum=0, maximum=1)
# a share of the subjects' modalities dropped: all of them would leave nothing to learn
_DROP_SHARE = _kind("a number in [0, 1)", type="number", minimum=0, exclusiveMaximum=1)
_POSITIVE = _kind("a positive number", type="number", exclusiveMinimum=0)
_NON_NEGATIVE = _kind("a number >= 0", type="number", minimum=0)
_BOOLEAN = _kind("a boolean (true or false)", type="boolean")
_WORD = _kind("a string", type="string")  # which words: CHOICES, per method
_NULL = _kind("null", type="null")
_AUTO = _kind("'auto'", const="auto")


def _or(*schemas: dict) -> dict:
    return _kind(" or ".join(s["description"] for s in schemas), anyOf=list(schemas))


def _each(schema: dict, *names: str) -> dict[str, dict]:
    return dict.fromkeys(names, schema)


VALUES: dict[str, dict] = {
    # widths, sizes and counts of things that must exist (a layer of no unit)
    **_each(_POSITIVE_INT, "cls_hidden", "depth", "dim", "dim_head", "disc_hidden", "emb_dim",
            "encoder_hidden", "feat_dim", "ffn_layers", "gnn_layers", "heads", "k", "max_iter",
            "mlp_dim", "mlp_ratio", "n_it", "n_iter_no_change", "n_layers",
            "prompt_dim", "prompt_hidden", "rho_hidden", "rho_layers", "width"),
    # HyperMM's φ pre-training: 0 trains the rest on φ as initialised (the trainer and the
    # flags read a phase of no epoch), which the config refused
    "phi_max_epochs": _kind("an integer >= 0", type="integer", minimum=0),
    **_each(_WIDTHS, "ae_hidden", "classifier_hidden", "head", "task_hidden"),
    # a width in one method, a list of widths in another: the default says which
    "hidden": _or(_POSITIVE_INT, _WIDTHS),
    "hyper_hidden": _or(_POSITIVE_INT, _kind("a non-empty list of positive integers",
                                             type="array", items=_POSITIVE_INT, minItems=1)),
    **_each(_PROBABILITY, "dropout", "edge_drop_p"),
    **_each(_DROP_SHARE, "modality_dropout", "p_drop"),
    **_each(_POSITIVE, "disc_lr", "learning_rate", "tau", "temperature"),
    **_each(_NON_NEGATIVE, "cond_scale", "disc_weight_decay", "focal_gamma",
            "l2_regularization", "lambda_domain", "lambda_full", "lambda_m", "lambda_rec",
            "lambda_s", "lambda_shared", "shared_weight", "sup_weight", "unique_weight",
            "unsup_weight"),
    # scikit-learn takes a tolerance of 0 (never stop on it); logreg refuses it when built,
    # which was in the training job: one kind of value for both
    "tol": _POSITIVE,
    **_each(_BOOLEAN, "bias", "conditioning", "early_stopping", "gnn_normalize", "indicators",
            "mu_sampling", "pretrain_multi", "shuffle_order", "standardize"),
    **_each(_WORD, "ae_training", "aggregation", "dropout_scope", "eval_graph", "fill",
            "fusion", "gate_features", "hyper_init", "kd_form", "missing_fill", "mix",
            "phi_monitor", "pool", "quiet_softmax", "shared_pairs", "stem", "task_loss",
            "train_dropout", "train_subjects"),
    # a modality: config._MODALITY_SETTINGS checks it against the method's feature sets
    **_each(_or(_NULL, _WORD), "missing_modality", "modality"),
    "decoder_depth": _kind("an integer >= 0", type="integer", minimum=0),
    **_each(_or(_NULL, _POSITIVE_INT), "adapter_dim", "max_combination_size", "max_depth",
            "phi_dim", "phi_patience", "rank"),
    "phi_lr": _or(_NULL, _POSITIVE),
    # scikit-learn's own ranges (HistGradientBoostingClassifier, LogisticRegression), as
    # far as hgb.py and logreg.py pass them on
    "C": _or(_AUTO, _POSITIVE),
    "class_weight": _or(_NULL, _kind("'balanced'", const="balanced")),
    "min_samples_leaf": _or(_AUTO, _POSITIVE_INT),
    "max_bins": _kind("an integer in [2, 255]", type="integer", minimum=2, maximum=255),
    "max_features": _kind("a decimal number in (0, 1] (1.0, not 1)", type="number",
                          exclusiveMinimum=0, maximum=1, **{"not": {"type": "integer"}}),
    "max_leaf_nodes": _or(_NULL, _kind("an integer >= 2", type="integer", minimum=2)),
    "validation_fraction": _or(_NULL, _kind("a decimal number in (0, 1)", type="number",
                                            exclusiveMinimum=0, exclusiveMaximum=1),
                               _POSITIVE_INT),
}

# The few values a setting takes, per method type. The method module checks them when
# built; it keeps its own list because it is in its training jobs' code key, which this
# module is not (so adding a word here reruns nothing). A word outside these otherwise
# passed the DAG and failed in the training job (``fusion: meann``), after Snakemake had
# removed that job's old results. tests/methods/test_hparams.py holds the two in step.
_HYPERMM_CHOICES = {"aggregation": ("mean", "sum", "max"), "rho_layers": (2, 3),
                    "pool": ("flatten", "gap"), "hyper_init": ("scaled", "default")}
_DISTILLATION_SUBJECTS = ("complete", "with_modality")
_IMPUTING_SUBJECTS = ("complete", "with_modality", "all")
_FEATIMPUTE_CHOICES = {"shared_pairs": ("cyclic", "all"), "missing_fill": ("first", "mean"),
                       "train_dropout": ("random", "two_stage", "none")}
CHOICES: dict[str, dict[str, tuple]] = {
    "adacomed": {"fusion": ("concat", "mean"), "gate_features": ("concat", "mean", "none"),
                 "mix": ("logits", "probs")},
    "ae_impute": {"train_subjects": _IMPUTING_SUBJECTS, "ae_training": ("pretrain", "joint")},
    "bd": {"train_subjects": _DISTILLATION_SUBJECTS, "kd_form": ("standard", "official")},
    "bd_filling": {"train_subjects": _IMPUTING_SUBJECTS, "fill": ("zero", "mean", "minus_one")},
    "drim": {"quiet_softmax": ("official", "exact")},
    "featimpute": {**_FEATIMPUTE_CHOICES, "task_loss": ("focal", "ce")},
    "ham": {"hyper_init": ("scaled", "default"), "task_loss": ("focal", "ce")},
    "hypermm": {**_HYPERMM_CHOICES, "phi_monitor": ("loss", "balanced_accuracy", "auc")},
    "hypermm_e2e": _HYPERMM_CHOICES,
    "largo": {"stem": ("modality", "subset")},
    "mmare": {"fusion": ("pairwise", "mean")},
    "modality_dropout": {"task_loss": ("focal", "ce")},
    "muse": {"eval_graph": ("reference", "single", "batch")},
    "unilmmv": {"dropout_scope": ("subject", "batch")},
}


# The rules a method checks when built that read another setting or the feature set's
# modalities, mirrored here as CHOICES are (the method keeps its own check, in its code
# key): one broken failed in the training job, after stage 1 and after Snakemake had
# removed the job's old results. tests/methods/test_hparams.py builds each method against
# each rule, so that the two agree. Each rule: (settings with defaults, the feature set's
# modalities) -> what is wrong, or None.
def _needs_missing_modality(hp: dict, mods: list[str]) -> str | None:
    if hp.get("missing_modality") is None:
        return f"the hyper-parameter 'missing_modality' is required (one of {mods})"
    return None if len(mods) >= 2 else (f"needs at least one modality besides "
                                        f"{hp['missing_modality']!r}")


def _two_modalities(hp: dict, mods: list[str]) -> str | None:
    return None if len(mods) >= 2 else "needs at least two modalities"


def _muse_ffn(hp: dict, mods: list[str]) -> str | None:
    return (None if int(hp["ffn_layers"]) >= 2 else
            f"ffn_layers must be >= 2 (official FFNEncoder), got {hp['ffn_layers']}")


def _width_by_heads(hp: dict, mods: list[str]) -> str | None:
    return (None if int(hp["width"]) % int(hp["heads"]) == 0 else
            f"width {hp['width']} is not divisible by heads {hp['heads']}")


_MAX_EXPERTS = 64  # methods/moe.py MAX_EXPERTS


def _combination_size(hp: dict, mods: list[str]) -> str | None:
    size = hp.get("max_combination_size")
    if size is not None and not 1 <= int(size) <= len(mods):
        return (f"max_combination_size must lie in 1..{len(mods)} (or be null for every "
                f"combination), got {size!r}")
    n_experts = sum(math.comb(len(mods), k) for k in range(1, int(size or len(mods)) + 1))
    return None if n_experts <= _MAX_EXPERTS else (
        f"{len(mods)} modalities give {n_experts} experts (more than {_MAX_EXPERTS}); set "
        "max_combination_size to cap the size of the combinations")


def _blocks_or_vectors(hp: dict, shapes: dict[str, tuple[int, ...]],
                       given: frozenset[str] = frozenset()) -> str | None:
    # HyperMM (methods/hypermm.py): its 1x1-convolution path reads [C, H, W] blocks of
    # one shape, its vector path vectors; a mix of the two failed in the training job.
    # A setting of the other path was accepted, recorded in the run, and did nothing
    ranks = {len(s) for s in shapes.values()}
    # a width only the data tells is (-1,): a vector all the same
    shown = {m: "[" + ", ".join("D" if d < 0 else str(d) for d in s) + "]"
             for m, s in shapes.items()}
    if len(ranks) > 1 or ranks - {1, 3}:
        return ("every modality must be a [C, H, W] block (VGG) or every modality a "
                f"vector [D], got {shown}")
    if ranks == {3} and len(set(shapes.values())) > 1:
        return f"the conv path needs blocks of one shape [C, H, W] for every modality, got {shown}"
    if ranks == {3} and "adapter_dim" in given:
        return (f"adapter_dim sizes the vector path's adapters, and these features are "
                f"blocks {shown} (the conv path has none): remove it")
    if ranks == {1} and "pool" in given:
        return (f"pool pools the conv path's blocks, and these features are vectors {shown}"
                " (nothing to pool): remove it")
    return None


def _largo_budget(hp: dict, mods: list[str], dims: list[int]) -> str | None:
    """LARGO's matched CP rank (methods/largo.py), at two classes, the most any label
    leaves the budget: a setting no rank fits failed in the training job."""
    from mmpipe.methods.largo import matched_rank  # arithmetic; torch is loaded already

    try:
        matched_rank(dims, int(hp["hidden"]), int(hp["n_layers"]), 2, hp["stem"])
    except ValueError as err:
        return str(err).removeprefix("largo: ")
    return None


def _largo_rank(hp: dict, mods: list[str]) -> str | None:
    # the stems of stem: modality cost what one dedicated model's first layer does, so
    # the rank does not depend on the modalities' widths
    if len(mods) < 2 or hp.get("rank") is not None or hp.get("stem") != "modality":
        return None
    return _largo_budget(hp, mods, [1] * len(mods))


def _largo_subset_rank(hp: dict, shapes: dict[str, tuple[int, ...]],
                       given: frozenset[str] = frozenset()) -> str | None:
    # stem: subset's stems grow with the widths: checked where the config knows them all
    dims = [math.prod(s) for s in shapes.values()]
    if (len(dims) < 2 or hp.get("rank") is not None or hp.get("stem") != "subset"
            or any(d < 1 for d in dims)):
        return None
    return _largo_budget(hp, list(shapes), dims)


RULES: dict[str, tuple] = {
    "bd": (_needs_missing_modality,), "bd_filling": (_needs_missing_modality,),
    "ae_impute": (_needs_missing_modality,), "largo": (_two_modalities, _largo_rank),
    "muse": (_muse_ffn,), "unilmmv": (_width_by_heads,), "adacomed": (_combination_size,),
}


# rules on the features' shapes, where the config knows them (an encoder type's
# feature_shape: a tabular encoding's width is the cohort's)
SHAPE_RULES: dict[str, tuple] = {"hypermm": (_blocks_or_vectors,),
                                 "hypermm_e2e": (_blocks_or_vectors,),
                                 "largo": (_largo_subset_rank,)}


def method_problems(type_name: str, settings: dict, modalities: list[str],
                    shapes: dict[str, tuple[int, ...]] | None = None) -> list[str]:
    """What the method of ``type_name`` would refuse, built with ``settings`` on a feature
    set of ``modalities`` (:data:`RULES`), of which those in ``shapes`` have features of
    that shape (:data:`SHAPE_RULES`)."""
    defaults = {}
    for name, node in _defaults(type_name).items():
        try:
            defaults[name] = ast.literal_eval(node)
        except ValueError:
            defaults[name] = None
    hp = {**defaults, **settings}
    checks = [partial(rule, hp, list(modalities))
              for rule in RULES.get(type_name, ())]
    checks += [partial(rule, hp, dict(shapes), frozenset(settings))
               for rule in (SHAPE_RULES.get(type_name, ()) if shapes else ())]
    problems = []
    for check in checks:
        try:
            why = check()
        except (TypeError, ValueError, ZeroDivisionError):
            continue  # a value of the wrong kind or range (heads: 0): its own check says so
        problems += [why] if why else []
    return problems


def _one_of(values: tuple) -> dict:
    return _kind("one of " + ", ".join(repr(v) for v in values), enum=list(values))


# a default of this Python type narrows the name's values to this JSON type (a string
# default does not: "auto" stands beside numbers; None stands for "not set")
_TYPE_OF_DEFAULT = {bool: "boolean", int: "integer", float: "number", list: "array"}


def _narrow(schema: dict, json_type: str) -> dict | None:
    """``schema`` for values of ``json_type`` only (null and a constant word kept where
    they are allowed: "not set", "auto"); None when it allows none of them."""
    if "anyOf" in schema:
        kept = [n for b in schema["anyOf"] if (n := _narrow(b, json_type)) is not None]
        return None if not kept else kept[0] if len(kept) == 1 else _or(*kept)
    own = schema.get("type")
    if own in (None, "null", json_type) or (own, json_type) == ("integer", "number"):
        return schema
    return None


def is_valid(schema: dict, value) -> bool:
    """Whether ``value`` (as YAML read it) is one of ``schema``'s."""
    return yaml_validator(schema).is_valid(value)


@cache
def hyperparameter_schemas(type_name: str) -> dict[str, dict]:
    """The JSON schema of the values of each of ``type_name``'s own hyper-parameters
    (its ``description`` says them in words): the name's :data:`VALUES`, narrowed to its
    default's type. A name without an entry, or whose default its entry refuses, is a
    :class:`LookupError` (a test checks every registered type)."""
    schemas = {}
    for name, node in _defaults(type_name).items():
        if name in TRAINER_KEYS:  # the trainer's settings: config._check_methods checks them
            continue
        if name not in VALUES:
            raise LookupError(f"{type_name}: hyper-parameter {name!r} has no entry in VALUES")
        try:
            default = ast.literal_eval(node)
        except ValueError:  # not a literal: the name's values alone
            default = None
        json_type = _TYPE_OF_DEFAULT.get(type(default))
        schemas[name] = _narrow(VALUES[name], json_type) if json_type else VALUES[name]
        if schemas[name] is not None and name in CHOICES.get(type_name, {}):
            schemas[name] = _one_of(CHOICES[type_name][name])
        if schemas[name] is None:
            raise LookupError(f"{type_name}: the default of {name!r}, {default!r}, is none of "
                              f"{VALUES[name]['description']}")
    return schemas


_UNSET = object()


def _class_literal(module: str, cls, name: str):
    """The literal a class assigns to ``name`` (else its bases', depth first, which is
    Python's order for the project's single-inheritance methods), or ``_UNSET``; a
    value that is not a literal is a ValueError, which the tests of every registered
    type would show."""
    for node in cls.body:
        target = (node.target if isinstance(node, ast.AnnAssign)
                  else node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            return ast.literal_eval(node.value)
    for base in cls.bases:
        if isinstance(base, ast.Name):
            try:
                found_module, found = _resolve(module, base.id)
            except LookupError:
                continue
            if isinstance(found, ast.ClassDef):
                value = _class_literal(found_module, found, name)
                if value is not _UNSET:
                    return value
    return _UNSET


def _class_of(type_name: str) -> tuple[str, ast.ClassDef]:
    if type_name not in METHODS:
        raise ConfigError(f"unknown method type {type_name!r} (known: {sorted(METHODS)})")
    module, cls = METHODS[type_name].split(":")
    return _resolve(module, cls)


@cache
def method_kind(type_name: str) -> str:
    """``"sklearn"`` for a method the trainer does not train (its ``fit`` is called and
    trainer settings mean nothing to it), else ``"torch"``: the class's ``kind``."""
    kind = _class_literal(*_class_of(type_name), "kind")
    return "torch" if kind is _UNSET else kind


@cache
def tuning_knobs(type_name: str) -> frozenset[str]:
    """The knobs the tuning budget turns on a method (``lr``, ``capacity``): the keys of
    its class's ``tuning_keys``. A method with none (logreg) runs one trial whatever the
    budget says."""
    keys = _class_literal(*_class_of(type_name), "tuning_keys")
    return frozenset() if keys is _UNSET else frozenset(keys)
