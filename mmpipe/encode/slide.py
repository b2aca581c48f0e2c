"""CLAM slide encoding: ResNet50-trunc features of every kept tile (the bag, with
level-0 coordinates) and their mean as the slide embedding (CLAM's
``extract_features_fp.py`` keeps the bag; MMIST averages it)."""

from __future__ import annotations

import numpy as np
import torch

from mmpipe.encode.job import build_network
from mmpipe.errors import InputError


def setup(job, items) -> None:
    build_network(job)
    if job.cfg.get("keep_bag", True):
        job.bag_item_shape, job.bag_coord_dim = job.feature_shape, 2
        job.bag_coords = "level-0 (x, y) of each tile"


def run(job, items, writer, progress=None) -> None:
    from mmpipe.encoders.clam import imagenet_tensor
    from mmpipe.io.slide import open_slide
    from mmpipe.preprocess.tiling import TileGrid, iter_tile_batches

    batch_size = int(job.cfg.get("batch_size", 32))
    mpp_when_missing = job.params.get("tiling", {}).get("mpp_when_missing")
    for item in items:
        path, frame = item.source
        try:
            grid = TileGrid.from_frame(frame)
            feats = []
            with open_slide(path, mpp_when_missing=mpp_when_missing) as slide:
                for _idx, tiles in iter_tile_batches(slide, grid, batch_size):
                    x = imagenet_tensor(tiles).to(job.device)
                    with torch.inference_mode():
                        feats.append(job.net(x).float().cpu().numpy())
        except InputError as err:
            writer.reject(item.subject_id, err.reason)
        else:
            bag = np.concatenate(feats)
            writer.write(item.subject_id, bag.mean(axis=0), bag=bag, coords=grid.coords)
        if progress is not None:
            progress.update(1)
