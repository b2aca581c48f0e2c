"""Where every output of a cohort lives: the one owner of the results layout.

The Snakemake rules, the ``mmpipe`` commands and the library all build their paths
here (as nnU-Net builds its folders in one place), so the default target, the inputs
a job reads and the files a job writes cannot drift apart::

    {results}/{cohort}/
      raw/                                        demo only: the generated raw cohort
      raw/summary.json                            demo only: written last, what it planted
      manifest.parquet, manifest.json, qc/adapter.parquet
      preprocess/{modality}/volumes/shard{k}/     DICOM -> NIfTI (+ qc.parquet)
      preprocess/{modality}/tiles/shard{k}/       tile coordinates (+ qc.parquet)
      preprocess/{modality}/prompts.parquet       clinical prompts
      features/{modality}/{encoder}.zarr          feature stores
      qc.parquet, stage1_summary.md
      splits/seed{S}.parquet
      masks/{scenario}-{rate}/seed{S}.parquet
      runs/{feature_set}/{method}/{scenario}-{rate}/seed{S}/
      report/
      logs/{step}/{name}.log, benchmarks/{step}/{name}.tsv

Every argument may be a Snakemake wildcard (``"{modality}"``), so the rules declare
their patterns with the same functions the library uses for concrete paths.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

# what a cohort, modality, encoder, feature set or method name may hold: each is a folder
# name of the layout and a wildcard of the rules (workflow/rules/common.smk), checked in
# the config (mmpipe.config) so that a dot fails there, naming the key, not in the DAG
NAME_PATTERN = "[A-Za-z0-9_-]+"
MANIFEST = "manifest.parquet"
MANIFEST_META = "manifest.json"
ADAPTER_QC = "qc/adapter.parquet"
SHARD_QC = "qc.parquet"          # inside a preprocessing shard folder
SHARD_TILES = "tiles.parquet"    # inside a slide shard folder
SHARD_SETTINGS = "settings.json"  # inside a preprocessing shard folder: what made it
# the demo generator's record of what it made, written last, and the ``demo_cohort``
# rule's output: Snakemake deletes a ``directory()`` output before its job runs, so one
# changed demo option rewrote every file, and every image store after them reran
DEMO_SUMMARY = "summary.json"
# in the demo's folder while a generation runs (the workflow's job or `mmpipe demo`),
# removed once the summary is written: a killed run's folder is still the demo's to finish
DEMO_GENERATING = ".mmpipe-demo"
# inside a report folder: the page read first (its tables' stem), and the runs it was
# built from, whose mtime says when (mmpipe.report.stale reads both)
REPORT_TABLES, REPORT_RUNS = "results", "runs.csv"
REPORT_PAGE = f"{REPORT_TABLES}.md"
# the files of one run (a seed of a cell)
METRICS, PREDICTIONS, TRAIN_LOG, MODEL = ("metrics.json", "predictions.parquet", "train.log",
                                          "model.pt")

# the preprocessing folder of each kind whose subjects are preprocessed in shards
SHARD_KINDS = {"dicom": "volumes", "slide": "tiles"}


def _is_wildcard(value: object) -> bool:
    return isinstance(value, str) and value.startswith("{") and value.endswith("}")


def rate_tag(rate: float | str) -> str:
    """A scenario rate as it appears in paths: ``0.4`` -> ``"0.4"``, ``0`` -> ``"0.0"``,
    ``1e-5`` -> ``"0.00001"`` (digits and one point, as the ``rate`` wildcard expects)."""
    if _is_wildcard(rate):
        return str(rate)
    text = f"{float(rate):.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def cell_name(scenario: str, rate: float | str) -> str:
    """``{scenario}-{rate}``: one cell of a benchmark (all seeds of one scenario at a rate)."""
    return f"{scenario}-{rate_tag(rate)}"


def seed_name(seed: int | str) -> str:
    """A run's folder inside its cell: ``seed{S}``."""
    return f"seed{seed}"


def parse_cell(name: str) -> tuple[str, float]:
    scenario, rate = name.rsplit("-", 1)
    return scenario, float(rate)


@dataclass(frozen=True)
class CohortLayout:
    """The paths of one cohort's outputs under ``root`` (``{results}/{cohort}``)."""

    root: Path

    @classmethod
    def of(cls, results: str | Path, cohort: str) -> CohortLayout:
        return cls(Path(results) / cohort)

    @property
    def cohort(self) -> str:
        return self.root.name

    # -- stage 1 ---------------------------------------------------------------------------
    def raw(self) -> Path:
        return self.root / "raw"

    def raw_summary(self) -> Path:
        """The generated demo cohort's summary, written once every file is in ``raw``."""
        return self.raw() / DEMO_SUMMARY

    def manifest(self) -> Path:
        return self.root / MANIFEST

    def manifest_meta(self) -> Path:
        return self.root / MANIFEST_META

    def adapter_qc(self) -> Path:
        return self.root / ADAPTER_QC

    def manifest_files(self) -> dict[str, Path]:
        """The manifest job's outputs, by the names the rules give them."""
        return {"manifest": self.manifest(), "meta": self.manifest_meta(),
                "adapter_qc": self.adapter_qc()}

    def shard(self, modality: str, kind: str, shard: int | str) -> Path:
        """A preprocessing shard folder of a ``dicom`` or ``slide`` modality."""
        return self.root / "preprocess" / modality / SHARD_KINDS[kind] / f"shard{shard}"

    def shards(self, modality: str, kind: str, n_shards: int) -> list[Path]:
        """Every shard folder of a modality; none for kinds preprocessed without shards."""
        if kind not in SHARD_KINDS:
            return []
        return [self.shard(modality, kind, k) for k in range(n_shards)]

    def modality_shards(self, cfg: dict, modality: str) -> list[Path]:
        """The shard folders of one of this cohort's modalities, as many as the config's
        ``shards`` gives its kind."""
        kind = cfg["cohorts"][self.cohort]["modalities"][modality]["kind"]
        return self.shards(modality, kind, cfg["shards"].get(kind, 0))

    def masks(self, modality: str) -> Path:
        """A volume modality's TotalSegmentator masks (``segment`` rule)."""
        return self.root / "preprocess" / modality / "masks"

    def prompts(self, modality: str) -> Path:
        return self.root / "preprocess" / modality / "prompts.parquet"

    def store(self, modality: str, encoder: str) -> Path:
        return self.root / "features" / modality / f"{encoder}.zarr"

    def encode_inputs(self, cfg: dict, modality: str, encoder: str, *, manifest: bool = True
                      ) -> dict[str, Path | list[Path]]:
        """What the job writing ``store(modality, encoder)`` reads, by name: the manifest
        files, the modality's preprocessing shards, a text encoder's prompts, the
        TotalSegmentator masks the modality asks for where the encoder's transform reads
        them, and the file a tabular encoding was fitted on elsewhere. The ``encode``
        rule's inputs and ``mmpipe encode``'s (which left the masks out, so every subject
        of a masked modality was rejected).
        ``manifest=False``: without the manifest files (the rule adds them itself, after
        the manifest checkpoint)."""
        from mmpipe.preprocess.masks import reads_segmented_masks

        spec = cfg["cohorts"][self.cohort]["modalities"][modality]
        enc = cfg["encoders"][encoder]
        inputs: dict[str, Path | list[Path]] = dict(self.manifest_files()) if manifest else {}
        shards = self.modality_shards(cfg, modality)
        if shards:
            inputs["shards"] = shards
        if enc["type"] == "text":
            inputs["prompts"] = self.prompts(modality)
        if reads_segmented_masks(enc, spec):
            inputs["masks"] = self.masks(modality)
        if enc.get("encoding_from"):
            inputs["encoding_from"] = Path(enc["encoding_from"])
        return inputs

    def cohort_qc(self) -> Path:
        return self.root / "qc.parquet"

    def stage1_summary(self) -> Path:
        return self.root / "stage1_summary.md"

    # -- stage 2 ---------------------------------------------------------------------------
    def split(self, seed: int | str) -> Path:
        return self.root / "splits" / f"{seed_name(seed)}.parquet"

    def mask(self, scenario: str, rate: float | str, seed: int | str) -> Path:
        return self.root / "masks" / cell_name(scenario, rate) / f"{seed_name(seed)}.parquet"

    def method_runs(self, feature_set: str, method: str) -> Path:
        """Every cell of one (feature set, method): a ``train_jobs: method`` job's output."""
        return self.root / "runs" / feature_set / method

    def cell(self, feature_set: str, method: str, scenario: str, rate: float | str) -> Path:
        """One cell: a ``train_jobs: cell`` job's output, one ``seed{S}`` run per seed."""
        return self.method_runs(feature_set, method) / cell_name(scenario, rate)

    def train_job_done(self, feature_set: str, method: str, scenario: str | None = None,
                       rate: float | str | None = None) -> Path:
        """The flag a training job leaves beside its runs: of a cell's job, or with no
        ``scenario`` of a (feature set, method)'s. Snakemake reruns a job on a changed
        setting only for outputs it has a record of, and after ``train_jobs`` switched,
        the runs the other mode's jobs wrote had none: the flag is missing then, so each
        job of the new mode runs once and keeps its record."""
        if scenario is None:
            return self.root / "train_jobs" / feature_set / f"{method}.done"
        return self.cell_job_flags(feature_set, method) / f"{cell_name(scenario, rate)}.done"

    def cell_job_flags(self, feature_set: str, method: str) -> Path:
        """The folder of a (feature set, method)'s cell jobs' flags (``train_job_done``)."""
        return self.root / "train_jobs" / feature_set / method

    def forget_other_train_mode(self, feature_set: str, method: str, *, cell_job: bool
                                ) -> None:
        """Remove the flags of the other ``train_jobs`` mode's jobs over the runs a
        training job is about to rewrite: their records were of the runs before, and after
        a switch back, a setting changed and restored in between left those jobs looking
        done on runs trained with the change. A training job calls it first, before its
        imports, since Snakemake has already removed its runs."""
        if cell_job:
            self.train_job_done(feature_set, method).unlink(missing_ok=True)
        else:
            shutil.rmtree(self.cell_job_flags(feature_set, method), ignore_errors=True)

    def run(self, feature_set: str, method: str, scenario: str, rate: float | str,
            seed: int | str) -> Path:
        return self.cell(feature_set, method, scenario, rate) / seed_name(seed)

    def report(self) -> Path:
        return self.root / "report"

    # -- bookkeeping -----------------------------------------------------------------------
    def log(self, step: str, name: str | None = None) -> Path:
        return self.root / "logs" / (f"{step}/{name}.log" if name else f"{step}.log")

    def benchmark(self, step: str, name: str | None = None) -> Path:
        return self.root / "benchmarks" / (f"{step}/{name}.tsv" if name else f"{step}.tsv")


def rebuild_command(*targets: str | Path) -> str:
    """The Snakemake command that remakes ``targets`` (outputs of this layout) alone.
    ``--forcerun`` takes every word after it, so ``snakemake --forcerun manifest <file>``
    forced the file and then ran the whole default target (the benchmark's every job);
    ``--force`` is a flag."""
    return "snakemake --force " + " ".join(map(str, targets))
