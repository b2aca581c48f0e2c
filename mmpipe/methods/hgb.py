"""Histogram gradient boosting on the concatenated features of a feature set.

The non-neural reference: scikit-learn's ``HistGradientBoostingClassifier`` reads the
present modalities' features side by side, and an absent modality's features are NaN,
as is a tabular store's blank numeric value (stage 1 filled it with the whole cohort's
mean, test subjects included), which the trees handle natively (at each split, missing
values go to whichever child lowered the loss during training). Typically run on the clinical ``tabular`` store,
where this project's specification expects an AUC of about 0.86 for 12-month vital status
on MMIST-ccRCC.

Settings are scikit-learn's defaults (learning rate 0.1, 100 iterations, 31 leaves)
except the leaf size, with a fixed number of iterations: ``early_stopping=False`` by
default, because scikit-learn's early stopping would carve its own validation fraction
out of the training split, and the benchmark's validation split is left for reporting.
``early_stopping=True`` turns scikit-learn's own (``validation_fraction``,
``n_iter_no_change``) back on. ``class_weight="balanced"`` (the default, as most neural
methods train on class-balanced batches) reweights the classes; ``null`` fits the prior.

Leaf size: ``min_samples_leaf="auto"`` (the default) is ``min(20, max(2, n_train // 10))``.
scikit-learn's default of 20 is meant for large data; its documentation of
``HistGradientBoostingClassifier`` says "For small datasets with less than a few hundred
samples, it is recommended to lower this value since only very shallow trees would be
built". On a training split of a few dozen subjects 20 allows no split at all (a split
needs two leaves of 20), so every tree is a single leaf and the model predicts the training prior
(AUC 0.50). Leaves of a tenth of the training subjects allow a tree about ten leaves
(about three levels deep; a few more where the tenth rounds down), as 20 does at 200
subjects; from 200 training subjects on the
rule is scikit-learn's 20 (MMIST-ccRCC's ~430 are unchanged); the floor of 2 keeps a leaf
from fitting a single subject. A number fixes the leaf size; the value used and how it was
chosen are in :meth:`HistGradientBoosting.fitted_settings`.

The trainer treats the class as ``kind = "sklearn"``: it calls :meth:`fit` and
:meth:`predict_proba` directly. Its "trainable parameters" are the nodes of all its
trees. Once fitted, the trees are kept as plain arrays (:class:`TreeArrays`: per node its
feature, threshold, where a missing value goes, its children and its value) and every
prediction walks those arrays, so :meth:`state_dict` is numbers only and ``model.pt``
loads without unpickling anything (a pickled estimator would run code on loading).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from mmpipe.bench.data import blank_columns
from mmpipe.errors import ConfigError
from mmpipe.methods.base import set_common_attributes


def _node_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Node columns with fixed dtypes (scikit-learn stores the flags as uint8, where ``~``
    would not negate them)."""
    dtypes = {"feature_idx": np.int64, "num_threshold": np.float64, "missing_go_to_left": bool,
              "left": np.int64, "right": np.int64, "is_leaf": bool, "value": np.float64}
    return {f: np.ascontiguousarray(np.asarray(v).astype(dtypes[f])) for f, v in columns.items()}


@dataclass
class TreeArrays:
    """The fitted boosting model as arrays: ``trees[i][k]`` is iteration ``i``'s tree for
    output ``k`` (one output for two classes, one per class beyond), its nodes as columns."""

    classes: np.ndarray            # class indices the model saw in training
    baseline: np.ndarray           # [K] raw score before the trees
    trees: list[list[dict[str, np.ndarray]]]

    NODE_FIELDS = ("feature_idx", "num_threshold", "missing_go_to_left", "left", "right",
                   "is_leaf", "value")

    @classmethod
    def from_sklearn(cls, model: HistGradientBoostingClassifier) -> TreeArrays:
        trees = []
        for iteration in model._predictors:
            per_output = []
            for predictor in iteration:
                nodes = predictor.nodes
                if nodes["is_categorical"].any():  # numeric features only: arrays in, no dtypes
                    raise ValueError("hgb: categorical splits are not supported")
                per_output.append(_node_columns({f: nodes[f] for f in cls.NODE_FIELDS}))
            trees.append(per_output)
        return cls(np.asarray(model.classes_, dtype=np.int64),
                   np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1), trees)

    def raw(self, x: np.ndarray) -> np.ndarray:
        """``[N, K]`` raw scores, as scikit-learn's ``_raw_predict`` (NaN follows
        ``missing_go_to_left``; otherwise ``x <= threshold`` goes left)."""
        out = np.tile(self.baseline, (len(x), 1))
        rows = np.arange(len(x))
        for iteration in self.trees:
            for k, tree in enumerate(iteration):
                node = np.zeros(len(x), dtype=np.int64)
                while not tree["is_leaf"][node].all():
                    inner = ~tree["is_leaf"][node]
                    at = node[inner]
                    value = x[rows[inner], tree["feature_idx"][at]]
                    left = np.where(np.isnan(value), tree["missing_go_to_left"][at],
                                    value <= tree["num_threshold"][at])
                    node[inner] = np.where(left, tree["left"][at], tree["right"][at])
                out[:, k] += tree["value"][node]
        return out

    def proba(self, x: np.ndarray) -> np.ndarray:
        raw = self.raw(x)
        if raw.shape[1] == 1:  # binary log-loss: the sigmoid of the one output
            p = 1.0 / (1.0 + np.exp(-raw[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def n_nodes(self) -> int:
        return int(sum(len(t["value"]) for it in self.trees for t in it))

    def state(self) -> dict[str, Any]:
        """Tensors and lists only: what ``torch.load(weights_only=True)`` reads."""
        import torch

        return {"classes": torch.from_numpy(self.classes),
                "baseline": torch.from_numpy(self.baseline),
                "trees": [[{f: torch.from_numpy(v) for f, v in t.items()} for t in it]
                          for it in self.trees]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TreeArrays:
        def arr(v):
            return v.numpy() if hasattr(v, "numpy") else np.asarray(v)

        trees = [[_node_columns({f: arr(t[f]) for f in cls.NODE_FIELDS}) for t in it]
                 for it in state["trees"]]
        return cls(arr(state["classes"]).astype(np.int64),
                   arr(state["baseline"]).astype(np.float64), trees)


SKLEARN_KEYS = ("learning_rate", "max_iter", "max_leaf_nodes", "max_depth", "min_samples_leaf",
                "l2_regularization", "max_features", "max_bins", "class_weight",
                "early_stopping", "validation_fraction", "n_iter_no_change", "tol")


class HistGradientBoosting:
    """scikit-learn HGB on the present features of every modality, absent ones as NaN."""

    name: ClassVar[str] = "hgb"
    kind: ClassVar[str] = "sklearn"
    permutation_invariant: ClassVar[bool] = False
    train_subset: ClassVar[str] = "all"
    # the hyper-parameters a tuning budget scales: the boosting step and the tree size
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {
        "lr": ("learning_rate",), "capacity": ("max_leaf_nodes",)}
    capacity_floor: ClassVar[int] = 2  # scikit-learn: max_leaf_nodes >= 2
    defaults: ClassVar[dict[str, Any]] = {
        "learning_rate": 0.1,
        "max_iter": 100,
        "max_leaf_nodes": 31,
        "max_depth": None,
        "min_samples_leaf": "auto",    # min(20, max(2, n_train // 10)): see the module doc
        "l2_regularization": 0.0,
        "max_features": 1.0,
        "max_bins": 255,
        "class_weight": "balanced",    # None | "balanced": why balanced, see logreg's
        "early_stopping": False,       # True: scikit-learn's own, on a training fraction
        "validation_fraction": 0.1,
        "n_iter_no_change": 10,
        "tol": 1e-7,
    }

    def __init__(self, modalities: list[str], shapes: dict[str, tuple[int, ...]], n_classes: int,
                 **hparams: Any):
        set_common_attributes(self, modalities, shapes, n_classes, hparams)
        # trainer keys are accepted (shared method configs) and ignored: no trainer here
        self.hparams = {**self.defaults, **{k: v for k, v in hparams.items()
                                            if k in self.defaults}}
        leaf = self.hparams["min_samples_leaf"]
        if leaf != "auto" and (isinstance(leaf, bool) or not isinstance(leaf, int) or leaf < 1):
            raise ConfigError(f"{self.name}: min_samples_leaf must be 'auto' or a positive "
                              f"integer, got {leaf!r}")
        self.model: HistGradientBoostingClassifier | None = None
        self.forest: TreeArrays | None = None
        self.leaf_rule: str | None = None  # how the fitted leaf size was chosen
        self.blank_as_nan = True  # a tabular blank as NaN (:meth:`features`)

    @staticmethod
    def auto_min_samples_leaf(n_train: int) -> int:
        """scikit-learn's 20 from 200 training subjects on, a tenth of them below, at
        least 2 (see the module doc)."""
        return min(20, max(2, int(n_train) // 10))

    def features(self, data) -> np.ndarray:
        """``[N, sum of feature sizes]``: modalities side by side, NaN where absent, and
        NaN for a tabular store's blank numeric value. Stage 1 filled that blank with the
        whole cohort's mean, test subjects included, and HGB runs without the z-score
        that refits it on the training split (``normalize: none``): the trees place a
        blank themselves, as they place an absent modality (its indicator stays)."""
        blocks = []
        for m in self.modalities:
            col = data.modalities.index(m)
            v = np.asarray(data.x[m], dtype=np.float32).reshape(len(data.y), -1).copy()
            for value, blank in (blank_columns(data.provenance.get(m, {}))
                                 if self.blank_as_nan else ()):
                v[v[:, blank] >= 0.5, value] = np.nan
            v[~np.asarray(data.present[:, col], dtype=bool)] = np.nan
            blocks.append(v)
        return (np.concatenate(blocks, axis=1) if blocks
                else np.zeros((len(data.y), 0), dtype=np.float32))

    def fit(self, train, val=None, seed: int = 0) -> HistGradientBoosting:
        """Fit on ``train``; ``val`` is not used (fixed iterations, see the module doc)."""
        settings = {k: self.hparams[k] for k in SKLEARN_KEYS}
        if settings["min_samples_leaf"] == "auto":
            n_train = len(train.y)
            settings["min_samples_leaf"] = self.auto_min_samples_leaf(n_train)
            self.leaf_rule = f"auto: min(20, max(2, n_train // 10)), n_train={n_train}"
        else:
            self.leaf_rule = "fixed"
        self.model = HistGradientBoostingClassifier(**settings, random_state=int(seed))
        x = self.features(train)
        # a column blank for every training subject (a field none has, a modality no
        # training subject has): scikit-learn's binning failed on it with a bare
        # ValueError, which stopped the job; a constant takes no split, as NaN would
        # give none, so the trees and every prediction are those it would have made
        x[:, np.isnan(x).all(axis=0)] = 0.0
        self.model.fit(x, np.asarray(train.y))
        self.forest = TreeArrays.from_sklearn(self.model)
        return self

    def predict_proba(self, data) -> np.ndarray:
        """``[N, n_classes]`` probabilities; classes unseen in training get 0."""
        if self.forest is None:
            raise RuntimeError(f"{self.name}: predict_proba before fit")
        out = np.zeros((len(data.y), self.n_classes), dtype=np.float32)
        if len(data.y):
            proba = self.forest.proba(self.features(data).astype(np.float64))
            out[:, self.forest.classes] = proba
        return out

    def fitted_settings(self) -> dict[str, Any]:
        """The estimator's settings as scikit-learn ran them (its defaults included), with
        how ``min_samples_leaf`` was chosen."""
        if self.model is None:
            return dict(self.hparams)
        return {**{k: v for k, v in self.model.get_params().items()
                   if isinstance(v, str | int | float | bool | type(None))},
                "min_samples_leaf_rule": self.leaf_rule}

    def trainable_parameters(self) -> int:
        """Number of nodes over all trees (the boosting model's "parameters")."""
        return 0 if self.forest is None else self.forest.n_nodes()

    def state_dict(self) -> dict[str, Any]:
        """Plain arrays and settings (no pickled estimator): see :class:`TreeArrays`."""
        if self.forest is None:
            raise RuntimeError(f"{self.name}: state_dict before fit")
        return {"forest": self.forest.state(), "hparams": dict(self.hparams),
                "blank_as_nan": self.blank_as_nan}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.forest = TreeArrays.from_state(state["forest"])
        self.hparams = {**self.hparams, **state.get("hparams", {})}
        # a model saved before blanks were NaN trained on stage 1's filled value
        self.blank_as_nan = bool(state.get("blank_as_nan", False))
