import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

from mmpipe.cohorts import adapter_config, build_manifest  # noqa: E402

sm = snakemake  # noqa: F821
cohort_cfg = adapter_config(sm.config, sm.wildcards.cohort)
if cohort_cfg["adapter"] == "demo":
    from mmpipe.cohorts.demo import check_made_with

    cohort_cfg["raw_dir"] = str(Path(sm.input.raw).parent)  # the summary's folder
    check_made_with(cohort_cfg["raw_dir"], cohort_cfg.get("demo") or {})
build_manifest(sm.wildcards.cohort, cohort_cfg, Path(sm.output.manifest).parent)
