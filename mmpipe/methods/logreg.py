"""L2-regularised logistic regression on the zero-filled features and presence indicators.

The linear reference beside ``hgb``: scikit-learn's ``LogisticRegression`` (lbfgs, pure
L2 penalty, ``l1_ratio=0``) reads the feature set's modalities side by side, an absent
modality's features set to zero from the presence mask (whatever values the data holds
there), followed by one 0/1 presence column per modality. With the benchmark's
``zscore`` normalisation (fitted on the present training rows), zero is the training
mean, so a zero-filled block is mean imputation, and the presence column gives each
absent modality its own learned offset. Run it with ``normalize: zscore`` (config.yaml
sets it on the method, whatever the cohort uses): the L2 penalty weighs every
coefficient alike, which is only fair to features on one scale.

``C`` (inverse regularisation strength): ``"auto"`` (the default) fits one model per
value of :data:`C_GRID` (1e-3 to 1e2, half a decade apart: 11 values) on the training
split and keeps the one with the lowest log loss on the validation split; ties go to the
smaller C, the more regularised model. A number fixes C. The validation split is the
benchmark's own (the one every method early-stops on), so no test subject is seen; the
chosen C and every grid point's validation log loss are in :meth:`fitted_settings`
(each run's ``metrics.json``, under ``training``). Without validation subjects ``"auto"``
falls back to scikit-learn's default C=1.0 and says so in the report notes.

Multi-class labels get the multinomial (softmax) loss, which lbfgs minimises for three
or more classes (scikit-learn's ``solver`` documentation). ``class_weight`` is
``"balanced"`` (the default, as most neural methods train on class-balanced batches:
weights ``n_samples / (n_classes * bincount(y))``, as scikit-learn) or None.

Tuning: :attr:`LogisticRegression.tuning_keys` is empty. The method has no learning rate
and its one capacity knob, C, is already chosen on the validation split by the method
itself; a tuning budget that scaled it would override that choice.

The trainer treats the class as ``kind = "sklearn"`` (it calls :meth:`fit` and
:meth:`predict_proba`). Once fitted, the model is kept as plain arrays (coefficients,
intercepts, the classes seen in training and the feature layout) and predictions are
computed from them with numpy, so ``model.pt`` loads with ``weights_only=True``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

from mmpipe.bench.trainer import NotTrainable
from mmpipe.errors import ConfigError
from mmpipe.methods.base import set_common_attributes

# half a decade apart, 1e-3 (strong shrinkage: about the class prior) to 1e2 (nearly
# unpenalised on z-scored features)
C_GRID: tuple[float, ...] = tuple(float(10.0 ** e) for e in np.arange(-3.0, 2.01, 0.5))
# clip for the validation log loss, so a validation class never seen in training costs a
# finite constant (the same for every C, hence no effect on the choice)
EPS = 1e-15


def _arr(v) -> np.ndarray:
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def linear_proba(coef: np.ndarray, intercept: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Probabilities over the fitted classes from the arrays, as scikit-learn's
    ``predict_proba``: for two classes ``coef`` has one row and ``p(class 1)`` is the
    sigmoid of its score; beyond, one row per class and a softmax (multinomial)."""
    z = x @ np.asarray(coef, dtype=np.float64).T + np.asarray(intercept, dtype=np.float64)
    if z.shape[1] == 1:
        p = expit(z[:, 0])  # no overflow warning for large scores, unlike 1/(1+exp(-z))
        return np.stack([1.0 - p, p], axis=1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_loss(proba: np.ndarray, classes: np.ndarray, y: np.ndarray) -> float:
    """Mean ``-log p(true class)``; ``proba``'s columns are ``classes``, a label outside
    them has probability 0, clipped to :data:`EPS`."""
    col = {int(c): j for j, c in enumerate(classes)}
    p = np.array([proba[i, col[int(t)]] if int(t) in col else 0.0 for i, t in enumerate(y)])
    return float(-np.mean(np.log(np.clip(p, EPS, 1.0))))


class LogisticRegression:
    """L2 logistic regression on zero-filled features plus presence indicators, C chosen
    on the validation split (see the module doc).

    ``tuning_keys`` is ``{}``: there is no learning rate, and C, the capacity knob, is
    chosen on the validation split by :meth:`fit` itself.
    """

    name: ClassVar[str] = "logreg"
    kind: ClassVar[str] = "sklearn"
    permutation_invariant: ClassVar[bool] = False
    train_subset: ClassVar[str] = "all"
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {}
    defaults: ClassVar[dict[str, Any]] = {
        "C": "auto",                   # "auto": the validation log loss picks from C_GRID
        # None | "balanced": balanced by default, as the neural methods train on
        # class-balanced batches (the trainer's weighted sampler, or class weights; MUSE
        # and AdaCoMed keep their code's plain batches): a baseline fitted to the class
        # prior loses balanced accuracy, the headline metric, for its prior, not for how
        # it reads the modalities
        "class_weight": "balanced",
        "max_iter": 1000,              # lbfgs iterations (scikit-learn's 100 is often short)
        "tol": 1e-4,
    }

    def __init__(self, modalities: list[str], shapes: dict[str, tuple[int, ...]], n_classes: int,
                 **hparams: Any):
        set_common_attributes(self, modalities, shapes, n_classes, hparams)
        # trainer keys are accepted (shared method configs, a cohort's `trainer`) and
        # ignored: there is no trainer loop here
        self.hparams = {**self.defaults, **{k: v for k, v in hparams.items()
                                            if k in self.defaults}}
        self._check_hparams()
        self.widths = [int(np.prod(self.shapes[m], dtype=np.int64)) for m in self.modalities]
        self.coef: np.ndarray | None = None       # [1 or K, n_features]
        self.intercept: np.ndarray | None = None  # [1 or K]
        self.classes: np.ndarray | None = None    # class indices seen in training
        self.selection: dict[str, Any] = {}

    def _check_hparams(self) -> None:
        hp = self.hparams
        c = hp["C"]
        if c != "auto" and (isinstance(c, bool) or not isinstance(c, int | float)
                            or not np.isfinite(c) or c <= 0):
            raise ConfigError(f"{self.name}: C must be 'auto' or a positive number, got {c!r}")
        if hp["class_weight"] not in (None, "balanced"):
            raise ConfigError(f"{self.name}: class_weight must be null or 'balanced', got "
                              f"{hp['class_weight']!r}")
        if isinstance(hp["max_iter"], bool) or not isinstance(hp["max_iter"], int) \
                or hp["max_iter"] < 1:
            raise ConfigError(f"{self.name}: max_iter must be a positive integer, got "
                              f"{hp['max_iter']!r}")
        if isinstance(hp["tol"], bool) or not isinstance(hp["tol"], int | float) \
                or hp["tol"] <= 0:
            raise ConfigError(f"{self.name}: tol must be a positive number, got {hp['tol']!r}")

    def features(self, data) -> np.ndarray:
        """``[N, sum of feature sizes + M]``: modalities side by side, zeros where absent
        (set from the mask: the data's values there never reach the model), then one 0/1
        presence column per modality, in ``self.modalities`` order."""
        n = len(data.y)
        blocks, flags = [], []
        for m, width in zip(self.modalities, self.widths, strict=True):
            here = np.asarray(data.present[:, data.modalities.index(m)], dtype=bool)
            v = np.asarray(data.x[m], dtype=np.float64).reshape(n, width)
            blocks.append(np.where(here[:, None], v, 0.0))
            flags.append(here.astype(np.float64))
        return np.concatenate([*blocks, np.stack(flags, axis=1) if flags
                               else np.zeros((n, 0))], axis=1)

    def _estimator(self, c: float) -> SkLogisticRegression:
        return SkLogisticRegression(C=float(c), l1_ratio=0.0, solver="lbfgs",
                                    class_weight=self.hparams["class_weight"],
                                    max_iter=self.hparams["max_iter"], tol=self.hparams["tol"])

    def _fit_one(self, c: float, x: np.ndarray, y: np.ndarray):
        """(estimator, converged) at ``C = c``; non-convergence is recorded, not warned."""
        model = self._estimator(c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        return model, bool(np.all(model.n_iter_ < self.hparams["max_iter"]))

    def fit(self, train, val=None, seed: int = 0) -> LogisticRegression:
        """Fit on ``train``; with ``C: auto``, one fit per grid value, the lowest
        validation log loss kept. ``seed`` is unused: lbfgs is deterministic."""
        classes = np.unique(np.asarray(train.y))
        if len(classes) < 2:
            raise NotTrainable(f"{len(train.y)} training subject(s), classes "
                               f"{classes.tolist()}: logistic regression needs two classes")
        x, y = self.features(train), np.asarray(train.y, dtype=np.int64)
        c = self.hparams["C"]
        if c != "auto":
            model, converged = self._fit_one(float(c), x, y)
            self.selection = {"C": float(c), "C_selection": "fixed", "converged": converged}
        elif val is None or len(val.y) == 0:
            model, converged = self._fit_one(1.0, x, y)
            self.selection = {"C": 1.0, "C_selection": "no validation subjects: "
                              "scikit-learn's default C=1.0", "converged": converged}
        else:
            xv, yv = self.features(val), np.asarray(val.y, dtype=np.int64)
            best = None
            losses, all_converged = [], []
            for grid_c in C_GRID:
                candidate, converged = self._fit_one(grid_c, x, y)
                loss = log_loss(linear_proba(candidate.coef_, candidate.intercept_, xv),
                                candidate.classes_, yv)
                losses.append(loss)
                all_converged.append(converged)
                # strict < over an ascending grid: a tie keeps the smaller C
                if best is None or loss < best[0]:
                    best = (loss, grid_c, candidate, converged)
            _, chosen, model, converged = best
            self.selection = {"C": chosen, "C_selection": "validation log loss",
                              "C_grid": list(C_GRID), "val_log_loss": losses,
                              "grid_converged": all_converged, "converged": converged}
        self.coef = np.asarray(model.coef_, dtype=np.float64)
        self.intercept = np.asarray(model.intercept_, dtype=np.float64).reshape(-1)
        self.classes = np.asarray(model.classes_, dtype=np.int64)
        return self

    def predict_proba(self, data) -> np.ndarray:
        """``[N, n_classes]`` probabilities; classes unseen in training get 0."""
        if self.coef is None:
            raise RuntimeError(f"{self.name}: predict_proba before fit")
        out = np.zeros((len(data.y), self.n_classes), dtype=np.float32)
        if len(data.y):
            out[:, self.classes] = linear_proba(self.coef, self.intercept,
                                                self.features(data))
        return out

    def fitted_settings(self) -> dict[str, Any]:
        """The settings the model was fitted with: the chosen C, how it was chosen (the
        grid and its validation log losses under ``auto``), solver and penalty."""
        return {**self.hparams, "solver": "lbfgs", "penalty": "l2", "n_features":
                int(sum(self.widths) + len(self.modalities)), **self.selection}

    def report_notes(self) -> list[str]:
        notes = []
        if self.selection.get("C_selection", "").startswith("no validation"):
            notes.append("logreg: no validation subjects to choose C on; fitted with "
                         "scikit-learn's default C=1.0")
        if self.selection and not self.selection.get("converged", True):
            notes.append(f"logreg: lbfgs did not converge in {self.hparams['max_iter']} "
                         f"iterations at C={self.selection['C']:g}")
        return notes

    def trainable_parameters(self) -> int:
        """Coefficients and intercepts."""
        return 0 if self.coef is None else int(self.coef.size + self.intercept.size)

    def state_dict(self) -> dict[str, Any]:
        """Plain arrays and settings (no pickled estimator)."""
        import torch

        if self.coef is None:
            raise RuntimeError(f"{self.name}: state_dict before fit")
        return {"coef": torch.from_numpy(self.coef), "intercept": torch.from_numpy(self.intercept),
                "classes": torch.from_numpy(self.classes),
                "layout": {"modalities": list(self.modalities), "widths": list(self.widths)},
                "selection": dict(self.selection), "hparams": dict(self.hparams)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        layout = state["layout"]
        if list(layout["modalities"]) != self.modalities or \
                [int(w) for w in layout["widths"]] != self.widths:
            raise ValueError(f"{self.name}: saved feature layout {layout} does not match "
                             f"modalities {self.modalities} of widths {self.widths}")
        coef = _arr(state["coef"]).astype(np.float64)
        if coef.ndim != 2 or coef.shape[1] != sum(self.widths) + len(self.modalities):
            raise ValueError(f"{self.name}: saved coefficients of shape {coef.shape} do not "
                             f"fit {sum(self.widths) + len(self.modalities)} features")
        self.coef = coef
        self.intercept = _arr(state["intercept"]).astype(np.float64).reshape(-1)
        self.classes = _arr(state["classes"]).astype(np.int64)
        self.selection = dict(state.get("selection", {}))
        self.hparams = {**self.hparams, **state.get("hparams", {})}
