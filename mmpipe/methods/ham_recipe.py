"""The recipe HAM and its comparators (channel dropout, FeatImpute) share: a weighted
focal task loss and RMSprop (HAM, "No Modality Left Behind", Method section; see
:mod:`mmpipe.methods.ham`). Kept apart from HAM's module so that editing HAM does not
rerun the comparators (their code hash follows what they import)."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from mmpipe.methods.blocks import PROTOCOL_RECIPE, check_choice

# HAM's recipe (issue: RMSprop, weighted focal loss); the rest is the project protocol
# (blocks.PROTOCOL_RECIPE), its Gaussian feature noise (noise_p 0.3) included: ShaSpec's code
# augments no feature, nor does what was read of HAM's paper (its abstract), so `noise_p: 0`
# is their literal setting as far as known
HAM_TRAIN_DEFAULTS: dict[str, Any] = {**PROTOCOL_RECIPE, "optimizer": "rmsprop",
                                      "sampler": "none", "class_weights": True}
TASK_LOSSES = ("focal", "ce")
TASK_LOSS_DEFAULTS: dict[str, Any] = {
    "task_loss": "focal",         # focal (paper: weighted focal) | ce
    "focal_gamma": 2.0,           # Lin et al. 2017 default (paper value not available)
}


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted focal loss ``−w_y (1 − p_y)^γ log p_y`` (Lin et al. 2017), averaged like
    ``F.cross_entropy`` (divided by the summed weights), so ``γ = 0`` is cross-entropy."""
    logp = F.log_softmax(logits, dim=-1).gather(1, y.unsqueeze(1)).squeeze(1)
    # 1 − p is exactly 0 once a margin passes about 17 (float32): the power's derivative
    # there is infinite for 0 < γ < 1 and times 0 gives NaN gradients from a finite loss;
    # held at the smallest normal float instead, the derivative is finite and every other
    # value keeps its bits
    per = -((1.0 - logp.exp()).clamp_min(torch.finfo(logp.dtype).tiny) ** gamma) * logp
    if weight is None:
        return per.mean()
    w = weight[y]
    return (w * per).sum() / w.sum()


def recipe_note(hparams: dict[str, Any]) -> str:
    """The recipe a run of the HAM family trained with, read from its settings (a config
    or a tuning trial may set other values than the family's defaults)."""
    hp = hparams
    loss = (f"focal loss (gamma {float(hp['focal_gamma']):g})" if hp["task_loss"] == "focal"
            else "cross-entropy")
    noise = (f"Gaussian feature noise (p {float(hp['noise_p']):g}, std "
             f"{float(hp['noise_std']):g})" if float(hp["noise_p"]) > 0 else "no feature noise")
    return (f"{'class-weighted ' if hp['class_weights'] else ''}{loss}, {hp['optimizer']} "
            f"at lr {float(hp['lr']):g}, {noise}")


class TaskLossMixin:
    """The task loss of the HAM family (``task_loss``, ``focal_gamma``, checked at
    construction); ``loss`` is the task loss of the model's own output."""

    name: str
    hparams: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        check_choice(self.name, "task_loss", self.hparams["task_loss"], TASK_LOSSES)

    def task_loss(self, logits: torch.Tensor, y: torch.Tensor,
                  class_weight: torch.Tensor | None) -> torch.Tensor:
        if self.hparams["task_loss"] == "ce":
            return F.cross_entropy(logits, y, weight=class_weight)
        return focal_loss(logits, y, float(self.hparams["focal_gamma"]), class_weight)

    def loss(self, x, present, y, class_weight=None):
        logits = self(x, present)
        return self.task_loss(logits, y, class_weight), logits
