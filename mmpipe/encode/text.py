"""Clinical prompts through the frozen text encoder."""

from __future__ import annotations

from mmpipe.encode.job import autocast, build_network

_TEXT_CHUNK = 256  # prompts encoded per call: bounded memory whatever the cohort size


def setup(job, items) -> None:
    build_network(job)
    job.feature_shape = (job.net.dim,)  # a projection's or checkpoint's width is in its file


def run(job, items, writer, progress=None) -> None:
    for start in range(0, len(items), _TEXT_CHUNK):
        chunk = items[start:start + _TEXT_CHUNK]
        with autocast(job):
            embs = job.net.encode([i.source for i in chunk])
        cut = set(job.net.truncated)
        for k, (item, emb) in enumerate(zip(chunk, embs, strict=True)):
            # a prompt past the encoder's length lost its end (the fields last in the
            # prompt): said on the subject, not only counted in the log
            writer.write(item.subject_id, emb, note=(
                f"prompt longer than {job.net.max_length} tokens: its end was not encoded"
                if k in cut else ""))
        if progress is not None:
            progress.update(len(chunk))
