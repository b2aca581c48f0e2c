"""The contract every fusion method follows, so one trainer serves them all.

A method sees a batch as a dict ``x`` of per-modality tensors (``[B, *shape]``, zeros
where a modality is absent) and a boolean presence mask ``present`` ``[B, M]`` in the
order of ``self.modalities``. It must never let an absent modality's values reach its
output (tests change them and compare). Training is a list of phases (HyperMM trains
φ then ρ); each phase has its own optimiser and early stopping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from mmpipe.methods import PHASE_KEYS, TRAINER_KEYS


@dataclass
class Phase:
    """One stage of training: which parameters move, with what optimiser settings.

    ``loss`` defaults to the method's :meth:`FusionMethod.loss`. ``monitor`` is the
    validation quantity early stopping watches (``loss`` minimised, the default, or
    ``balanced_accuracy`` / ``auc`` maximised). No checkpoint before epoch ``min_epochs``
    is kept and no stop happens before it: on a validation split of a few dozen subjects
    an epoch-1 checkpoint often wins by noise.
    """

    name: str
    parameters: Callable[[], Iterable[nn.Parameter]]
    lr: float = 1e-4
    weight_decay: float = 1e-4
    max_epochs: int = 200
    patience: int = 25
    optimizer: str = "adam"  # adam | adamw | rmsprop | sgd
    monitor: str = "loss"
    min_epochs: int = 0
    # "cosine": learning rate annealed to eta_min over max_epochs (stepped once per epoch)
    schedule: str | None = None
    eta_min: float = 0.0
    loss: Callable[..., torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class FusionMethod(nn.Module):
    """Base class of the neural methods.

    Subclasses set ``name`` and ``defaults`` (their paper's hyper-parameters), build
    their layers in ``__init__`` and implement :meth:`forward`.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    # True for methods whose output must not depend on the order of the present
    # modalities (mean pooling, DeepSets, ...): the tests check it
    permutation_invariant: ClassVar[bool] = False
    # the training subjects the trainer keeps: "all"; "complete", those with every
    # modality (the Standard baseline); "with:<modality>", those with that one (BD)
    train_subset: ClassVar[str] = "all"
    # the hyper-parameters the tuning budget scales (mmpipe.bench.tuning): "lr", the
    # learning rate(s), and "capacity", the method's main width; every registered method
    # names its capacity knob (a test checks it)
    tuning_keys: ClassVar[dict[str, tuple[str, ...]]] = {"lr": ("lr",)}

    def __init__(self, modalities: list[str], shapes: dict[str, tuple[int, ...]], n_classes: int,
                 **hparams: Any):
        super().__init__()
        set_common_attributes(self, modalities, shapes, n_classes, hparams)
        # trainer settings given in the method's config ride along with its own
        self.hparams = {**self.defaults, **hparams}

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, x: dict[str, torch.Tensor], present: torch.Tensor, y: torch.Tensor,
             class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of a training batch; cross-entropy by default."""
        logits = self(x, present)
        return F.cross_entropy(logits, y, weight=class_weight), logits

    def validation_loss(self, x: dict[str, torch.Tensor], present: torch.Tensor,
                        y: torch.Tensor, class_weight: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) early stopping watches under ``monitor: loss`` (a phase's own
        ``loss`` takes precedence): the training loss by default; a method whose loss adds
        auxiliary terms that move by themselves (an adversary's) may watch its task."""
        return self.loss(x, present, y, class_weight)

    def prepare(self, x: dict[str, torch.Tensor], present: torch.Tensor, y: torch.Tensor) -> None:
        """Called once with the whole (normalised) training split before the first phase,
        for what a method derives from the training data itself (imputation means, a
        neighbour bank). Store it in buffers so it is saved with the model."""

    def after_step(self) -> None:
        """Called by the trainer after each training batch's optimiser step, for a method
        that moves parameters of its own outside the trainer's optimiser (DRIM's
        discriminators): doing it here, after ``backward``, leaves the batch's graph intact
        without copying those parameters."""

    def phases(self, train_cfg: dict[str, Any]) -> list[Phase]:
        """One phase over every parameter, with the trainer settings of the config."""
        return [Phase("train", self.parameters, **phase_settings(train_cfg))]

    def report_notes(self) -> list[str]:
        """What the report must say about this method on this data (e.g. a deviation
        from its paper forced by the features)."""
        return []

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)



def set_common_attributes(method, modalities: list[str], shapes: dict[str, tuple[int, ...]],
                          n_classes: int, hparams: dict[str, Any]) -> None:
    """What every method (neural or not) holds; unknown hyper-parameters are an error."""
    unknown = set(hparams) - set(method.defaults) - set(TRAINER_KEYS)
    if unknown:
        raise ValueError(f"{method.name}: unknown hyper-parameters {sorted(unknown)} "
                         f"(known: {sorted(method.defaults)})")
    method.modalities = list(modalities)
    method.shapes = {m: tuple(shapes[m]) for m in method.modalities}
    method.n_classes = int(n_classes)
    # a hyper-parameter left None ("derive it") as the method built it (LARGO's CP rank,
    # an adapter's width; None there: no adapter), which the run records beside hparams
    method.derived = {}


def phase_settings(train_cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: train_cfg[k] for k in PHASE_KEYS if k in train_cfg}
