import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from mmpipe.encode.run import encode_store, skip_unused_imports  # noqa: E402
from mmpipe.encoders.registry import execution_settings  # noqa: E402

sm = snakemake  # noqa: F821
skip_unused_imports()
torch.set_num_threads(sm.threads)  # parallel jobs must not oversubscribe the cores
encode_store(
    Path(sm.input.manifest).parent,
    sm.wildcards.modality,
    sm.params.encoder,
    sm.output[0],
    device=sm.config["device"],
    settings=execution_settings(sm.config["encoders"][sm.wildcards.encoder]),
    shard_dirs=list(sm.input.shards) if "shards" in sm.input.keys() else None,
    prompts=sm.input.prompts if "prompts" in sm.input.keys() else None,
    masks=sm.input.masks if "masks" in sm.input.keys() else None,
)
