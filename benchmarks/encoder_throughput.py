"""Encoding throughput of each encoder through the pipeline vs its bare forward pass.

For every (modality, encoder) of the demo cohort, this script
1. times the bare network forward on a batch of the job's input size and batch size (the
   text encoder: on the job's own prompts, tokenised beforehand);
2. runs the real encoding job (`mmpipe.encode.run.encode_store`: reading, preprocessing,
   forward, store writing) over a generated demo cohort and counts items per second.
Both are measured ``--repeats`` times, each job run right after its own bare timing.
pipeline÷bare is the share of the network's pace the job keeps (the limit is 1): the
median over those runs of each job against the bare forward timed just before it, so
that a host whose speed drifts between runs moves both sides of a ratio together.
Then the slide job again with every tile read slowed down, with 0, 2 and 4 reader
threads (``loader_workers``), one run each: overlapping reads with the forward recovers
the pace. Last, the reader ceiling: the Med3D jobs with the forward replaced by zeros,
with reader threads and reader processes (``loader_processes``), the pace a job can give
a network as fast as a GPU's, and the CPU its process spends a volume.

Items: volumes for med3d and vgg11_slices, tiles for clam_resnet50, prompts for text,
rows for tabular. Usage:

    python benchmarks/encoder_throughput.py [--subjects 64] [--repeats 3] [--workdir DIR]
                                            [--precision bfloat16] [--loader-workers 8]
                                            [--loader-processes]
                                            [--volume-input med3d_resnet18]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: it reads this once

import polars as pl  # noqa: E402
import torch  # noqa: E402

from mmpipe.config import load_config  # noqa: E402
from mmpipe.params import encoder_params  # noqa: E402
from mmpipe.store import FeatureStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _prepare(workdir: Path, n_subjects: int, cfg: dict) -> Path:
    """Demo cohort + manifest + preprocessing (not timed)."""
    from mmpipe.cohorts import build_manifest
    from mmpipe.cohorts.demo import generate_demo_cohort
    from mmpipe.cohorts.manifest_files import read_manifest
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
    manifest, meta = read_manifest(cohort_dir)
    p = prompt_params(cfg, "demo", "clinical")
    write_parquet(build_prompts(manifest, p["fields"], meta["labels"], p["prompt"]),
                  cohort_dir / "pre/prompts.parquet")
    return cohort_dir


def _timed(fn, seconds: float = 2.0) -> float:
    """Best seconds of ``fn()`` over repeats filling ``seconds``, after one warm-up call."""
    fn()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return best


def _bare_forward(etype, enc_cfg: dict, device: torch.device, batch: int,
                  texts: list[str] | None = None) -> float:
    """Items/s of the bare forward.

    The text encoder's bare forward is its transformer, pooling and normalisation on the
    job's own prompts, tokenised beforehand in its batches; an image network's is one
    batch of the configured input size, already on the device. Both at the encoder's
    ``precision``, as the job runs them. The network is built as the job builds it
    (:func:`~mmpipe.encode.job.build_network`), which also sets the float32 flags on CUDA:
    timed before the first job had turned cuDNN's TF32 off, Med3D's "float32" bare forward
    ran 2.4 to 2.8 times faster than the later ones on an H200."""
    from mmpipe.encode.job import EncodeJob, autocast, build_network

    job = EncodeJob(cfg=enc_cfg, params={}, modality="", device=device)
    build_network(job)
    net = job.net
    if etype.name == "text":
        batches = [[t.to(device) for t in net.tokenizer(texts[s:s + net.batch_size],
                                                        net.max_length)[:2]]
                   for s in range(0, len(texts), net.batch_size)]

        def forward():
            with autocast(job):
                for ids, mask in batches:
                    emb = net._pool(net.model(ids, mask), mask)
                    torch.nn.functional.normalize(emb, p=2, dim=1).cpu()

        return len(texts) / _timed(forward)
    net = net.to(device).eval()
    x = etype.example_input(enc_cfg, batch).to(device)

    def forward():
        with autocast(job):
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return batch / _timed(forward)


UNITS = {"clam_resnet50": "tile", "text": "prompt", "tabular": "row"}


def demo_jobs(cfg: dict, cohort_dir: Path) -> list[tuple[str, str, list | None, Path | None]]:
    """(modality, encoder, shard folders, prompts) of every encoder of the demo cohort."""
    jobs = []
    for modality, mcfg in cfg["cohorts"]["demo"]["modalities"].items():
        for encoder in mcfg["encoders"]:
            shards = ([cohort_dir / f"pre/{modality}"] if mcfg["kind"] in ("dicom", "slide")
                      else None)
            prompts = (cohort_dir / "pre/prompts.parquet"
                       if cfg["encoders"][encoder]["type"] == "text" else None)
            jobs.append((modality, encoder, shards, prompts))
    return jobs


def _timing_build(etype, spent: list[float]):
    """The registry entry with its ``build`` timed into ``spent``."""
    def build(cfg, device):
        start = time.perf_counter()
        try:
            return etype.build(cfg, device)
        finally:
            spent.append(time.perf_counter() - start)

    return dataclasses.replace(etype, build=build)


def encode_rate(cfg: dict, cohort_dir: Path, workdir: Path, device, job, overrides=None
                ) -> tuple[int, float, float]:
    """(items, pipeline items/s, bare items/s) of one encoding job. The job's own network
    build (weights loading, random init) is left out of its time: it is start-up, in the
    start-up table."""
    from mmpipe.encoders import registry

    prompts = job[3]
    params, settings = job_config(cfg, job, overrides)
    etype = registry.get_encoder_type(params["config"]["type"])
    enc_cfg = {**params["config"], **settings}
    bare = float("nan")
    if etype.build is not None:
        batch = int(enc_cfg.get("batch_size", 8))
        texts = (pl.read_parquet(prompts)["prompt"].drop_nulls().to_list()
                 if etype.name == "text" else None)
        bare = _bare_forward(etype, enc_cfg, device, batch, texts)
        if etype.name == "vgg11_slices":  # items are volumes of max_slices slices each
            bare /= enc_cfg["transform"].get("max_slices") or 32
    items, seconds, _cpu = run_job(cfg, cohort_dir, workdir, device, job, overrides)
    return items, items / seconds, bare


def job_config(cfg: dict, job, overrides=None) -> tuple[dict, dict]:
    """(params, execution settings) of one demo encoding job, ``overrides`` on top of the
    configured settings."""
    from mmpipe.encoders import registry

    modality, encoder = job[:2]
    params = copy.deepcopy(encoder_params(cfg, "demo", modality, encoder))
    settings = {**registry.execution_settings(cfg["encoders"][encoder]), **(overrides or {})}
    return params, settings


def run_job(cfg: dict, cohort_dir: Path, workdir: Path, device, job, overrides=None
            ) -> tuple[int, float, float]:
    """(items, seconds, CPU seconds of the job's process: its threads, not its reader
    processes) of one encoding job, the network's build left out of both."""
    from mmpipe.encode.run import encode_store
    from mmpipe.encoders import registry

    modality, encoder, shards, prompts = job
    params, settings = job_config(cfg, job, overrides)
    out = workdir / "stores" / f"{modality}-{encoder}-{len(list(workdir.glob('stores/*')))}.zarr"
    key = params["config"]["type"]
    etype = registry.get_encoder_type(key)
    built: list[float] = []
    if etype.build is not None:
        registry.ENCODER_TYPES[key] = _timing_build(etype, built)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        encode_store(cohort_dir, modality, params, out, device=str(device), settings=settings,
                     shard_dirs=shards, prompts=prompts)
        # the build runs on one thread: its time is CPU time of the process too
        seconds = time.perf_counter() - start - sum(built)
        cpu = time.process_time() - cpu - sum(built)
    finally:
        registry.ENCODER_TYPES[key] = etype
    store = FeatureStore(out)
    items = int(store.attrs["n_present"])
    if store.has_bag and etype.name == "clam_resnet50":
        items = int(store.group["bag"]["emb"].shape[0])  # tiles
    return items, seconds, cpu


def print_encoders(cfg: dict, cohort_dir: Path, workdir: Path, device, repeats: int = 3,
                   loader_workers: int | None = None, loader_processes: bool = False) -> None:
    """Each job run ``repeats`` times, each run against the bare forward timed just
    before it (its fastest batch). The ratio printed is the median of those paired
    ratios: the best job of a few runs against the best of every bare timing (a dozen
    for the text encoder) measured the host's drift between runs as pipeline overhead
    on a host whose pace moves by 15 % within a minute. The rates printed are the
    fastest of the runs. ``loader_workers`` overrides every job's readers;
    ``loader_processes`` makes them processes where the encoder can read in processes."""
    from mmpipe.encoders.registry import get_encoder_type

    print("pipeline = the real encoding job (read, preprocess, forward, write the store), "
          f"network build excluded; bare = forward only, same input size and batch, fastest "
          f"batch; rates: the fastest of {repeats} runs; ratio: the median of the {repeats} "
          "runs' pipeline against the bare timed just before it")
    print(f"{'modality/encoder':28s} {'items':>6s} {'item':>7s} {'pipeline/s':>11s} "
          f"{'bare/s':>9s} {'pipeline÷bare':>13s}")
    for job in demo_jobs(cfg, cohort_dir):
        modality, encoder = job[:2]
        overrides = reader_overrides(cfg, encoder, loader_workers, loader_processes)
        runs = [encode_rate(cfg, cohort_dir, workdir, device, job, overrides)
                for _ in range(repeats)]
        items = runs[0][0]
        rate, bare = max(r[1] for r in runs), max(r[2] for r in runs)
        unit = UNITS.get(get_encoder_type(cfg["encoders"][encoder]["type"]).name, "volume")
        paired = statistics.median(r[1] / r[2] for r in runs)
        ratio = f"{paired:13.2f}" if bare == bare else f"{'-':>13s}"
        bare_s = f"{bare:9.2f}" if bare == bare else f"{'no network':>9s}"
        print(f"{modality + '/' + encoder:28s} {items:6d} {unit:>7s} {rate:11.2f} {bare_s} {ratio}")


def print_throttled(cfg: dict, cohort_dir: Path, workdir: Path, device,
                    delay: float = 0.05, workers: tuple[int, ...] = (0, 2, 4)) -> None:
    """The slide job when every tile read waits ``delay`` seconds (a slow network file
    system, a remote object store), one run per number of reader threads: the readers
    recover the throughput."""
    import mmpipe.preprocess.tiling as tiling

    read_tiles = tiling.read_tiles

    def slow_read(slide, grid, indices=None):
        time.sleep(delay * (len(grid) if indices is None else len(indices)))
        return read_tiles(slide, grid, indices)

    job = next(j for j in demo_jobs(cfg, cohort_dir)
               if cfg["encoders"][j[1]]["type"] == "clam_resnet50")
    tiling.read_tiles = slow_read
    try:
        rates = {w: encode_rate(cfg, cohort_dir, workdir, device, job, {"loader_workers": w})
                 for w in workers}
    finally:
        tiling.read_tiles = read_tiles
    bare = max(r[2] for r in rates.values())  # the best bare of its runs: the pace to recover
    print(f"throttled reader ({delay * 1e3:.0f} ms per tile read), {job[0]}/{job[1]}: "
          + ", ".join(f"{w} reader thread(s) {r[1]:.1f} tiles/s ({r[1] / bare:.2f} of bare)"
                      for w, r in rates.items()))


def reader_overrides(cfg: dict, encoder: str, loader_workers: int | None,
                     loader_processes: bool) -> dict:
    """The reader settings a benchmark imposes on one encoder (none: as configured, and
    for a type that reads nothing ahead, whose config refuses them)."""
    from mmpipe.encoders.registry import READS_AHEAD, READS_IN_PROCESSES

    kind = cfg["encoders"][encoder]["type"]
    out: dict = ({} if loader_workers is None or kind not in READS_AHEAD
                 else {"loader_workers": loader_workers})
    if loader_processes and kind in READS_IN_PROCESSES:
        out["loader_processes"] = True
    return out


def print_reader_ceiling(cfg: dict, cohort_dir: Path, workdir: Path, device, repeats: int = 3
                         ) -> None:
    """The volume jobs' pace with the network's forward replaced by zeros: reading, MONAI
    transforms, the store and the job's fixed costs, the most a job can give a network
    that costs nothing (a GPU's, nearly), with reader threads and with reader processes;
    and the CPU the job's process spends a volume (its threads, not its reader
    processes), which bounds it however many cores its readers have: that Python runs
    under one GIL. The fastest of ``repeats`` runs each."""
    jobs = [j for j in demo_jobs(cfg, cohort_dir) if cfg["encoders"][j[1]]["type"] == "med3d"]
    readers = [(0, False), (1, False), (2, False), (1, True), (2, True)]
    if (os.cpu_count() or 1) > 2:
        readers += [(os.cpu_count() // 2, False), (os.cpu_count() // 2, True)]
    print("volume reader ceiling (the Med3D jobs with the forward replaced by zeros; "
          "volumes/s, and the CPU ms a volume of the job's process, reader processes not "
          f"counted; fastest of {repeats} runs):")
    with forward_replaced_by_zeros():
        for job in jobs:
            cells = []
            for workers, processes in readers:
                overrides = {"loader_workers": workers, "loader_processes": processes}
                runs = [run_job(cfg, cohort_dir, workdir, device, job, overrides)
                        for _ in range(repeats)]
                items, seconds, cpu = min(runs, key=lambda r: r[1])
                noun = ("process", "processes") if processes else ("thread", "threads")
                cells.append(f"{workers} {noun[workers != 1]} {items / seconds:.1f}/s "
                             f"({1e3 * cpu / items:.2f} ms)")
            print(f"  {job[0]}/{job[1]} ({items} volumes): " + ", ".join(cells))


@contextlib.contextmanager
def forward_replaced_by_zeros():
    """The Med3D loop, while this lasts, with its network's forward replaced by zeros of
    the feature shape (the reader ceiling's job)."""
    import mmpipe.encode.med3d as med3d_loop

    def zeros(job, batch):
        out = torch.zeros(batch.shape[0], *job.feature_shape)
        return lambda: out

    queued = med3d_loop.forward_queued
    med3d_loop.forward_queued = zeros
    try:
        yield
    finally:
        med3d_loop.forward_queued = queued


def prepare_demo(cfg: dict, n_subjects: int, workdir: Path | None) -> tuple[Path, Path]:
    cfg["preprocess"]["dicom"]["min_slices"] = 4
    workdir = Path(workdir or tempfile.mkdtemp(prefix="mmpipe-bench-"))
    cohort_dir = _prepare(workdir, n_subjects, cfg)
    # the heavy libraries imported before any timing, so no encoder pays for them
    import mmpipe.encoders.text  # noqa: F401
    import mmpipe.preprocess.tiling  # noqa: F401
    import mmpipe.preprocess.volume  # noqa: F401
    return workdir, cohort_dir


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_stage1_arguments(parser: argparse.ArgumentParser) -> None:
    """The options this script shares with ``limits.py``."""
    parser.add_argument("--subjects", type=int, default=64, help="demo cohort size")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of an encoding job (the encode rule's default: 1)")
    parser.add_argument("--repeats", type=_positive, default=3,
                        help="runs of each encoding job, each against its own bare timing, the "
                             "median ratio kept (limits.py: also of each start-up probe, "
                             "the median kept)")
    parser.add_argument("--loader-workers", type=int, default=None,
                        help="every image encoder's readers (default: as config.yaml "
                             "sets them)")
    parser.add_argument("--loader-processes", action="store_true",
                        help="the volume encoders' readers are processes, not threads")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "float16"), default=None,
                        help="every network encoder's forward precision (default: as "
                             "config.yaml sets it); mixed precision is meant for a GPU")
    parser.add_argument("--volume-input", metavar="ENCODER", default=None,
                        help="the demo's encoders of ENCODER's type take its transform and "
                             "batch size: med3d_resnet18 runs the Med3D jobs at MedicalNet's "
                             "input, 56x448x448 (default: as config.yaml sets them)")


def as_configured(value) -> str:
    return "as configured" if value is None else str(value)


def set_precision(cfg: dict, precision: str | None) -> None:
    """Every encoder with a network runs at ``precision`` (None: as configured)."""
    from mmpipe.encoders.registry import get_encoder_type

    if precision is None:
        return
    for enc_cfg in cfg["encoders"].values():
        if get_encoder_type(enc_cfg["type"]).build is not None:
            enc_cfg["precision"] = precision


def set_volume_input(cfg: dict, encoder: str | None) -> None:
    """Every encoder of the demo cohort of ``encoder``'s type takes its ``transform`` and
    ``batch_size``, so that the demo's small volumes run through a real cohort's input
    (None: as configured). The demo's own recipes are small to keep the demo fast on a
    CPU; on a GPU the input size decides whether the readers or the network bound a job."""
    if encoder is None:
        return
    source = cfg["encoders"].get(encoder)
    if source is None or "transform" not in source:
        raise SystemExit(f"--volume-input {encoder}: not an encoder of config.yaml with a "
                         "volume transform")
    demo = {e for m in cfg["cohorts"]["demo"]["modalities"].values() for e in m["encoders"]}
    taking = [e for e in sorted(demo) if cfg["encoders"][e]["type"] == source["type"]]
    if not taking:
        raise SystemExit(f"--volume-input {encoder}: no encoder of the demo cohort is a "
                         f"{source['type']}")
    for name in taking:
        cfg["encoders"][name]["transform"] = copy.deepcopy(source["transform"])
        # a batch size left unset is the loop's own default, which differs by type
        cfg["encoders"][name].pop("batch_size", None)
        if "batch_size" in source:
            cfg["encoders"][name]["batch_size"] = source["batch_size"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_stage1_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)

    from mmpipe.encoders.device import resolve_device

    cfg = load_config(REPO / "config.yaml")
    set_precision(cfg, args.precision)
    set_volume_input(cfg, args.volume_input)
    workdir, cohort_dir = prepare_demo(cfg, args.subjects, args.workdir)
    device = resolve_device(args.device)
    from machine import describe

    print(f"machine: {describe()}; torch threads {torch.get_num_threads()}, device {device}")
    print(f"cohort: demo, {args.subjects} subjects; config.yaml encoders as configured "
          f"(batch size), loader workers {as_configured(args.loader_workers)}"
          f"{' (processes for volumes)' if args.loader_processes else ''}, "
          f"precision {as_configured(args.precision)}, volume input "
          f"{as_configured(args.volume_input)}")
    print_encoders(cfg, cohort_dir, workdir, device, args.repeats, args.loader_workers,
                   args.loader_processes)
    print_throttled(cfg, cohort_dir, workdir, device)
    print_reader_ceiling(cfg, cohort_dir, workdir, device, args.repeats)


if __name__ == "__main__":
    main()
