"""What the volume loops share (:mod:`mmpipe.encode.volume`): the batch a network gets."""

from __future__ import annotations

import torch

from mmpipe.encode.volume import batch_of


def test_a_lone_tensor_is_its_own_batch_and_several_are_joined():
    """A lone volume is the batch as it is, a view and not a copy (a 45 MB copy a volume
    at MedicalNet's input and batch size 1); several give torch.stack's and torch.cat's
    values."""
    volume, other = torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8)
    alone = batch_of([volume])
    assert alone.shape == (1, 1, 4, 8, 8) and alone.data_ptr() == volume.data_ptr()
    assert torch.equal(batch_of([volume, other]), torch.stack([volume, other]))
    slices = torch.rand(3, 3, 8, 8)  # the VGG11 loop's slices of one volume
    assert batch_of([slices], stack=False).data_ptr() == slices.data_ptr()
    assert torch.equal(batch_of([slices, slices[:2]], stack=False),
                       torch.cat([slices, slices[:2]]))
