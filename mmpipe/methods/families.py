"""The report's grouping of method types: colours in the plots, comparisons in the summary.

Each paper's method sits with the comparators it was published against; "simple
fusion" holds the generic fusion comparators no paper proposes (zero-filled
concatenation, DeepSets pooling, late fusion, complete-case training, mean and kNN
feature imputation), which the summary holds every paper's method against; "baselines"
the non-neural references every fusion method must beat; "single modality" one modality
alone. Every type in
:data:`mmpipe.methods.METHODS` needs a family (a test checks). A module of its own, not
the method registry: the report's code key covers it, so regrouping reruns the report.
"""

from __future__ import annotations

BASELINE_FAMILY = "baselines"
SINGLE_FAMILY = "single modality"
SIMPLE_FUSION_FAMILY = "simple fusion"
FAMILIES: dict[str, str] = {
    "mmare": "MMARE",
    "hypermm": "HyperMM", "hypermm_e2e": "HyperMM",
    "ham": "HAM & comparators", "modality_dropout": "HAM & comparators",
    "featimpute": "HAM & comparators", "largo": "HAM & comparators",
    "bd": "BD & comparators", "ae_impute": "BD & comparators",
    "unilmmv": "attention / graph", "muse": "attention / graph", "adacomed": "attention / graph",
    "drim": "attention / graph",
    # the generic comparators: mean imputation is zero-filled concatenation with another
    # fill value, and BD's Filling is complete-case training with a filled modality at
    # test time, as HAM's Standard is, so neither is a paper's method when it leads
    "mean_impute": SIMPLE_FUSION_FAMILY, "bd_filling": SIMPLE_FUSION_FAMILY, "knn_impute": SIMPLE_FUSION_FAMILY,
    "concat_zero": SIMPLE_FUSION_FAMILY, "deepsets": SIMPLE_FUSION_FAMILY,
    "late_fusion": SIMPLE_FUSION_FAMILY, "standard": SIMPLE_FUSION_FAMILY,
    "logreg": BASELINE_FAMILY, "hgb": BASELINE_FAMILY,
    "single": SINGLE_FAMILY,
}

# the order panels, legends and the summary list families in
FAMILY_ORDER = ("MMARE", "HyperMM", "HAM & comparators", "BD & comparators",
                "attention / graph", SIMPLE_FUSION_FAMILY, SINGLE_FAMILY,
                BASELINE_FAMILY)


def family_of(method_type: str) -> str:
    """The family of a method type; "other" for a type the mapping lacks."""
    return FAMILIES.get(method_type, "other")


def types_of(family: str) -> list[str]:
    """The method types of a family, in the mapping's order."""
    return [t for t, f in FAMILIES.items() if f == family]
