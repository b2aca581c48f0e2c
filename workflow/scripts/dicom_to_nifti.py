import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

from mmpipe.preprocess.dicom_shard import convert_dicom_shard  # noqa: E402

sm = snakemake  # noqa: F821
convert_dicom_shard(Path(sm.input.manifest).parent, sm.wildcards.modality, int(sm.wildcards.shard),
                    sm.params.n_shards, sm.params.dicom, sm.output[0])
