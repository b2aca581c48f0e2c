"""Every method's training against the machine's matmul rate, and the disk a run leaves.

Per method: one training run (default hyper-parameters, seed 0, natural missingness, one
thread as the ``train`` rule runs) on MMIST-ccRCC-sized features: the real stores when
``results/mmist_ccrcc`` holds them, otherwise synthetic features of the same size and
availability (618 subjects; CT 512-d for 39 %, MRI 512-d for 8 %, WSI 1024-d and the
tabular clinical record, 28-d, for all; 384-d as text), on each feature set the grid
runs the method on (``with_clinical`` for most; BD's family on ``slide_clinical``, hgb
on the clinical table alone, MMARE and HyperMM also without the record or with it as
text), and on ``with_clinical`` for a method the grid does not run. Printed: CPU-seconds of the run, its FLOPs
(every forward, backward and validation pass of that run, counted by
``torch.utils.flop_counter`` in a second, identical run), the achieved fraction of the
one-thread matmul rate (timed right after the run, so that the host's drift moves a run
and its bound together; ``--rate`` fixes it), the run's floor (each matrix product at the best rate its own
shape reaches here alone, every other operator's bytes at the measured bandwidth,
counted in the same second run: ``operator_floor.py``) and the share of the CPU-seconds
it is, where the CPU went when the matmul fraction is under half (the time
inside matmul operators and inside the others, over the run's first epochs, each ATen
operator timed by a dispatch mode, against the time of the same epochs run plainly; the
rest is Python and autograd's bookkeeping), and the size of its ``model.pt``. Rows print
as each method finishes. For the grid's estimate, each of the tuning budget's other
trials (a learning rate or a width the training job also tries) is timed and counted
the same way, and a single-modality method runs once per modality.

    python benchmarks/training_time.py [--methods mmare deepsets] [--rate GFLOPS]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from operator_floor import MATMUL_OPS, FloorCounter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from mmpipe.bench.bundle import save_bundle
from mmpipe.bench.data import BenchData, Normalizer, load_feature_set
from mmpipe.bench.run import build_method
from mmpipe.bench.splits import stratified_split
from mmpipe.bench.trainer import TRAIN_DEFAULTS, NotTrainable, fit
from mmpipe.config import load_config
from mmpipe.layout import CohortLayout
from mmpipe.methods import method_class

REPO = Path(__file__).resolve().parents[1]
MMIST = {"ct": (512, 0.387), "mri": (512, 0.084), "wsi": (1024, 1.0), "clinical": (28, 1.0)}
# the clinical record's width under the text encoder (all-MiniLM-L6-v2), where the tabular
# encoding is MMIST's 28
TEXT_WIDTH = 384
# the grid's feature set most MMIST-ccRCC cells train on; a run on another (config.yaml's
# cohorts.mmist_ccrcc.benchmark.feature_sets) is timed on that one (grid_fits)
FEATURE_SET_NAME = "with_clinical"
FEATURE_SET = {"ct": "precomputed", "mri": "precomputed", "wsi": "precomputed",
               "clinical": "tabular"}


def mmist_sized(feature_set: dict[str, str] | None = None, seed: int = 0
                ) -> tuple[BenchData, str]:
    """The features of ``feature_set`` (modality -> encoder; :data:`FEATURE_SET` when
    None): the real stores when ``results/mmist_ccrcc`` holds them, else synthetic ones
    of their widths over the same subjects, labels and availability whatever the set."""
    feature_set = FEATURE_SET if feature_set is None else feature_set
    cohort = CohortLayout.of(REPO / "results", "mmist_ccrcc")
    if all(cohort.store(m, e).exists() for m, e in feature_set.items()):
        data, _ = load_feature_set(cohort.root, feature_set, "vital_status_12")
        return data, "real MMIST-ccRCC stores (results/mmist_ccrcc)"
    rng = np.random.default_rng(seed)
    n = 618
    y = (rng.random(n) < 75 / 618).astype(np.int64) ^ 1
    present = np.stack([rng.random(n) < share for _, share in MMIST.values()], axis=1)
    x = {m: (rng.normal(size=(n, d)) * present[:, [j]]).astype(np.float32)
         for j, (m, (d, _)) in enumerate(MMIST.items())}
    if feature_set.get("clinical") not in (None, "tabular"):  # the record as text
        j = list(MMIST).index("clinical")
        text = np.random.default_rng(seed + 1).normal(size=(n, TEXT_WIDTH))
        x["clinical"] = (text * present[:, [j]]).astype(np.float32)
    keep = [m for m in MMIST if m in feature_set]
    return BenchData(subject_id=np.array([f"s{i}" for i in range(n)]), y=y,
                     x={m: x[m] for m in keep},
                     present=present[:, [list(MMIST).index(m) for m in keep]],
                     modalities=keep, n_classes=2), "synthetic, MMIST-sized"


def one_thread() -> None:
    """Run as the ``train`` rule runs (``threads: 1``): torch on one thread, and every
    OpenMP and BLAS pool at one thread too, as Snakemake's ``OMP_NUM_THREADS`` and BLAS
    variables hold them in a job: the pools already loaded through threadpoolctl, those
    loaded later (scikit-learn's, at a method's first fit) through the variables. Run
    alone on the 2-core VM, the logistic regression's fit read 4.8-5.2 CPU-s with the
    pools at two threads, their spinning included, and 1.3-1.7 at one (most of it the
    first import of scikit-learn's modules; 0.1 after another fit paid it)."""
    from threadpoolctl import threadpool_limits

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    torch.set_num_threads(1)
    threadpool_limits(1)


SPLIT_EPOCHS = 10  # of each phase: the steady state
SPLIT_RUNS = 2     # of each kind (plain, operators timed), alternating; the fastest kept
RATE_SECONDS = 1.0  # of 1024x1024 products timed after each method's run, the best kept


class OperatorTimer(TorchDispatchMode):
    """Seconds inside each ATen operator (below autograd, so a composite such as
    ``linear`` counts as the ``addmm`` it runs). Where ``torch.profiler`` times a run it
    slows by recording every event, this adds a clock read around each operator. The
    clock brackets the operator's call from Python, so the call's own dispatch counts as
    the operator's: for a method of many small operators the Python left over is low,
    and noise between the plain and the timed runs can take it to zero."""

    def __init__(self):
        super().__init__()
        self.seconds: dict[str, float] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        name = func._schema.name
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return out


def _cpu_shares(mcfg: dict, data: BenchData, train: BenchData, val: BenchData
                ) -> tuple[float, dict[str, float]]:
    """Shares of the time of the run's first epochs spent inside matmul operators and
    inside each other ATen operator; the rest is Python
    (the methods', the trainer's, autograd's). The operators' seconds are from runs under
    :class:`OperatorTimer`, the whole from plain runs of the same epochs, the fastest of
    :data:`SPLIT_RUNS` each (one thread: its seconds are CPU-seconds)."""
    overrides = {"max_epochs": SPLIT_EPOCHS, "patience": 10**6}
    plain, timed = float("inf"), None
    for _ in range(SPLIT_RUNS):
        start = time.perf_counter()
        _fit(mcfg, data, train, val, overrides)
        plain = min(plain, time.perf_counter() - start)
        timer = OperatorTimer()
        with timer:
            _fit(mcfg, data, train, val, overrides)
        if timed is None or sum(timer.seconds.values()) < sum(timed.values()):
            timed = timer.seconds
    matmul = sum(v for k, v in timed.items() if k in MATMUL_OPS) / plain
    others = {k.removeprefix("aten::"): v / plain for k, v in timed.items()
              if k not in MATMUL_OPS}
    return matmul, others


@dataclass
class MethodFigures:
    name: str
    parameters: int
    epochs: str
    cpu_seconds: float
    wall_seconds: float
    flops: float | None        # None: not a torch method
    floor_seconds: float | None  # the least time its operators take (operator_floor.py)
    floor_memory_seconds: float | None  # of which the operators that only move memory
    matmul_share: float | None  # of the split runs' time: matmul operators
    other_shares: dict[str, float]  # every other ATen operator, by operator
    model_bytes: int
    # the one-thread 1024x1024 matmul rate (GFLOP/s) this run is held against: measured
    # right after it (or given), so a host whose pace drifts during the benchmark moves
    # the run's time and its bound together
    rate_gflops: float | None = None
    note: str = ""
    # every trial of the tuning budget, the row's own (default) one included, summed: what
    # one seed of one cell spends (the half-width trial costs a fraction of the default
    # and runs further from the rate, so the default run charged for every trial made
    # the grid's ratio look lower than it is)
    trials: int = 1
    trial_cpu_seconds: float = 0.0
    # the feature set the run trained on (the grid trains a method on one or more)
    feature_set: str = FEATURE_SET_NAME
    trial_flops: float | None = None
    trial_floor_seconds: float | None = None
    trial_floor_memory_seconds: float | None = None

    @property
    def other_share(self) -> float | None:
        """Every ATen operator but the matmul ones (the rest is Python); None: not split."""
        return None if self.matmul_share is None else sum(self.other_shares.values())

    def fraction(self) -> float | None:
        if self.flops is None or self.cpu_seconds <= 0 or not self.rate_gflops:
            return None
        return self.flops / (self.cpu_seconds * self.rate_gflops * 1e9)

    def bound_seconds(self) -> float | None:
        """The run's FLOPs at its matmul rate: the FLOP bound of one fit."""
        if self.flops is None or not self.rate_gflops:
            return None
        return self.flops / (self.rate_gflops * 1e9)

    def trial_bound_seconds(self) -> float | None:
        """Every trial's FLOPs at the run's matmul rate: the bound of one seed's fits."""
        if self.trial_flops is None or not self.rate_gflops:
            return None
        return self.trial_flops / (self.rate_gflops * 1e9)

    def why(self) -> str:
        """Why a run stays under half the matmul rate, from its own counts."""
        if self.note:
            return self.note
        frac = self.fraction()
        if frac is None:
            return "not torch: a scikit-learn fit, FLOPs not counted"
        if frac >= 0.5:
            return ""
        python = max(0.0, 1 - self.matmul_share - self.other_share)
        top = ", ".join(f"{name} {share:.0%}" for name, share
                        in sorted(self.other_shares.items(), key=lambda kv: -kv[1])[:2])
        return (f"CPU: matmul {self.matmul_share:.0%}, other operators "
                f"{self.other_share:.0%} ({top}), Python {python:.0%}")


def mmist_splits(data: BenchData):
    """Seed 0's split at MMIST-ccRCC's ratios (config.yaml's, 7:1:2 as the thesis: the
    default 6:1:3 trained on 371 subjects where the grid trains on 432), l2-normalised as
    the cohort's runs are."""
    from mmpipe.config import benchmark_settings

    ratios = tuple(benchmark_settings(load_config(REPO / "config.yaml"), "mmist_ccrcc")["ratios"])
    split = stratified_split(data.subject_id.tolist(), data.y, data.patterns(), 0,
                             ratios=ratios)["split"]
    split = np.asarray(split.to_list())
    # as run_seed: a subject without input is neither trained nor validated on
    train, val, test = (data.subset(np.flatnonzero(split == k)).with_input()
                        for k in ("train", "val", "test"))
    norm = Normalizer("l2").fit(train)
    return tuple(norm.transform(d) for d in (train, val, test))


def train_settings(method) -> dict:
    """The trainer's settings for ``method``: its defaults, then the method's own."""
    return {**TRAIN_DEFAULTS, **{k: v for k, v in getattr(method, "hparams", {}).items()
                                 if k in TRAIN_DEFAULTS}}


def _fit(mcfg: dict, data: BenchData, train: BenchData, val: BenchData,
         overrides: dict | None = None):
    torch.manual_seed(0)  # as run_seed: the initial weights too, so both runs are one run
    method = build_method(mcfg, data)
    return method, fit(method, train, val, {**train_settings(method), **(overrides or {})},
                       seed=0)


def run_configs(methods: dict[str, dict], modalities: list[str] | None = None
                ) -> dict[str, dict]:
    """Each configured method as one run takes it: without ``normalize`` (the trainer's
    feature normalisation, not a method's hyper-parameter), and a single-modality method
    without its modality as one run per modality of ``modalities`` (``single_ct``, ...,
    as the grid names them), or as ``single_wsi`` alone when none are given."""
    out = {}
    for name, mcfg in methods.items():
        mcfg = {k: v for k, v in mcfg.items() if k != "normalize"}
        if mcfg["type"] == "single" and "modality" not in mcfg:
            for m in modalities or ["wsi"]:
                out[f"{name}_{m}"] = {**mcfg, "modality": m}
            continue
        out[name] = mcfg
    return out


def _other_trials(mcfg: dict, method, tuning) -> list[dict]:
    """The budget's trials after the default one, as the training job draws them
    (:func:`mmpipe.bench.tuning.candidate_overrides`); none for a method with no knob."""
    from mmpipe.bench.tuning import candidate_overrides
    from mmpipe.methods.hparams import tuning_knobs

    if tuning is None or not tuning_knobs(mcfg["type"]):
        return []
    return candidate_overrides(method_class(mcfg["type"]), method.hparams, TRAIN_DEFAULTS,
                               tuning)[1:]


def _counted(name: str, mcfg: dict, parts: tuple, expected, seconds_of, rate: float
             ) -> tuple[float, float, float]:
    """FLOPs, operators' floor and its memory part of a rerun of a timed fit (``expected``:
    the timed fit's result, whose epochs the rerun must repeat)."""
    counter = FlopCounterMode(display=False)
    floor_counter = FloorCounter(seconds_of, rate)
    with counter, floor_counter:
        _, again = _fit(mcfg, *parts)
    if again.epochs != expected.epochs:
        raise RuntimeError(f"{name}: the counted run ran {again.epochs} epochs, the timed one "
                           f"{expected.epochs}: training is not deterministic")
    total = float(counter.get_total_flops())
    return total, floor_counter.seconds(total), floor_counter.memory_seconds


def grid_fits(cfg: dict, cohort: str = "mmist_ccrcc") -> dict[str, set[str]]:
    """Each feature set of the cohort's grid -> the runs (``single_ct``, ``mmare``, ...)
    the grid trains on it. A run on another feature set trains on other inputs: BD's
    family on ``slide_clinical`` trains every subject where ``with_clinical`` has it
    train the few with all four modalities (``train_subjects: complete``), and HyperMM
    without the clinical record builds 28 times the parameters."""
    from mmpipe.config import benchmark_runs

    fits: dict[str, set[str]] = {}
    for run in benchmark_runs(cfg, cohort):
        fits.setdefault(run["feature_set"], set()).add(run["method"])
    return fits


def feature_set_figures(cfg: dict, methods: dict[str, dict], rate: float | None,
                        bandwidth: list[tuple[int, float]], tuning=None,
                        cohort: str = "mmist_ccrcc") -> tuple[list[MethodFigures], str]:
    """:func:`method_figures` of ``methods`` on each feature set the grid trains them on
    (:func:`grid_fits`), each method the grid does not run on :data:`FEATURE_SET`, with
    where the features came from."""
    from mmpipe.config import cohort as cohort_config

    sets = cohort_config(cfg, cohort)["benchmark"]["feature_sets"]
    fits = grid_fits(cfg, cohort)
    in_grid = set().union(*fits.values())
    rows, sources = [], set()
    for name in [FEATURE_SET_NAME, *sorted(set(fits) - {FEATURE_SET_NAME})]:
        data, source = mmist_sized(sets[name] if name in sets else FEATURE_SET)
        sources.add(source)
        runs = fits.get(name, set())
        keep = (lambda run, runs=runs: run in runs or run not in in_grid
                ) if name == FEATURE_SET_NAME else runs.__contains__
        if not any(map(keep, run_configs(methods, data.modalities))):
            continue
        print(f"feature set {name} ({', '.join(data.modalities)}): {source}", flush=True)
        rows += method_figures(methods, data, rate, bandwidth, tuning, keep=keep,
                               feature_set=name)
    return rows, " and ".join(sorted(sources))


def method_figures(methods: dict[str, dict], data: BenchData, rate: float | None,
                   bandwidth: list[tuple[int, float]], tuning=None, keep=None,
                   feature_set: str = FEATURE_SET_NAME) -> list[MethodFigures]:
    """One run of each method, timed; then the one-thread matmul rate (``rate`` when
    given, else measured there and then: a bound taken from one timing at the start moved
    the grid's ratio by a fifth as the host's pace drifted); then the same run again under
    the FLOP counter and the floor's (``bandwidth``: :func:`machine.elementwise_bandwidth`),
    and its first epochs plainly and under the operator timer; then each other trial of
    ``tuning`` (a :class:`mmpipe.bench.budget.Tuning`; none when None) timed and counted
    the same way, for the grid (the row shows the default run). Each row is printed as it
    is measured."""
    from machine import matmul_gflops, traffic_seconds

    seconds_of = traffic_seconds(bandwidth)
    train, val, _ = mmist_splits(data)
    # the first optimiser of a process imports torch._dynamo, and a method's module its
    # libraries (scikit-learn: about 1.2 s, which the grid multiplied by every fit): a
    # job's start-up (timed in the start-up table), not any method's training
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    configs = {name: mcfg for name, mcfg in run_configs(methods, data.modalities).items()
               if keep is None or keep(name)}
    for mcfg in configs.values():
        method_class(mcfg["type"])
    print(METHOD_HEADER, flush=True)
    rows = []
    for name, mcfg in configs.items():
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            method, result = _fit(mcfg, data, train, val)
        except NotTrainable as err:
            rows.append(MethodFigures(name, 0, "-", 0.0, 0.0, None, None, None, None,
                                      {}, 0, note=f"not trainable here: {err}",
                                      feature_set=feature_set))
            print_method(rows[-1])
            continue
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        flops = floor = floor_memory = matmul = run_rate = None
        others: dict[str, float] = {}
        torch_kind = getattr(method, "kind", "torch") == "torch"

        if torch_kind:
            run_rate = rate or matmul_gflops(1, seconds=RATE_SECONDS)
            flops, floor, floor_memory = _counted(name, mcfg, (data, train, val), result,
                                                  seconds_of, run_rate)
            matmul, others = _cpu_shares(mcfg, data, train, val)
        # every trial summed: CPU-s, and for torch FLOPs, floor and its memory part
        sums = [cpu, flops, floor, floor_memory]
        overs = _other_trials(mcfg, method, tuning)
        for over in overs:
            trial_cfg = {**mcfg, **over}
            start = time.process_time()
            try:
                _, trial = _fit(trial_cfg, data, train, val)
            except (NotTrainable, ValueError, RuntimeError):
                trial = None  # a setting the method cannot build: it spends what it ran
            sums[0] += time.process_time() - start
            if torch_kind and trial is not None:
                counts = _counted(name, trial_cfg, (data, train, val), trial, seconds_of,
                                  run_rate)
                sums[1:] = [a + b for a, b in zip(sums[1:], counts, strict=True)]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            save_bundle(path, method=mcfg, state=method.state_dict(), modalities=data.modalities,
                        shapes=data.shapes(), n_classes=data.n_classes, label="y",
                        label_values=[0, 1], normalizer={}, feature_set={}, encodings={},
                        meta={})
            size = path.stat().st_size
        epochs = ",".join(str(e) for e in result.epochs.values()) or "-"
        rows.append(MethodFigures(name, int(method.trainable_parameters()), epochs, cpu, wall,
                                  flops, floor, floor_memory, matmul, others, size,
                                  run_rate, trials=1 + len(overs), trial_cpu_seconds=sums[0],
                                  trial_flops=sums[1], trial_floor_seconds=sums[2],
                                  trial_floor_memory_seconds=sums[3],
                                  feature_set=feature_set))
        print_method(rows[-1])
    return rows


METHOD_HEADER = (f"{'method':28s} {'params':>9s} {'epochs':>9s} {'CPU s':>7s} {'GFLOP':>8s} "
                 f"{'GFLOP/s':>8s} {'rate':>6s} {'of rate':>7s} {'floor s':>7s} "
                 f"{'of floor':>8s} {'model.pt':>9s}  why under 50 %")


def print_method(r: MethodFigures) -> None:
    frac = r.fraction()
    rate = f"{r.rate_gflops:6.1f}" if r.rate_gflops else f"{'-':>6s}"
    gflop = f"{r.flops / 1e9:8.2f}" if r.flops is not None else f"{'-':>8s}"
    achieved = (f"{r.flops / 1e9 / r.cpu_seconds:8.2f}" if r.flops is not None
                and r.cpu_seconds else f"{'-':>8s}")
    share = f"{frac:7.1%}" if frac is not None else f"{'-':>7s}"
    floor = r.floor_seconds
    floor_s, of_floor = ((f"{floor:7.1f}", f"{floor / r.cpu_seconds:8.1%}")
                         if floor is not None and r.cpu_seconds else (f"{'-':>7s}", f"{'-':>8s}"))
    name = r.name if r.feature_set == FEATURE_SET_NAME else f"{r.name} ({r.feature_set})"
    print(f"{name:28s} {r.parameters:9d} {r.epochs:>9s} {r.cpu_seconds:7.1f} {gflop} "
          f"{achieved} {rate} {share} {floor_s} {of_floor} {r.model_bytes / 1e6:8.2f}M  "
          f"{r.why()}", flush=True)


def training_cells(settings: dict, run: dict) -> list[str]:
    """The cells of ``run`` that train: under ``train_jobs: method`` a cell of a
    test-split-only scenario reuses the natural cell's fits when the job has that cell
    (:mod:`mmpipe.bench.shared_fits`)."""
    from mmpipe.bench.missingness import TEST_SPLIT_ONLY
    from mmpipe.config import cells_of
    from mmpipe.layout import cell_name, parse_cell

    cells = cells_of(settings, run)
    if settings["train_jobs"] != "method" or cell_name("natural", 0.0) not in cells:
        return cells
    return [c for c in cells if parse_cell(c)[0] not in TEST_SPLIT_ONLY]


def grid_tuning(cfg: dict, cohort: str = "mmist_ccrcc"):
    """The cohort's tuning budget, whose trials each seed of the grid runs."""
    from mmpipe.bench.budget import Tuning
    from mmpipe.config import benchmark_settings

    return Tuning.from_config(benchmark_settings(cfg, cohort)["tuning"])


def print_grid(rows: list[MethodFigures], cfg: dict, cohort: str = "mmist_ccrcc") -> None:
    """The cohort's whole stage-2 grid from the per-method figures: CPU-seconds against the
    FLOP bound (each method's FLOPs at the one-thread matmul rate measured after its run)
    and against its operators' floor (:mod:`operator_floor`). An estimate: every seed of a
    cell is taken as the method's trials above on the run's own feature set (seed 0, its
    natural missingness, each of the budget's trials timed and counted, one for a method
    with no knob to turn; a single-modality run as its own modality's; a completeness
    cell as the natural cell, though its masks train on fewer modalities), times the
    cells that train (:func:`training_cells`) x seeds. Its CPU-seconds
    are then split as each method's first epochs split (matmul operators, the other
    operators, Python): the matmul operators' part against the bound is how near the
    matmuls themselves run to the rate at these models' shapes; the other operators are
    the recipes' own work (dropout, noise, the optimiser, normalisation); the Python is
    the most that a scheme keeping each method's arithmetic (stacked seeds included)
    could remove; the largest of the other operators over the grid, split the same way,
    say whether any one of them is worth a change of its own."""
    from mmpipe.config import benchmark_runs, benchmark_settings

    settings = benchmark_settings(cfg, cohort)
    by_name = {(r.name, r.feature_set): r for r in rows}
    cpu = bound = floor = floor_memory = other_cpu = 0.0
    split = {"matmul": 0.0, "other operators": 0.0, "Python": 0.0}
    by_operator: dict[str, float] = {}
    missing = set()
    for run in benchmark_runs(cfg, cohort):
        row = by_name.get((run["method"], run["feature_set"]))
        if row is None:
            missing.add(f"{run['method']} ({run['feature_set']})")
            continue
        seeds = len(training_cells(settings, run)) * len(settings["seeds"])
        spent = seeds * row.trial_cpu_seconds  # every trial of every seed of every cell
        if row.flops is None:
            other_cpu += spent
        else:
            cpu += spent
            bound += seeds * row.trial_bound_seconds()
            floor += seeds * row.trial_floor_seconds
            floor_memory += seeds * row.trial_floor_memory_seconds
            # split as the default run's first epochs split: the other trials are the
            # same recipe at another width or learning rate
            matmul, other = row.matmul_share or 0.0, row.other_share or 0.0
            if matmul + other > 1:  # timing noise: the parts still add up to the CPU
                matmul, other = matmul / (matmul + other), other / (matmul + other)
            split["matmul"] += spent * matmul
            split["other operators"] += spent * other
            split["Python"] += spent * max(0.0, 1 - matmul - other)
            scale = other / row.other_share if row.other_share else 0.0  # as renormalised
            for op, share in row.other_shares.items():
                by_operator[op] = by_operator.get(op, 0.0) + spent * share * scale
    rates = [r.rate_gflops for r in rows if r.rate_gflops]
    rate_range = (f"{min(rates):.0f}-{max(rates):.0f} GFLOP/s" if rates and max(rates) > min(rates)
                  else f"{rates[0]:.0f} GFLOP/s" if rates else "no rate")
    least, most = min(r.trials for r in rows), max(r.trials for r in rows)
    print(f"grid of {cohort} ({len(settings['seeds'])} seeds a cell, each method's "
          f"{least if least == most else f'{least}-{most}'} trials a seed timed), "
          f"estimated from the runs above: torch methods {cpu:.0f} CPU-s "
          f"against a FLOP bound of {bound:.0f} s ({cpu / max(bound, 1e-9):.2f}x; each "
          f"method's FLOPs at its rate, {rate_range}); "
          f"scikit-learn methods {other_cpu:.0f} CPU-s"
          + (f"; not measured: {sorted(missing)}" if missing else ""))
    print(f"  against its operators' floor (each product at its own shape's best rate, the "
          f"other operators' bytes at the measured bandwidth: operator_floor.py) of "
          f"{floor:.0f} s ({cpu / max(floor, 1e-9):.2f}x)")
    against = {"matmul": ("the products' floor", floor - floor_memory),
               "other operators": ("their memory floor", floor_memory)}
    print("  of the torch methods' CPU-s, split as their first epochs split: "
          + ", ".join(f"{k} {v:.0f} ({v / max(bound, 1e-9):.2f}x the bound"
                      + (f", {v / max(against[k][1], 1e-9):.2f}x {against[k][0]}"
                         if k in against else "") + ")"
                      for k, v in split.items()))
    largest = sorted(by_operator.items(), key=lambda kv: -kv[1])[:6]
    print("  the largest other operators over the grid: "
          + ", ".join(f"{op} {v:.0f} ({v / max(cpu, 1e-9):.1%})" for op, v in largest))


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from machine import describe, describe_bandwidth, elementwise_bandwidth, matmul_gflops

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--rate", type=float, default=None,
                        help="one-thread matmul GFLOP/s (measured when not given)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    one_thread()
    rate = args.rate or matmul_gflops(1)  # the start's, printed; each run measures its own
    bandwidth = elementwise_bandwidth()
    cfg = load_config(REPO / "config.yaml")
    print(describe())
    print(f"one thread; matmul rate {rate:.1f} GFLOP/s "
          f"{'(given)' if args.rate else 'at the start, each method against the rate timed after its run'}; elementwise "
          f"bandwidth by working set {describe_bandwidth(bandwidth)}; each method on "
          f"{FEATURE_SET_NAME} unless named with the feature set the grid runs it on")
    methods = {k: v for k, v in cfg["methods"].items() if args.methods is None or k in args.methods}
    rows, sources = feature_set_figures(cfg, methods, args.rate, bandwidth, grid_tuning(cfg))
    print(f"data of every feature set timed: {sources}")
    print_grid(rows, cfg)


if __name__ == "__main__":
    main()
