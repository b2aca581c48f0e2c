import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

from mmpipe.bench.prepare import make_mask  # noqa: E402

sm = snakemake  # noqa: F821
make_mask(Path(sm.input.manifest).parent, sm.wildcards.scenario, float(sm.wildcards.rate),
          int(sm.wildcards.seed), sm.output[0], options=sm.params.mask["options"],
          split_path=sm.input.get("split"), label=sm.params.mask["label"])
