import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

from mmpipe.cohorts.manifest_files import read_manifest  # noqa: E402
from mmpipe.fsutil import write_parquet  # noqa: E402
from mmpipe.made_with import made_with  # noqa: E402
from mmpipe.preprocess.prompts import build_prompts  # noqa: E402

sm = snakemake  # noqa: F821
manifest, meta = read_manifest(Path(sm.input.manifest).parent)
p = sm.params.prompt
write_parquet(build_prompts(manifest, p["fields"], meta["labels"], p["prompt"]), sm.output[0],
              metadata=made_with(p, sm.params.manifest))
