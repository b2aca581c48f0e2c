"""Job start-up of the ``encode`` and ``train`` rules: from the process's start to the
moment the job begins its work, per encoder type and for a neural training job.

Each measurement runs the rule's own script (``workflow/scripts/encode.py``,
``train.py``) in a fresh Python process, as Snakemake's ``script:`` does (its preamble
imports ``snakemake.script``), with the ``snakemake`` object the rule would pass. The
child stops at the first subject an encoding loop is given (after the imports, the
manifest, the inputs, the network and its weights) or at a training job's first epoch
(after its stores, split, mask, model and optimiser): what every job pays before any
work. The median of three runs (``--repeats``). An image encoder is measured twice: with its seeded
random init (as the demo runs) and with a weights file (as a real run loads its
official weights; here the random-init network's own weights, saved to a file).

    python benchmarks/startup.py [--workdir DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY = "mmpipe-startup-ready"


class _Named(dict):
    """Snakemake's named lists as the scripts use them: ``.name``, ``[0]``, ``keys()``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err

    def __getitem__(self, key):
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


def snakemake_object(spec: dict) -> dict:
    """The attributes of the ``snakemake`` object a rule script is given, for ``spec``."""
    return {"input": _Named(spec["input"]), "params": _Named(spec["params"]),
            "wildcards": _Named(spec["wildcards"]), "output": [spec["output"]], "log": [],
            "threads": 1, "config": spec["config"],
            "resources": _Named({})}  # a job without a GPU slot, as the rules' default


def _child(spec_path: str) -> None:
    """Run one rule script until its work begins, then print the marker and exit."""
    import runpy

    import snakemake.script  # noqa: F401  (Snakemake's script preamble imports it)

    spec = json.loads(Path(spec_path).read_text())

    def ready(*_args, **_kwargs):
        print(READY, flush=True)
        os._exit(0)

    if spec["rule"] == "encode":
        import mmpipe.encode.job

        mmpipe.encode.job.SubjectWriter.__init__ = ready  # made just before the loop runs
    else:
        import mmpipe.bench.trainer

        mmpipe.bench.trainer._epoch_order = ready          # the first epoch's batches
    sm = type("Snakemake", (), {})()
    for key, value in snakemake_object(spec).items():
        setattr(sm, key, value)
    script = REPO / "workflow" / "scripts" / f"{spec['rule']}.py"
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), init_globals={"snakemake": sm}, run_name="__main__")
    raise SystemExit(f"{script} finished without reaching its work")


def time_to_ready(spec: dict, workdir: Path, repeats: int = 3) -> float:
    """Median seconds from starting the child to its marker."""
    path = workdir / f"startup-{spec['rule']}-{spec['wildcards'].get('encoder', 'train')}.json"
    path.write_text(json.dumps(spec, default=str))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", str(path)], cwd=REPO,
                              capture_output=True, text=True,
                              env={**os.environ, "TQDM_DISABLE": "1"})
        took = time.perf_counter() - start
        if READY not in proc.stdout:
            raise RuntimeError(f"{spec['rule']} start-up probe failed:\n{proc.stderr[-3000:]}")
        times.append(took)
    return statistics.median(times)


def encode_specs(cfg: dict, cohort_dir: Path, workdir: Path) -> list[tuple[str, dict]]:
    """One encoding job per encoder type of the demo cohort."""
    from mmpipe.encoders.registry import get_encoder_type
    from mmpipe.params import encoder_params

    specs, seen = [], set()
    for modality, mcfg in cfg["cohorts"]["demo"]["modalities"].items():
        for encoder in mcfg["encoders"]:
            etype = get_encoder_type(cfg["encoders"][encoder]["type"]).name
            if etype in seen:
                continue
            seen.add(etype)
            inputs = {"manifest": str(cohort_dir / "manifest.parquet")}
            if mcfg["kind"] in ("dicom", "slide"):
                inputs["shards"] = [str(cohort_dir / "pre" / modality)]
            if etype == "text":
                inputs["prompts"] = str(cohort_dir / "pre" / "prompts.parquet")
            params = encoder_params(cfg, "demo", modality, encoder)
            variants = [("", params)]
            if "weights" in get_encoder_type(etype).weight_files:
                variants = [(", random init", params),
                            (", weights file", _with_weights_file(params, workdir, encoder))]
            for label, variant in variants:
                # the rule's job reads where the weights lie from the config's encoder
                # entry (execution_settings), the params carry them in its key
                job_cfg = {**cfg, "encoders": {
                    **cfg["encoders"], encoder: {**cfg["encoders"][encoder],
                                                 "weights": variant["config"].get("weights")}}}
                specs.append((f"encode {modality}/{encoder} ({etype}{label})", {
                    "rule": "encode", "input": inputs, "params": {"encoder": variant},
                    "wildcards": {"cohort": "demo", "modality": modality, "encoder": encoder},
                    "output": str(workdir / "startup" / f"{modality}-{encoder}.zarr"),
                    "config": job_cfg}))
    return specs


def _with_weights_file(params: dict, workdir: Path, encoder: str) -> dict:
    """``params`` with ``weights`` naming a file that holds the encoder's network's weights
    (its seeded random init, saved once): the path a run with official weights takes."""
    import torch

    from mmpipe.encoders.registry import get_encoder_type
    from mmpipe.hashing import params_hash

    key = params_hash(params["config"])
    path = workdir / "weights" / f"{encoder}-{key[:12]}.pt"  # a reused workdir, a new depth
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        etype = params["config"]["type"]
        net, _ = get_encoder_type(etype).build(
            {**params["config"], "allow_random_init": True}, torch.device("cpu"))
        torch.save({**net.state_dict(), **_dropped_by_the_job(etype)}, path)
    return {**params, "config": {**params["config"], "weights": str(path)}}


def _dropped_by_the_job(encoder_type: str) -> dict:
    """The tensors an official weights file holds beyond the network the job builds, which
    the job reads, hashes and drops (``drop_prefixes``): VGG11's classifier (494 MB of the
    file's 531) and ResNet50's layer4 and fc (68 MB of 102); MedicalNet's segmentation
    head, under 1 MB, is left out. A file of the network alone timed the VGG11 job's
    start-up about 0.3-0.7 s short."""
    import torch

    if encoder_type.startswith("vgg11"):
        shapes = {"classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
                  "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
                  "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}
        return {k: torch.zeros(shape) for k, shape in shapes.items()}
    if encoder_type in ("clam_resnet50", "resnet50_images"):
        from monai.networks.nets import resnet50

        full = resnet50(spatial_dims=2, n_input_channels=3, num_classes=1000,
                        shortcut_type="B", bias_downsample=False)
        return {k: v for k, v in full.state_dict().items() if k.startswith(("layer4.", "fc."))}
    return {}


def train_params(cfg: dict, method: str) -> dict:
    """The ``train`` rule's params for one cell of ``method`` on the demo's tabular clinical
    store: every one the job's script reads (a missing one failed the probe, and
    ``limits.py`` with it, when the script began to check its stores)."""
    from mmpipe.params import encoder_params

    train = {"method": {"type": method}, "feature_set": {"clinical": "tabular"},
             "label": "label", "normalize": "zscore", "evaluate_subsets": True, "seeds": [0],
             "tuning": {"trials": 1}, "keep_models": "all"}
    return {"train": train,
            "stores": {"clinical": encoder_params(cfg, "demo", "clinical", "tabular")}}


def train_spec(cfg: dict, cohort_dir: Path, method: str = "mmare") -> tuple[str, dict]:
    """A neural training job (one cell) on the demo's tabular clinical store."""
    from mmpipe.bench.prepare import make_mask, make_split
    from mmpipe.encode.run import encode_store
    from mmpipe.layout import CohortLayout
    from mmpipe.params import encoder_params

    layout = CohortLayout(cohort_dir)
    store = layout.store("clinical", "tabular")
    if not store.exists():
        encode_store(cohort_dir, "clinical", encoder_params(cfg, "demo", "clinical", "tabular"),
                     store, device="cpu")
    make_split(cohort_dir, "label", 0, (0.6, 0.1, 0.3), layout.split(0))
    make_mask(cohort_dir, "natural", 0.0, 0, layout.mask("natural", 0.0, 0))
    return f"train {method} (one cell)", {
        "rule": "train", "input": {"manifest": str(layout.manifest())},
        "params": train_params(cfg, method),
        "wildcards": {"cohort": "demo", "feature_set": "clinical", "method": method,
                      "scenario": "natural", "rate": "0.0"},
        "output": str(cohort_dir / "startup-train-cell"), "config": cfg}


def print_startup(cfg: dict, cohort_dir: Path, workdir: Path, limit: float = 3.0,
                  repeats: int = 3) -> None:
    print(f"{'job':56s} {'start-up s':>10s}  (limit {limit:.0f} s, median of {repeats})")
    for name, spec in [*encode_specs(cfg, cohort_dir, workdir), train_spec(cfg, cohort_dir)]:
        seconds = time_to_ready(spec, workdir, repeats)
        print(f"{name:56s} {seconds:10.2f}  {'' if seconds <= limit else 'over the limit'}",
              flush=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="runs per job (the median)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from encoder_throughput import prepare_demo
    from machine import describe

    from mmpipe.config import load_config

    print(f"machine: {describe()}; each job on the CPU, {args.subjects} demo subjects")
    cfg = load_config(REPO / "config.yaml")
    cfg["device"] = "cpu"
    workdir, cohort_dir = prepare_demo(cfg, args.subjects,
                                       Path(args.workdir) if args.workdir else
                                       Path(tempfile.mkdtemp(prefix="mmpipe-startup-")))
    print_startup(cfg, cohort_dir, workdir, repeats=args.repeats)


if __name__ == "__main__":
    main()
