"""What a feature store was encoded with, against what a config asks of it.

The workflow reruns an encoding job when its settings change, by the record Snakemake
keeps of the job. A store that Snakemake did not write has no such record and is never
rerun for a setting: one encoded by hand with ``mmpipe encode`` before the config
changed, one copied from another project, or one marked done with ``snakemake --touch``.
So the training job compares each store of its feature set with the settings the config
asks of it (:func:`check_stores`), and ``mmpipe encode`` refuses to replace a store made
with other settings (:func:`settings_differences`). The code keys are not compared: a
new version is the workflow's to rerun. Weights are compared where the store records
their SHA-256 (an image encoder's weight file, against a configured digest or the file's
content) and by random initialisation; a text encoder's checkpoint or projection, a
weights package's version and a weights URL are not recorded in a form to compare.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mmpipe.errors import StoreError
from mmpipe.hashing import canonical

# the parts of an encoding job's params a store records in its ``preprocessing``
PREPROCESSING_KEYS = ("dicom", "tiling", "prompt", "fields", "mask")


def _without_code(blocks: dict[str, Any]) -> dict[str, Any]:
    """Each preprocessing block without its own code key (a field named ``code`` inside a
    prompt's phrases is a setting)."""
    return {name: ({k: v for k, v in block.items() if k != "code"}
                   if isinstance(block, dict) else block) for name, block in blocks.items()}


def settings_differences(attrs: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """What a store (its ``attrs``) was made with otherwise than an encoding job's
    ``params`` (:func:`mmpipe.params.encoder_params`) ask: "encoder settings",
    "preprocessing", "transform", "weights"; empty where they agree."""
    made = attrs.get("preprocessing") if isinstance(attrs.get("preprocessing"), dict) else {}
    mine = {k: params[k] for k in PREPROCESSING_KEYS if k in params}
    # both sides' blocks: a store cropped to a mask passed once the config stopped asking
    # for one, when only the config's blocks were compared
    theirs = {k: made[k] for k in PREPROCESSING_KEYS if k in made}
    weights = params.get("weights")
    # a weights file's fingerprint is its content's SHA-256 where it is a digest (not a
    # URL), which the store records as weights_sha256
    sha = weights.get("weights") if isinstance(weights, dict) else None
    other_file = (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) is not None
                  and attrs.get("weights_sha256") not in (None, sha))
    differ = [name for name, a, b in (
        ("encoder settings", attrs.get("encoder_config"), params["config"]),
        ("preprocessing", _without_code(theirs), _without_code(mine)),
        ("transform", made.get("transform"), params["config"].get("transform")))
        if canonical(a) != canonical(b)]
    if other_file or bool(attrs.get("weights_random_init")) != (weights == "random-init"):
        differ.append("weights")
    return differ


def check_stores(stores: dict[str, tuple[str | Path, dict[str, Any]]]) -> None:
    """Refuse the stores (modality -> (path, its encoding job's params)) made with other
    settings than their params ask, naming each and what differs."""
    from mmpipe.store import FeatureStore

    problems = []
    for modality, (path, params) in sorted(stores.items()):
        differ = settings_differences(FeatureStore(path).attrs, params)
        if differ:
            problems.append(f"{path} (modality {modality!r}) was encoded with other "
                            f"{' and '.join(differ)} than the config's")
    if problems:
        raise StoreError("; ".join(problems) + ". Snakemake reruns only the stores it wrote "
                         "(one encoded by hand with `mmpipe encode`, copied, or marked done "
                         "with --touch is not rerun when the config changes): remake each "
                         "with `snakemake --forcerun encode <store>`, or delete it")
