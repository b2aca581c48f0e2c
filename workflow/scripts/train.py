import _bootstrap

_bootstrap.start(snakemake)  # noqa: F821
from pathlib import Path  # noqa: E402

from mmpipe.layout import CohortLayout  # noqa: E402

sm = snakemake  # noqa: F821
w = sm.wildcards
layout = CohortLayout(Path(sm.input.manifest).parent)
# first: Snakemake has removed this job's runs, which the other mode's flags still cover
layout.forget_other_train_mode(w.feature_set, w.method, cell_job="scenario" in w.keys())

from mmpipe.encode.made_with import check_stores  # noqa: E402

# a store Snakemake did not write is not rerun when the config changes: refused here
check_stores({m: (layout.store(m, p["encoder"]), p) for m, p in sm.params.stores.items()})

import torch  # noqa: E402

from mmpipe.bench.run import gpu_slots, run_cell, run_cells, training_device  # noqa: E402
from mmpipe.encoders.device import resolve_device  # noqa: E402

torch.set_num_threads(sm.threads)  # parallel jobs must not oversubscribe the cores
# the CPU unless the job holds a GPU slot (train_gpus in common.smk)
device = training_device(sm.config["device"], gpu_slots(sm.resources))
kwargs = {"device": str(resolve_device(device)),
          "meta": {"cohort": w.cohort, "feature_set": w.feature_set, "method": w.method}}
if "scenario" in w.keys():  # train_jobs: cell
    run_cell(layout, sm.params.train, w.scenario, float(w.rate), sm.output[0], **kwargs)
else:  # train_jobs: method
    run_cells(layout, sm.params.train, list(sm.params.cells), sm.output[0], **kwargs)
