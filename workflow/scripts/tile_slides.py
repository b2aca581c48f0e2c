import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

from mmpipe.preprocess.slide_shard import tile_slide_shard  # noqa: E402

sm = snakemake  # noqa: F821
tile_slide_shard(Path(sm.input.manifest).parent, sm.wildcards.modality, int(sm.wildcards.shard),
                 sm.params.n_shards, sm.params.tiling, sm.output[0])
