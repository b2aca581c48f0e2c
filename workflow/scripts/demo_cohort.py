import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from mmpipe.cohorts.demo import generate_demo_cohort  # noqa: E402

options = {k: v for k, v in snakemake.params.demo.items() if k != "code"}  # noqa: F821
generate_demo_cohort(snakemake.output[0], **options)  # noqa: F821
