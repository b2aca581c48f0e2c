import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

from mmpipe.made_with import made_with  # noqa: E402
from mmpipe.preprocess.segment import DEFAULT_TASK, segment_cohort  # noqa: E402

sm = snakemake  # noqa: F821
segment_cohort(Path(sm.input.manifest).parent, sm.wildcards.modality, sm.params.kind,
               sm.config["preprocess"]["totalsegmentator"], sm.params.segment["roi_subset"],
               sm.output[0],
               shard_dirs=list(sm.input.shards) if "shards" in sm.input.keys() else None,
               threads=sm.threads, metadata=made_with(sm.params.segment, sm.params.manifest),
               task=sm.params.segment.get("task", DEFAULT_TASK))
