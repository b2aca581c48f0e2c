"""Cohort adapters: turn a raw cohort layout into the manifest and the adapter QC.

Adding a dataset is a config change for layouts the ``csv`` adapter covers; a new
layout is one module with an ``adapt(cohort_cfg, *, out_dir, base_dir)`` function
returning an :class:`~mmpipe.cohorts.manifest.AdapterOutput` and a ``check_config``
function for what its layout fixes, registered in :data:`ADAPTERS` as an
:class:`AdapterType`. Everything the manifest contract promises is enforced in
:mod:`mmpipe.cohorts.manifest`, not in the adapters.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mmpipe.cohorts import (
    adni,
    bcnb,
    brats,
    breakhis,
    csv_adapter,
    demo_adapter,
    ixi,
    mmist,
    mmist_raw,
)
from mmpipe.cohorts.manifest import AdapterOutput, config_path, finalize_manifest
from mmpipe.cohorts.manifest_files import modality_presence, read_manifest, read_qc, write_manifest
from mmpipe.errors import ConfigError

log = logging.getLogger(__name__)

Adapter = Callable[..., AdapterOutput]


def _no_masks(cohort_cfg: dict) -> bool:
    return False


@dataclass(frozen=True)
class AdapterType:
    """What a cohort adapter is, in one place: how it builds the cohort (``adapt``), what
    of its config it fixes (``check_config``: the labels it derives, the modality names
    and kinds its layout has, its own options; run by the config check before any job,
    and by ``adapt`` itself), the tables of its download (``source_tables``, under
    ``root``: the ``manifest`` job's inputs; None for an adapter that reads no download,
    whose inputs the workflow declares), and whether its manifest gives each volume
    modality a mask per subject (``gives_masks``, the column ``<modality>_mask_path``)."""

    adapt: Adapter
    check_config: Callable[[dict], None]
    source_tables: tuple[str, ...] | None = None
    gives_masks: Callable[[dict], bool] = _no_masks

    @property
    def module(self) -> str:
        """The adapter's module, which keys its manifests."""
        return self.adapt.__module__


# The tables each dataset adapter reads under its ``root`` (:func:`source_tables`). A
# table listed that an adapter's config leaves unread only rebuilds the manifest for
# nothing: the jobs after it rerun on the digests of what they read, not on its mtime.
_MMIST_TABLES = (mmist.CLINICAL_CSV, *sorted({name for src in mmist.SOURCES.values()
                                              for name in (src.series, src.chosen) if name}))

ADAPTERS: dict[str, AdapterType] = {
    "demo": AdapterType(demo_adapter.adapt, demo_adapter.check_config),
    "mmist_ccrcc": AdapterType(mmist.adapt, mmist.check_config, _MMIST_TABLES),
    "csv": AdapterType(csv_adapter.adapt, csv_adapter.check_config),
    # BraTS gives its `_seg` file, IXI the brain masks of the folder `ixi.brain_masks`
    # names; elsewhere only a modality's own `mask` (TotalSegmentator) gives one
    "ixi": AdapterType(ixi.adapt, ixi.check_config, (ixi.SPREADSHEET,),
                       lambda cohort_cfg: bool((cohort_cfg.get("ixi") or {}).get("brain_masks"))),
    "brats": AdapterType(brats.adapt, brats.check_config, brats.SURVIVAL_FILES,
                         lambda cohort_cfg: True),
    # labels and magnifications come from the folder names
    "breakhis": AdapterType(breakhis.adapt, breakhis.check_config, ()),
    "bcnb": AdapterType(bcnb.adapt, bcnb.check_config,
                        (bcnb.SPREADSHEET,
                         *(f"{bcnb.SPLIT_FOLDER}/{name}" for name in bcnb.SPLIT_FILES.values()))),
    "adni": AdapterType(adni.adapt, adni.check_config, (adni.TABLE,)),
    "mmist_ccrcc_raw": AdapterType(mmist_raw.adapt, mmist_raw.check_config, _MMIST_TABLES),
}

# options naming a table outside ``root`` (``adni.table``, ``brats.survival_csv``)
_TABLE_OPTIONS = ("table", "survival_csv")
# options naming a folder of files an adapter takes, relative to ``root`` or anywhere
# (``ixi.brain_masks``, ``mmist_ccrcc_raw.slides``): listed with the download
_FOLDER_OPTIONS = ("brain_masks", "slides")
# files the OS or an editor leaves beside a download (Excel's lock file while a table is
# open): no download, listed or not
_NOT_DOWNLOADS = ("Thumbs.db", "desktop.ini")
# the listing's mark of a file that is a link to nothing (a download's file not fetched)
_NOT_FETCHED = b"not fetched"

__all__ = ["ADAPTERS", "AdapterType", "adapter_config", "build_manifest", "download_listing",
           "modality_presence", "read_manifest", "read_qc", "source_tables"]


def source_tables(cohort_cfg: dict, base_dir: Path | None = None) -> list[Path]:
    """The tables of a dataset adapter's download that exist now: the ``manifest`` job's
    inputs, so that a table edited (a label fixed, a row added) rebuilds the manifest and,
    through its digests, what reads the part that changed. A missing table is left to the
    adapter, whose error says what the layout needs. Image folders are not inputs (a
    slide or a DICOM series is no table to compare): :func:`download_listing` sees what
    is added to them. The ``csv`` and ``demo`` adapters' inputs are declared by the
    workflow itself."""
    base_dir = Path.cwd() if base_dir is None else Path(base_dir)
    root = _download_root(cohort_cfg, base_dir)
    if root is None:
        return []
    name = cohort_cfg["adapter"]
    options = cohort_cfg.get(name) or {}
    paths = [root / table for table in ADAPTERS[name].source_tables or ()]
    paths += [config_path(options[key], base_dir) for key in _TABLE_OPTIONS if options.get(key)]
    return [path for path in paths if path.is_file()]


def _download_root(cohort_cfg: dict, base_dir: Path) -> Path | None:
    """A dataset adapter's download folder; None for the ``csv`` and ``demo`` adapters."""
    if ADAPTERS[cohort_cfg["adapter"]].source_tables is None or "root" not in cohort_cfg:
        return None
    return config_path(cohort_cfg["root"], base_dir)


def download_listing(cohort_cfg: dict, base_dir: Path | None = None,
                     skip: Iterable[str | Path] = ()) -> str | None:
    """SHA-256 of the names of every file and folder under a dataset adapter's ``root``
    (for the ``csv`` adapter, of the paths its CSV names that the adapter rejects, None
    when it takes all: :func:`mmpipe.cohorts.csv_adapter.paths_rejected`; None for the ``demo``
    adapter, whose input says it all): a parameter of
    the ``manifest`` job, so that a download added (new subjects, a modality fetched
    later, BreakHis's folders that hold its labels) rebuilds the manifest, and the jobs
    after it rerun by the digests of what changed for them. Names only, not times: a
    download copied to another disk rebuilds nothing here (a file replaced under its name
    reruns the jobs that read it by its own stamp). The folders an adapter option names
    outside ``root`` (IXI's brain masks) are listed too. Hidden entries (``.DS_Store``, a
    ``.snakemake`` folder), the OS's and editors' files (``Thumbs.db``, Excel's ``~$``
    lock files) and the folders in ``skip`` (the workflow's results, when they lie under
    ``root``) are left out; symlinked folders are followed once each. A file that is a
    link to nothing (not fetched) is listed as such, so fetching it rebuilds the manifest
    that rejected it. One walk of the
    download each time Snakemake plans, as the stage-1 jobs' file stamps walk every
    DICOM folder of the manifest."""
    base_dir = Path.cwd() if base_dir is None else Path(base_dir)
    if cohort_cfg["adapter"] == "csv":
        missing = csv_adapter.paths_rejected(cohort_cfg, base_dir)
        return (hashlib.sha256("\0".join(missing).encode()).hexdigest() if missing
                else None)
    root = _download_root(cohort_cfg, base_dir)
    if root is None:
        return None
    if not root.is_dir():
        return "missing"  # the adapter's error says what the layout needs
    options = cohort_cfg.get(cohort_cfg["adapter"]) or {}
    # an option's absolute path replaces root; by its key, so that a download moved with
    # its workflow lists the same
    folders = {"root": root, **{key: root / Path(options[key]).expanduser()
                                for key in _FOLDER_OPTIONS if options.get(key)}}
    left_out = {os.path.realpath(config_path(str(p), base_dir)) for p in skip}
    seen: set[str] = set()
    digest = hashlib.sha256()
    for key, top in folders.items():
        real = os.path.realpath(top)
        if real in seen:
            continue  # a folder option inside root: listed with it
        seen.add(real)
        digest.update(f"{key}:\0".encode())
        _list_folder(top, left_out, seen, digest)
    return digest.hexdigest()


def _listed(name: str) -> bool:
    return not name.startswith((".", "~$")) and name not in _NOT_DOWNLOADS


def _list_folder(top: Path, left_out: set[str], seen: set[str], digest) -> None:
    """Top-down, each folder's subfolders (``name/``) then its files, in name order, as
    ``os.walk`` lists them; by ``os.scandir`` so that a file's entry says whether it is a
    link without a stat, and only links are checked for a target."""
    from mmpipe.io.walk import not_fetched

    def visit(folder: str) -> None:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            return  # as os.walk: a folder it cannot list adds nothing
        dirs, files = [], []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(entry.name)
        listed, descend = [], []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(folder, d))
            if not _listed(d) or real in left_out:
                continue
            listed.append(f"{d}/")
            if real not in seen:  # a symlink to a folder listed already: its name only
                seen.add(real)
                descend.append(d)
        by_name = {e.name: e for e in entries}
        rel = os.path.relpath(folder, top)
        for name in (*listed, *sorted(f for f in files if _listed(f))):
            # os.fsencode: a file name that is not UTF-8 comes back as the bytes it was
            line = os.fsencode(os.path.join(rel, name))
            # a link to nothing is listed as one: fetched later (datalad get), it keeps its
            # name, and the manifest that rejected it was never rebuilt (a listed folder,
            # "d/", is no entry's name)
            if name in by_name and not_fetched(by_name[name]):
                line += b"\0" + _NOT_FETCHED
            digest.update(line + b"\0")
        for d in descend:
            visit(os.path.join(folder, d))

    visit(str(top))


def adapter_config(cfg: dict, cohort: str) -> dict:
    """The cohort's config as its adapter sees it: each table modality also lists the
    fields its tabular encoders read as categories (``categorical``), so the manifest
    never blanks a category code such as stage "X" as a value that is not a number."""
    if cohort not in cfg["cohorts"]:
        raise ConfigError(f"unknown cohort {cohort!r} (known: {sorted(cfg['cohorts'])})")
    c = copy.deepcopy(cfg["cohorts"][cohort])
    for mod in c["modalities"].values():
        if mod["kind"] == "table":
            mod["categorical"] = sorted({f for e in mod["encoders"]
                                         if cfg["encoders"][e]["type"] == "tabular"
                                         for f in cfg["encoders"][e].get("categorical") or ()
                                         if f in mod["fields"]})
    return c


def build_manifest(
    cohort: str, cohort_cfg: dict, out_dir: Path, *, base_dir: Path | None = None
) -> pl.DataFrame:
    """Run the cohort's adapter and write ``manifest.parquet``, ``manifest.json`` and
    ``qc/adapter.parquet`` atomically under ``out_dir`` (``results/{cohort}``).

    Relative paths in ``cohort_cfg`` (``root``, ``csv``, ``raw_dir``) are resolved
    against ``base_dir`` (default: the working directory, i.e. the workflow root).
    Returns the manifest frame.
    """
    name = cohort_cfg.get("adapter")
    if name not in ADAPTERS:
        raise ConfigError(f"cohort {cohort!r}: unknown adapter {name!r} "
                          f"(known: {sorted(ADAPTERS)})")
    out_dir = Path(out_dir)
    base_dir = Path.cwd() if base_dir is None else Path(base_dir)
    out = ADAPTERS[name].adapt(cohort_cfg, out_dir=out_dir, base_dir=base_dir)
    manifest = finalize_manifest(cohort, name, out)
    write_manifest(manifest, out_dir)
    log.info("cohort %r: manifest of %d subjects written to %s (%d excluded)",
             cohort, manifest.meta["n_subjects"], out_dir, manifest.meta["n_excluded"])
    return manifest.frame
