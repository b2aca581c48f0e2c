import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from mmpipe.report.stage1 import write_cohort_qc  # noqa: E402

sm = snakemake  # noqa: F821
write_cohort_qc(sm.input.adapter_qc, list(sm.input.stores), sm.output.qc, sm.output.summary)
