import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

from mmpipe.cohorts.demo import generate_demo_cohort  # noqa: E402

options = {k: v for k, v in snakemake.params.demo.items() if k != "code"}  # noqa: F821
# the output is the summary the generator writes last, inside the cohort's folder
generate_demo_cohort(Path(snakemake.output[0]).parent, **options)  # noqa: F821
