import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

from mmpipe.report.aggregate import build_report  # noqa: E402
from mmpipe.report.published import published_for  # noqa: E402

sm = snakemake  # noqa: F821
runs = [Path(cell) / f"seed{seed}" for cell in sm.params.cells for seed in sm.params.seeds]
build_report([r / "metrics.json" for r in runs], [r / "predictions.parquet" for r in runs],
             sm.output[0], published=published_for(sm.wildcards.cohort, sm.params.label),
             scenarios=sm.params.scenarios)
