"""CLAM slide encoding: ResNet50-trunc features of every kept tile (the bag, with
level-0 coordinates) and their mean as the slide embedding (CLAM's
``extract_features_fp.py`` keeps the bag; MMIST averages it)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from mmpipe.errors import InputError

log = logging.getLogger(__name__)


def encode_slides(items, writer, net: torch.nn.Module, cfg: dict, device: torch.device,
                  tiling: dict, progress=None) -> None:
    from mmpipe.encoders.clam import imagenet_tensor
    from mmpipe.io.slide import open_slide
    from mmpipe.preprocess.tiling import TileGrid, iter_tile_batches

    batch_size = int(cfg.get("batch_size", 32))
    for item in items:
        path, frame = item.source
        try:
            grid = TileGrid.from_frame(frame)
            feats = []
            with open_slide(path, mpp_when_missing=tiling.get("mpp_when_missing")) as slide:
                for _idx, tiles in iter_tile_batches(slide, grid, batch_size):
                    x = imagenet_tensor(tiles).to(device)
                    with torch.inference_mode():
                        feats.append(net(x).float().cpu().numpy())
        except InputError as err:
            err.for_subject(item.subject_id)
            log.warning("rejected %s", err)
            writer.mark(item.subject_id, "rejected", err.reason)
        else:
            bag = np.concatenate(feats)
            writer.write(item.subject_id, bag.mean(axis=0), bag=bag, coords=grid.coords)
        if progress is not None:
            progress.update(1)
