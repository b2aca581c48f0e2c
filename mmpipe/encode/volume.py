"""Volume encoders over a cohort: Med3D (one vector per volume) and VGG11 slices
(HyperMM: a (512, 7, 7) block per volume, the max over its slices).

Preprocessing runs in DataLoader workers (``loader_workers``) while the network
runs; a volume that fails to load or transform is rejected with the reason and the
others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mmpipe.encode.inputs import SubjectInput

log = logging.getLogger(__name__)


class _VolumeDataset(Dataset):
    def __init__(self, items: list[SubjectInput], transform):
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        try:
            return item.subject_id, self.transform(item.source), None
        except Exception as err:  # any reader/transform failure rejects this subject only
            return item.subject_id, None, f"cannot read or preprocess {item.source}: {err}"


def _loader(items, transform, workers: int) -> Iterator[tuple[str, torch.Tensor | None, str | None]]:
    loader = DataLoader(_VolumeDataset(items, transform), batch_size=None, shuffle=False,
                        num_workers=workers)
    yield from loader


def median_spacing_for(recipe: dict, items: list[SubjectInput]):
    if recipe.get("spacing") != "median":
        return None
    from mmpipe.preprocess.volume import cohort_median_spacing

    # the median over the cohort's volumes (stage 1 sees no split): nnU-Net's rule
    spacing = cohort_median_spacing([i.source for i in items],
                                    orientation=recipe.get("orientation"))
    log.info("median spacing of %d volumes: %s", len(items), spacing)
    return spacing


def encode_med3d(items, writer, net: torch.nn.Module, cfg: dict, device: torch.device,
                 median_spacing=None, progress=None) -> None:
    from mmpipe.preprocess.volume import build_volume_transform

    transform = build_volume_transform(cfg.get("transform", {}), median_spacing=median_spacing)
    batch_size = int(cfg.get("batch_size", 1))
    pending: list[tuple[str, torch.Tensor]] = []

    def flush():
        if not pending:
            return
        x = torch.stack([t for _, t in pending]).to(device)
        with torch.inference_mode():
            out = net(x).float().cpu().numpy()
        for (sid, _), emb in zip(pending, out, strict=True):
            writer.write(sid, emb)
        pending.clear()

    for sid, tensor, error in _loader(items, transform, int(cfg.get("loader_workers", 0))):
        if error:
            log.warning("rejected subject %r: %s", sid, error)
            writer.mark(sid, "rejected", error)
        else:
            pending.append((sid, tensor))
            if len(pending) == batch_size:
                flush()
        if progress is not None:
            progress.update(1)
    flush()


def encode_vgg_slices(items, writer, net: torch.nn.Module, cfg: dict, device: torch.device,
                      median_spacing=None, progress=None) -> None:
    from mmpipe.preprocess.volume import build_slice_transform

    transform = build_slice_transform(cfg.get("transform", {}), median_spacing=median_spacing)
    batch_size = int(cfg.get("batch_size", 16))
    keep_bag = bool(cfg.get("keep_bag", False))
    for sid, slices, error in _loader(items, transform, int(cfg.get("loader_workers", 0))):
        if error:
            log.warning("rejected subject %r: %s", sid, error)
            writer.mark(sid, "rejected", error)
        else:
            blocks = []
            with torch.inference_mode():
                for start in range(0, len(slices), batch_size):
                    chunk = slices[start:start + batch_size].to(device)
                    blocks.append(net(chunk).float().cpu())
            per_slice = torch.cat(blocks).numpy()
            # HyperMM: one block per volume, the element-wise max over its slices
            emb = per_slice.max(axis=0)
            if keep_bag:
                coords = np.arange(len(per_slice), dtype=np.int64)[:, None]
                writer.write(sid, emb, bag=per_slice, coords=coords)
            else:
                writer.write(sid, emb)
        if progress is not None:
            progress.update(1)
