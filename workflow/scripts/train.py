import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from mmpipe.bench.run import run_experiment  # noqa: E402
from mmpipe.encoders.device import resolve_device  # noqa: E402

sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)  # parallel jobs must not oversubscribe the cores
p = sm.params.train
w = sm.wildcards
run_experiment(
    Path(sm.input.manifest).parent, p["feature_set"], p["label"], p["method"], sm.input.split,
    sm.input.mask, sm.output[0], seed=int(w.seed), normalize=p["normalize"],
    evaluate_subsets=p["evaluate_subsets"], device=str(resolve_device(sm.params.device)),
    meta={"cohort": w.cohort, "feature_set": w.feature_set, "method": w.method,
          "scenario": w.scenario, "rate": float(w.rate)},
)
