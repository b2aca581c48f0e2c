import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

from mmpipe.bench.prepare import make_split  # noqa: E402

sm = snakemake  # noqa: F821
p = sm.params.split
make_split(Path(sm.input.manifest).parent, p["label"], int(sm.wildcards.seed), p["ratios"],
           sm.output[0])
