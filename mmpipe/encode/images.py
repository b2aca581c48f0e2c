"""2-D image sets over a cohort (HyperMM on BreakHis): every image of a subject's set
through an ImageNet network, then the element-wise max over the set, as HyperMM pools
a set (VGG11: a (512, 7, 7) block, or its spatial mean with ``pooling: mean``; the
CLAM ResNet50 trunk: 1024). ``max_images`` keeps at most that many images of a set,
evenly spaced in name order; ``keep_bag`` keeps every image's features (coordinate: the
image's index in the set; under ``pooling: mean`` each image's spatial mean, so the
embedding, the spatial mean of the set's max, is not the max over the bag). An unreadable image is left out of its set and named in the
subject's note; a subject none of whose images can be read is rejected with the reasons.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mmpipe.encode.job import build_network, forward
from mmpipe.errors import ConfigError, InputError


def setup(job, items) -> None:
    from mmpipe.preprocess.images import ImageTransform

    # only vgg11_images reads `pooling` (the config's check refuses it elsewhere)
    if job.cfg.get("pooling") not in (None, "mean"):
        raise ConfigError(f"encoder {job.cfg.get('name')!r}: pooling is 'mean' (the block's "
                          f"spatial mean) or null, not {job.cfg['pooling']!r}")
    max_images = job.cfg.get("max_images")
    if max_images is not None and int(max_images) < 1:
        raise ConfigError(f"encoder {job.cfg.get('name')!r}: max_images must be >= 1")
    build_network(job)
    if job.cfg.get("keep_bag", False):
        job.bag_item_shape, job.bag_coord_dim = job.feature_shape, 1
        job.bag_coords = "index of the image in the subject's set (files in name order)"
    job.state = ImageTransform()


def _pick(files: list, max_images: int | None) -> list[tuple[int, object]]:
    """(index in the whole set, file) of the images kept: the bag's coordinate is the
    index among all the subject's files, not among those ``max_images`` kept."""
    if not max_images or len(files) <= max_images:
        return list(enumerate(files))
    keep = np.unique(np.round(np.linspace(0, len(files) - 1, max_images)).astype(int))
    return [(int(i), files[i]) for i in keep]


def run(job, items, writer, progress=None) -> None:
    from mmpipe.io.images import entries_not_read, image_files

    batch_size = int(job.cfg.get("batch_size", 16))
    max_images = job.cfg.get("max_images")
    for item in items:
        try:
            files = _pick(image_files(item.source), max_images)
        except InputError as err:
            writer.reject(item.subject_id, str(err))
            files = None
        if files is not None:
            _encode_set(job, item.subject_id, files, writer, batch_size,
                        entries_not_read(item.source))
        if progress is not None:
            progress.update(1)


def _not_read_words(others: list[str]) -> str:
    """A folder's entries of other types, which were left out without a word."""
    from mmpipe.io.images import IMAGE_SUFFIXES

    return (f"{len(others)} entries of the folder not read (not a {'/'.join(IMAGE_SUFFIXES)} "
            f"file): {', '.join(others)}")


def _left_out_words(problems: list[str]) -> str:
    """Every image left out: the first five with why, the rest by name (the note was the
    only record of them, and named five)."""
    words = "; ".join(problems[:5])
    if len(problems) > 5:
        words += "; also " + ", ".join(p.split(": ", 1)[0] for p in problems[5:])
    return words


def _encode_set(job, subject_id: str, files: list[tuple[int, object]], writer,
                batch_size: int, others: Sequence[str] = ()) -> None:
    if not files:
        writer.reject(subject_id, "no image file in the subject's folder"
                      + (f" ({_not_read_words(others)})" if others else ""))
        return
    tensors, kept, problems = [], [], []
    for i, path in files:
        try:
            tensors.append(job.state(path))
            kept.append(i)
        except InputError as err:
            problems.append(f"{path.name}: {err.reason}")
    if not tensors:
        writer.reject(subject_id, f"none of its {len(files)} image(s) could be read: "
                      + _left_out_words(problems))
        return
    feats = [forward(job, torch.stack(tensors[start:start + batch_size]))
             for start in range(0, len(tensors), batch_size)]
    per_image = torch.cat(feats).numpy()
    emb = per_image.max(axis=0)  # HyperMM max-pools a set
    if job.cfg.get("pooling") == "mean":
        emb, per_image = emb.mean(axis=(1, 2)), per_image.mean(axis=(2, 3))
    bag = coords = None
    if job.bag_item_shape is not None:
        bag, coords = per_image, np.asarray(kept, dtype=np.int64)[:, None]
    notes = ([f"{len(problems)} of {len(files)} image(s) left out: "
              + _left_out_words(problems)] if problems else [])
    if others:
        notes.append(_not_read_words(others))
    note = "; ".join(notes)
    writer.write(subject_id, emb, bag=bag, coords=coords, note=note)
