"""Method registry: a config's ``type`` → the class implementing it.

Classes are imported on first use, so a method's optional dependencies are only
needed when it runs.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

from mmpipe.errors import ConfigError

# trainer settings a method's config may carry beside its own hyper-parameters: those of
# each training phase (its optimiser and early stopping), and those of the batches
PHASE_KEYS = ("lr", "weight_decay", "max_epochs", "patience", "optimizer", "schedule",
              "monitor")
BATCH_KEYS = ("batch_size", "sampler", "class_weights", "noise_p", "noise_std")
TRAINER_KEYS = (*PHASE_KEYS, *BATCH_KEYS)
# keys of a method's config that are not hyper-parameters of the method itself
CONFIG_KEYS = ("type", "normalize")

METHODS: dict[str, str] = {
    "mmare": "mmpipe.methods.mmare:MMARE",
    "hypermm": "mmpipe.methods.hypermm:HyperMM",
    "hypermm_e2e": "mmpipe.methods.hypermm:HyperMMEndToEnd",
    "deepsets": "mmpipe.methods.baselines:DeepSets",
    "concat_zero": "mmpipe.methods.baselines:ZeroFillConcat",
    "standard": "mmpipe.methods.baselines:CompleteCaseStandard",
    "late_fusion": "mmpipe.methods.baselines:LateFusion",
    "single": "mmpipe.methods.baselines:SingleModality",
    "hgb": "mmpipe.methods.hgb:HistGradientBoosting",
    # HAM ("No Modality Left Behind") and its comparators
    "ham": "mmpipe.methods.ham:HAM",
    "modality_dropout": "mmpipe.methods.ham:ChannelDropout",
    "featimpute": "mmpipe.methods.shaspec:FeatImpute",
    "largo": "mmpipe.methods.largo:LARGO",
    # bidirectional distillation (axillary lymph-node paper) and its comparators
    "bd": "mmpipe.methods.distillation:BidirectionalDistillation",
    "bd_filling": "mmpipe.methods.distillation:Filling",
    "ae_impute": "mmpipe.methods.distillation:AutoEncoderImpute",
    "drim": "mmpipe.methods.drim:DRIM",
    "unilmmv": "mmpipe.methods.attention:MaskedAttention",
    "muse": "mmpipe.methods.muse:MUSE",
    "adacomed": "mmpipe.methods.moe:ModalityExperts",
    "mean_impute": "mmpipe.methods.imputation:MeanImpute",
    "knn_impute": "mmpipe.methods.imputation:KNNImpute",
}


def method_class(type_name: str):
    try:
        target = METHODS[type_name]
    except KeyError:
        raise ConfigError(f"unknown method type {type_name!r} (known: {sorted(METHODS)})") from None
    module, cls = target.split(":")
    return getattr(import_module(module), cls)


# -- hyper-parameter names, read from the source without importing torch -------------------
# The Snakefile checks every method's settings while it builds the DAG, where importing
# the method modules (torch, torch-geometric: ~4 s) for each run of snakemake would cost
# more than the check. The names come from each class's ``defaults`` literal, followed
# through ``**NAME`` / ``**Class.defaults`` splats and base classes; a test checks that
# they equal the imported classes' ``defaults`` for every registered type.


def _module_tree(module: str):
    import ast

    from mmpipe.codehash import _module_file

    return ast.parse(_module_file(module).read_text())


def _resolve(module: str, name: str):
    """(module, node) assigned to ``name`` at module level of ``module``, following
    ``from mmpipe.x import name``; ``node`` is a ClassDef or an assigned value."""
    import ast

    for node in _module_tree(module).body:
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


def _dict_keys(module: str, node) -> set[str]:
    import ast

    if isinstance(node, ast.Name):
        return _dict_keys(*_resolve(module, node.id))
    if (isinstance(node, ast.Attribute) and node.attr == "defaults"
            and isinstance(node.value, ast.Name)):
        return _class_defaults(*_resolve(module, node.value.id))
    if isinstance(node, ast.Dict):
        keys: set[str] = set()
        for k, v in zip(node.keys, node.values, strict=True):
            keys |= _dict_keys(module, v) if k is None else {k.value}
        return keys
    raise LookupError(f"{module}: cannot read dict keys from {ast.dump(node)[:80]}")


def _class_defaults(module: str, cls) -> set[str]:
    import ast

    for node in cls.body:
        target = (node.target if isinstance(node, ast.AnnAssign)
                  else node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "defaults" and node.value is not None:
            return _dict_keys(module, node.value)
    keys: set[str] = set()
    for base in cls.bases:  # inherited defaults: the first base that has them (MRO order)
        if isinstance(base, ast.Name):
            try:
                found_module, found = _resolve(module, base.id)
            except LookupError:  # nn.Module & co: outside mmpipe, no defaults
                continue
            if isinstance(found, ast.ClassDef):
                keys = _class_defaults(found_module, found)
                if keys:
                    return keys
    return keys


@cache
def hyperparameter_names(type_name: str) -> frozenset[str]:
    """The names a method of ``type_name`` accepts as its own hyper-parameters."""
    if type_name not in METHODS:
        raise ConfigError(f"unknown method type {type_name!r} (known: {sorted(METHODS)})")
    module, cls = METHODS[type_name].split(":")
    return frozenset(_class_defaults(*_resolve(module, cls)))
