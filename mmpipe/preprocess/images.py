"""The MONAI chain that turns one 2-D image file into an ImageNet network's input.

read (RGB ``uint8``, :func:`mmpipe.io.images.read_image`, after
:func:`mmpipe.io.image_integrity.check_image_file`) -> channels first, [0, 1] ->
resize the shorter side to 256, centre crop 224, ImageNet mean/std
(:class:`~mmpipe.preprocess.imagenet_recipe.ImageNetSlices`, torchvision's evaluation recipe):
``path -> float32 [3, 224, 224]``. The same recipe as the VGG11 slices and the CLAM
tiles' normalisation, so the ImageNet weights see what they were trained on. A file
that fails is an :class:`InputError` naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose, Transform

from mmpipe.errors import InputError, shared_cause
from mmpipe.io.image_integrity import check_image_file
from mmpipe.io.images import read_image
from mmpipe.preprocess.imagenet_recipe import ImageNetSlices


class LoadImage2D(Transform):
    """Path -> ``[1, 3, H, W]`` float32 in [0, 1] (a batch of one for ImageNetSlices)."""

    def __call__(self, path: str | Path) -> torch.Tensor:
        check_image_file(path)
        rgb = read_image(path)
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()[None] / 255.0


class ImageTransform:
    """Path -> ``float32 [3, 224, 224]``; a failure is an InputError naming the file."""

    def __init__(self):
        self.compose = Compose([LoadImage2D(), ImageNetSlices()], log_stats=False)

    def __call__(self, path: str | Path) -> torch.Tensor:
        try:
            return self.compose(str(path))[0]
        except InputError:
            raise
        except Exception as err:
            if shared_cause(err):  # the machine's, not the image's
                raise
            cause = err.__cause__ if isinstance(err.__cause__, InputError) else None
            if cause is not None:
                raise cause from None
            raise InputError(f"{type(err).__name__}: {err}", path=path) from err
