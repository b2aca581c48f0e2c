import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from mmpipe.bench.run import run_cell, run_cells  # noqa: E402
from mmpipe.encoders.device import resolve_device  # noqa: E402

sm = snakemake  # noqa: F821
torch.set_num_threads(sm.threads)  # parallel jobs must not oversubscribe the cores
p = sm.params.train
w = sm.wildcards
seeds = [int(s) for s in sm.params.seeds]
splits = dict(zip(seeds, sm.input.splits, strict=True))
masks = list(sm.input.masks)  # cell by cell, seeds within a cell (train_inputs)
if len(masks) != len(sm.params.cells) * len(seeds):
    raise ValueError(f"{len(masks)} masks for {len(sm.params.cells)} cells × {len(seeds)} seeds")
cells = {cell: dict(zip(seeds, masks[i * len(seeds):(i + 1) * len(seeds)], strict=True))
         for i, cell in enumerate(sm.params.cells)}
kwargs = {"normalize": p["normalize"], "evaluate_subsets": p["evaluate_subsets"],
          "device": str(resolve_device(sm.params.device)),
          "meta": {"cohort": w.cohort, "feature_set": w.feature_set, "method": w.method}}
args = (Path(sm.input.manifest).parent, p["feature_set"], p["label"], p["method"], splits)
if "scenario" in w.keys():  # train_jobs: cell
    run_cell(*args, cells[f"{w.scenario}-{w.rate}"], sm.output[0],
             **{**kwargs, "meta": {**kwargs["meta"], "scenario": w.scenario,
                                   "rate": float(w.rate)}})
else:  # train_jobs: method
    run_cells(*args, cells, sm.output[0], **kwargs)
