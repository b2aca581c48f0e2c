import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from mmpipe.bench.run import run_cell  # noqa: E402
from mmpipe.encoders.device import resolve_device  # noqa: E402

sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)  # parallel jobs must not oversubscribe the cores
p = sm.params.train
w = sm.wildcards
seeds = [int(s) for s in sm.params.seeds]
run_cell(
    Path(sm.input.manifest).parent, p["feature_set"], p["label"], p["method"],
    dict(zip(seeds, sm.input.splits, strict=True)), dict(zip(seeds, sm.input.masks, strict=True)),
    sm.output[0], normalize=p["normalize"], evaluate_subsets=p["evaluate_subsets"],
    device=str(resolve_device(sm.params.device)),
    meta={"cohort": w.cohort, "feature_set": w.feature_set, "method": w.method,
          "scenario": w.scenario, "rate": float(w.rate)},
)
