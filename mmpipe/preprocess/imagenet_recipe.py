"""torchvision's ImageNet evaluation recipe, without torchvision: what the VGG11 slice
chain (:mod:`mmpipe.preprocess.volume`) and the 2-D image chain
(:mod:`mmpipe.preprocess.images`) end with, so their ImageNet weights see images as they
were trained on. Its own module: editing it reruns the stores of those two chains only."""

from __future__ import annotations

import torch

from mmpipe.errors import InputError
from mmpipe.preprocess.imagenet import IMAGENET_MEAN, IMAGENET_STD

SLICE_RESIZE = 256  # torchvision Resize(256): the shorter side
SLICE_CROP = 224  # torchvision CenterCrop(224)
# a side more than this many times the other: a strip, or a slice of a volume one voxel
# thick (a localizer), which Resize(256) of its short side blows up (a 96-slice volume
# 1 px thick to 96 × 256 × 24,576 values, 2.4 GB): such a subject took down its whole job
# through the memory the machine lacked, rather than being rejected
MAX_ASPECT = 16


class ImageNetSlices:
    """Grey slices ``[S, 1, H, W]`` (or RGB images ``[S, 3, H, W]``) in [0, 1] ->
    ``[S, 3, 224, 224]`` ImageNet-normalised.

    torchvision's ImageNet evaluation recipe, without torchvision: Resize(256) on
    the shorter side (long side ``int(256 * long / short)``, bilinear with
    antialiasing as torchvision does on tensors), CenterCrop(224) and
    Normalize(mean, std); grey is replicated to three channels. Also the 2-D image chain's
    last step (:mod:`mmpipe.preprocess.images`). A plain callable, as MONAI's Compose takes.

    The slices are resized as floats. HyperMM's ``dataloader.py`` first makes each slice
    an 8-bit PIL image (``(slice * 255).astype(np.uint8)``, rounding down) and resizes
    that: its inputs sit about half a grey level lower (1 % of the input's spread on a
    real MR slice); the float slice keeps the levels the quantisation would merge.
    """

    def __init__(self, resize: int = SLICE_RESIZE, crop: int = SLICE_CROP):
        self.resize = resize
        self.crop = crop

    def __call__(self, slices):
        x = torch.as_tensor(slices, dtype=torch.float32)
        h, w = x.shape[-2:]
        short, long = (h, w) if h <= w else (w, h)
        if long > MAX_ASPECT * short:
            raise InputError(f"an image of {h} x {w} px: its sides' ratio is beyond the "
                             f"{MAX_ASPECT}:1 the ImageNet recipe takes (a strip, or a slice of "
                             "a volume one voxel thick, not an image to resize and crop)")
        new_long = int(self.resize * long / short)
        size = (self.resize, new_long) if h <= w else (new_long, self.resize)
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                            antialias=True)
        top = int(round((size[0] - self.crop) / 2.0))
        left = int(round((size[1] - self.crop) / 2.0))
        x = x[..., top:top + self.crop, left:left + self.crop]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()
