import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

from mmpipe.layout import CohortLayout  # noqa: E402
from mmpipe.report.aggregate import build_cohort_report  # noqa: E402

sm = snakemake  # noqa: F821
build_cohort_report(CohortLayout(Path(sm.output[0]).parent), sm.params.report, sm.output[0])
