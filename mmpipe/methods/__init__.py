"""Method registry: a config's ``type`` → the class implementing it.

Classes are imported on first use, so a method's optional dependencies are only
needed when it runs.
"""

from __future__ import annotations

from importlib import import_module

from mmpipe.errors import ConfigError

# trainer settings a method's config may carry beside its own hyper-parameters: those of
# each training phase (its optimiser and early stopping), and those of the batches
PHASE_KEYS = ("lr", "weight_decay", "max_epochs", "patience", "optimizer", "schedule",
              "eta_min", "monitor", "min_epochs")
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
    "logreg": "mmpipe.methods.logreg:LogisticRegression",
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
