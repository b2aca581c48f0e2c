"""Encoding throughput of each encoder through the pipeline vs its bare forward pass.

For every encoder of the demo config, this script
1. runs the real encoding job (`mmpipe.encode.run.encode_store`: reading, preprocessing,
   forward, store writing) over a generated demo cohort and counts items per second;
2. times the bare network forward on a batch of the same input size.
The ratio bare/pipeline shows what I/O and preprocessing cost.

Items: volumes for med3d and vgg11_slices, tiles for clam_resnet50, prompts for text,
rows for tabular. Usage:

    python benchmarks/encoder_throughput.py [--subjects 12] [--workdir /tmp/mmpipe-bench]
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: it reads this once

import torch  # noqa: E402

from mmpipe.config import load_config  # noqa: E402
from mmpipe.params import encoder_params  # noqa: E402
from mmpipe.store import FeatureStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _prepare(workdir: Path, n_subjects: int, cfg: dict) -> Path:
    """Demo cohort + manifest + preprocessing (not timed)."""
    from mmpipe.cohorts import build_manifest
    from mmpipe.cohorts.demo import generate_demo_cohort
    from mmpipe.cohorts.manifest import read_manifest
    from mmpipe.fsutil import write_parquet
    from mmpipe.params import dicom_params, prompt_params, tiling_params
    from mmpipe.preprocess.dicom_shard import convert_dicom_shard
    from mmpipe.preprocess.prompts import build_prompts
    from mmpipe.preprocess.slide_shard import tile_slide_shard

    cohort_dir = workdir / "demo"
    raw = cohort_dir / "raw"
    if not raw.exists():
        generate_demo_cohort(raw, n_subjects=n_subjects, seed=1)
    cohort_cfg = dict(cfg["cohorts"]["demo"], raw_dir=str(raw))
    build_manifest("demo", cohort_cfg, cohort_dir)
    convert_dicom_shard(cohort_dir, "ct", 0, 1, dicom_params(cfg), cohort_dir / "pre/ct")
    tile_slide_shard(cohort_dir, "wsi", 0, 1, tiling_params(cfg), cohort_dir / "pre/wsi")
    manifest, _ = read_manifest(cohort_dir)
    p = prompt_params(cfg, "demo", "clinical")
    write_parquet(build_prompts(manifest, p["fields"], p["labels"], p["prompt"]),
                  cohort_dir / "pre/prompts.parquet")
    return cohort_dir


def _bare_forward(etype, enc_cfg: dict, device: torch.device, batch: int, repeats: int = 3):
    """(items/s of the bare forward, seconds to build the network with its weights)."""
    start = time.perf_counter()
    net, _ = etype.build(enc_cfg, device)
    build = time.perf_counter() - start
    if etype.name == "text":
        texts = ["Clinical record. Age 63 years. Sex: female. Tumour stage II."] * batch
        net.encode(texts)
        start = time.perf_counter()
        for _ in range(repeats):
            net.encode(texts)
        return batch * repeats / (time.perf_counter() - start), build
    net = net.to(device).eval()
    x = etype.example_input(enc_cfg, batch).to(device)
    with torch.inference_mode():
        net(x)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start), build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=16)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    from mmpipe.encode.run import encode_store
    from mmpipe.encoders.device import resolve_device
    from mmpipe.encoders.registry import execution_settings, get_encoder_type

    cfg = load_config(REPO / "config.yaml")
    cfg["preprocess"]["dicom"]["min_slices"] = 4
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mmpipe-bench-"))
    cohort_dir = _prepare(workdir, args.subjects, cfg)
    # import the heavy libraries before any timing, so the first encoder does not pay for them
    import mmpipe.encoders.text  # noqa: F401
    import mmpipe.preprocess.tiling  # noqa: F401
    import mmpipe.preprocess.volume  # noqa: F401
    device = resolve_device(args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, device {device}")
    print(f"cohort: demo, {args.subjects} subjects; config.yaml encoders as configured")
    print("pipeline = the real encoding job (read, preprocess, forward, write the store), "
          "network build time excluded;\nbare = forward only, on a batch of the same input size")
    print(f"{'modality/encoder':28s} {'items':>6s} {'item':>7s} {'build s':>8s} "
          f"{'pipeline/s':>11s} {'bare/s':>9s} {'bare÷pipeline':>13s}")
    jobs = [("mri_t1", "med3d_demo", None, None), ("mri_t2", "vgg11_slices", None, None),
            ("ct", "med3d_demo", [cohort_dir / "pre/ct"], None),
            ("wsi", "clam_resnet50", [cohort_dir / "pre/wsi"], None),
            ("clinical", "text_minilm", None, cohort_dir / "pre/prompts.parquet"),
            ("clinical", "tabular", None, None)]
    for modality, encoder, shards, prompts in jobs:
        params = copy.deepcopy(encoder_params(cfg, "demo", modality, encoder))
        out = workdir / "stores" / f"{modality}-{encoder}.zarr"
        start = time.perf_counter()
        encode_store(cohort_dir, modality, params, out, device=str(device),
                     settings=execution_settings(cfg["encoders"][encoder]), shard_dirs=shards,
                     prompts=prompts)
        seconds = time.perf_counter() - start
        store = FeatureStore(out)
        items = int(store.attrs["n_present"])
        if store.has_bag and params["config"]["type"] == "clam_resnet50":
            items = int(store.group["bag"]["emb"].shape[0])  # tiles
        etype = get_encoder_type(params["config"]["type"])
        enc_cfg = {**params["config"], **execution_settings(cfg["encoders"][encoder])}
        bare, build = float("nan"), 0.0
        if etype.build is not None:
            batch = int(enc_cfg.get("batch_size", 8))
            if etype.name == "vgg11_slices":  # items are volumes of max_slices slices each
                slices = enc_cfg["transform"].get("max_slices") or 32
                bare, build = _bare_forward(etype, enc_cfg, device, slices)
                bare /= slices
            else:
                bare, build = _bare_forward(etype, enc_cfg, device, batch)
        rate = items / max(seconds - build, 1e-9)
        unit = {"clam_resnet50": "tile", "text": "prompt", "tabular": "row"}.get(etype.name,
                                                                                 "volume")
        print(f"{modality + '/' + encoder:28s} {items:6d} {unit:>7s} {build:8.2f} {rate:11.2f} "
              f"{bare:9.2f} {bare / rate:13.2f}")


if __name__ == "__main__":
    main()
