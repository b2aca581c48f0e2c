"""``mmpipe`` command line: thin wrappers over the library (nnU-Net style).

The Snakemake workflow calls the same functions; these commands are for running a
step by hand, outside Snakemake, and for looking at what was produced.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

from mmpipe.errors import MmpipeError
from mmpipe.layout import (
    DEMO_GENERATING,
    METRICS,
    MODEL,
    PREDICTIONS,
    TRAIN_LOG,
    rebuild_command,
)
from mmpipe.logs import setup_logging


def _config_layers(args) -> list[Path]:
    """The files of the config as the workflow reads it: ``config.yaml`` (the Snakefile's
    ``configfile:``, from the working directory when there) with each ``--config``
    laid over it in order, as Snakemake lays ``--configfile`` files."""
    base = Path("config.yaml")
    given = [Path(p) for p in (args.config or [])]
    layers = ([base] if base.is_file() else []) + [
        p for p in given if not (base.is_file() and p.resolve() == base.resolve())]
    return layers or [base]  # not found: the error names it


def _config(args):
    from mmpipe.config import load_config_layers

    return load_config_layers(_config_layers(args))


def _named(args) -> str:
    """The config's files as a message names them: a ``--config`` is laid over the
    ``config.yaml`` here, which was left out of what the message said was read."""
    return " + ".join(str(p) for p in _config_layers(args))


def cmd_demo(args) -> None:
    """The demo cohort the workflow's ``demo_cohort`` rule writes: the settings of the
    config's ``cohorts.<cohort>.demo`` block, into the cohort's raw folder. With ``OUT``,
    anywhere, and ``--n-subjects``/``--seed`` may change the settings (never in the
    workflow's folder, whose record would then disagree with its files); the generator's
    own defaults there when the config has no demo cohort (said so)."""
    from mmpipe.cohorts.demo import demo_settings, generate_demo_cohort
    from mmpipe.errors import ConfigError

    flags = {k: v for k, v in (("n_subjects", args.n_subjects), ("seed", args.seed))
             if v is not None}
    if flags and not args.out:
        raise ConfigError("--n-subjects and --seed change the demo: give OUT, or set them in "
                          "the config's demo block for the workflow's own folder")
    cohort = args.cohort or "demo"
    cfg = _config(args) if args.config or Path("config.yaml").is_file() else None
    spec = cfg["cohorts"].get(cohort, {}) if cfg is not None else {}
    if spec.get("adapter") == "demo":
        options = dict(spec.get("demo") or {})  # what the demo_cohort rule passes
        out = Path(args.out) if args.out else _layout(cfg, cohort).raw()
        source = f"cohorts.{cohort}.demo of {_named(args)}"
    elif args.out and not args.cohort:
        options, out = {}, Path(args.out)
        source = "the generator's defaults (no demo cohort in a config here)"
    elif cfg is None and args.cohort:
        raise ConfigError(f"--cohort {args.cohort} names a demo cohort of a config, and there "
                          "is no config.yaml here and no --config")
    elif cfg is None:
        raise ConfigError("no config.yaml here and no --config: give OUT")
    else:
        raise ConfigError(f"cohort {cohort!r} is not a demo cohort of the config")
    owners = [c for c, d in (cfg["cohorts"].items() if cfg is not None else ())
              if d.get("adapter") == "demo" and out.resolve() == _layout(cfg, c).raw().resolve()]
    if flags and owners:
        raise ConfigError(f"{out} is the workflow's own folder of cohort {owners[0]!r}: "
                          "--n-subjects and --seed go to another OUT, or into the config's "
                          "demo block")
    if owners and cohort not in owners:
        raise ConfigError(f"{out} is the workflow's own folder of cohort {owners[0]!r}, and "
                          f"the settings are {source}: give --cohort {owners[0]}, or another "
                          "OUT")
    if owners and not args.force:
        from mmpipe.cohorts.demo import settings_differ

        # a finished output of other settings: the workflow's record says its own
        if differ := settings_differ(out, options):
            raise ConfigError(f"{out} holds the demo cohort of other settings ({differ}); "
                              "replaced, the workflow would take it as its own and up to "
                              "date: regenerate it with the workflow on this config "
                              f"({rebuild_command(out / 'summary.json')}), or pass --force "
                              "to replace it")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file: the demo cohort is a folder")
    options.update(flags)
    # settings checked before the folder is made: --n-subjects 0 left an empty OUT, and
    # --seed -1 failed as numpy's "expected non-negative integer"
    if (seed := options.get("seed")) is not None and int(seed) < 0:
        raise ConfigError(f"demo cohort: seed must be >= 0, got {seed}")
    try:
        demo_settings(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"demo cohort: {err}") from None
    marked = _claim_a_folder_for_the_demo(out)
    print(f"settings: {source}; {json.dumps(options, default=str)}", file=sys.stderr)
    try:
        summary = generate_demo_cohort(out, **options)
    except ValueError as err:  # the generator's check of its settings (--n-subjects 0)
        # it wrote nothing: a mark this run left would claim the folder once emptied,
        # whatever a user puts there later
        if marked:
            (out / DEMO_MARK).unlink(missing_ok=True)
        raise ConfigError(f"demo cohort: {err}") from None
    # summary.json claims the folder now; a mark left would claim it after it was emptied
    (out / DEMO_MARK).unlink(missing_ok=True)
    print(json.dumps(summary, indent=2, default=str))


# what `mmpipe demo` leaves in its folder before the generator writes a file, as the
# generator does while it runs: a run killed before the generator's summary.json (the
# workflow's demo_cohort job too) is still the demo's to finish
DEMO_MARK = DEMO_GENERATING


def _claim_a_folder_for_the_demo(out: Path) -> bool:
    """The generator replaces the demo's tables and removes files of its modality folders
    that are not its own: given a folder of the user's, it had overwritten their
    ``clinical.csv`` without a word. It writes into a new or empty folder, or over a demo
    cohort (its ``summary.json``, or the mark a killed ``mmpipe demo`` left, which a
    finished run removes). True when this call left the mark (none was there)."""
    from mmpipe.cohorts.demo import SUMMARY_JSON
    from mmpipe.errors import ConfigError

    fresh = not out.is_dir() or not any(out.iterdir())
    if not fresh and not (out / DEMO_MARK).is_file():
        try:
            ours = "params" in json.loads((out / SUMMARY_JSON).read_text())
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise ConfigError(f"{out} holds files and no demo cohort ({SUMMARY_JSON}): the "
                              "demo would overwrite or remove them; give a new or empty "
                              "folder")
    out.mkdir(parents=True, exist_ok=True)
    marked = not (out / DEMO_MARK).is_file()
    (out / DEMO_MARK).touch()
    return marked


def cmd_check_config(args) -> None:
    cfg = _config(args)
    print(f"{_named(args)}: valid; cohorts {sorted(cfg['cohorts'])}, "
          f"encoders {sorted(cfg['encoders'])}, default run {cfg['run_cohorts']}")


def _layout(cfg: dict, cohort: str):
    from mmpipe.config import cohort as cohort_config
    from mmpipe.layout import CohortLayout

    cohort_config(cfg, cohort)  # a named error for an unknown cohort
    return CohortLayout.of(cfg["results"], cohort)


def cmd_manifest(args) -> None:
    """Build a cohort's manifest where the workflow's ``manifest`` checkpoint writes it. A
    manifest there that this config would build otherwise (other adapter options, other
    files), or one that cannot be read to tell, is not replaced without ``--force``: the
    checkpoint, whose record says its own settings, would take the replaced manifest as
    up to date, and every job after it would read it. One that only lacks its adapter QC
    is rebuilt when the rest is what this config builds."""

    import polars as pl

    from mmpipe.cohorts import adapter_config, build_manifest, read_qc
    from mmpipe.cohorts.manifest_files import read_manifest

    cfg = _config(args)
    layout = _layout(cfg, args.cohort)
    cohort_cfg = adapter_config(cfg, args.cohort)
    if cohort_cfg["adapter"] == "demo":
        from mmpipe.cohorts.demo import check_made_with

        cohort_cfg["raw_dir"] = str(layout.raw())
        check_made_with(cohort_cfg["raw_dir"], cohort_cfg.get("demo") or {})
    there = None
    if layout.manifest().is_file() and not args.force:
        unreadable = (MmpipeError, OSError, ValueError, KeyError, TypeError,
                      pl.exceptions.PolarsError)
        try:
            there, there_meta = read_manifest(layout.root)
        except unreadable as err:  # a killed build's, or files of two builds
            raise MmpipeError(
                f"{layout.manifest()} is there but cannot be read ({type(err).__name__}: "
                f"{err}), so it cannot be compared with what this config builds: rebuild "
                f"it with the workflow ({rebuild_command(layout.manifest())}), "
                "or pass --force to replace it") from None
        try:
            there_qc = read_qc(layout.root)
        except unreadable:
            there_qc = None  # the manifest and its JSON decide
    if there is not None:
        with _aside(layout) as tmp:
            build_manifest(args.cohort, cohort_cfg, Path(tmp))
            (now, now_meta), now_qc = read_manifest(tmp), read_qc(tmp)
            same = now.equals(there) and now_meta == there_meta
            if same and there_qc is not None and now_qc.equals(there_qc):
                print(f"{layout.manifest()}: {len(now)} subjects, as it was")
                return
            if not same or there_qc is not None:
                raise MmpipeError(
                    f"{layout.manifest()} (or its adapter QC) differs from what this config "
                    f"builds ({len(there)} subjects there, {len(now)} now): replaced, the "
                    "workflow would take it as its own and up to date. Rebuild it with the "
                    f"workflow on this config ({rebuild_command(layout.manifest())}), or "
                    "pass --force to replace it")
            # the same manifest without its QC: this build's files take their places
            # rather than the adapter run again
            _place_built(Path(tmp), layout)
        print(f"{layout.manifest()}: {len(now)} subjects")
        return
    # built aside, then moved in: built in place, a build that failed on its last write
    # (a full disk) left the new JSON beside the old parquet, which read as a manifest
    layout.root.mkdir(parents=True, exist_ok=True)
    with _aside(layout) as tmp:
        df = build_manifest(args.cohort, cohort_cfg, Path(tmp))
        _place_built(Path(tmp), layout)
    print(f"{layout.manifest()}: {len(df)} subjects")


@contextlib.contextmanager
def _aside(layout):
    """A folder to build a manifest in beside the cohort's, removed after; named as the
    workflow's temporary siblings are, so that a killed command's is swept as theirs are
    (a ``tempfile`` folder stayed for good)."""
    from mmpipe.fsutil import tmp_sibling

    tmp = tmp_sibling(layout.root / ".manifest")
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _place_built(built_dir: Path, layout) -> None:
    """Move a manifest built in ``built_dir`` into ``layout``'s place, the parquet last
    as :func:`~mmpipe.cohorts.manifest_files.write_manifest` writes it (the parquet on
    disk implies the rest). Renames in one file system: nothing left to fail on space."""
    from mmpipe.layout import CohortLayout

    built = CohortLayout(built_dir)
    files = sorted(p for p in built_dir.rglob("*") if p.is_file() and p != built.manifest())
    for src in [*files, built.manifest()]:
        dst = layout.root / src.relative_to(built_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def cmd_encode(args) -> None:
    import torch

    from mmpipe.encode.run import encode_store, skip_unused_imports
    from mmpipe.encoders.registry import execution_settings
    from mmpipe.params import encoder_params

    if args.threads < 1:
        raise MmpipeError(f"--threads must be at least 1, not {args.threads}")
    # torch splits reductions by its thread count, so a store encoded on all the cores
    # differed by float rounding from the workflow's, encoded on the rule's threads (one
    # by default; a profile's set-threads, as the SLURM profile's, gives it more)
    torch.set_num_threads(args.threads)
    cfg = _config(args)
    skip_unused_imports()  # a command's own process
    layout = _layout(cfg, args.cohort)
    params = encoder_params(cfg, args.cohort, args.modality, args.encoder)
    inputs = layout.encode_inputs(cfg, args.modality, args.encoder)
    out = layout.store(args.modality, args.encoder)
    _check_inputs_made_for(cfg, args, inputs)
    if not args.force:
        _refuse_other_settings(out, params)
    encode_store(layout.root, args.modality, params, out, device=cfg["device"],
                 settings=execution_settings(cfg["encoders"][args.encoder]),
                 shard_dirs=inputs.get("shards"), prompts=inputs.get("prompts"),
                 masks=inputs.get("masks"))
    print(out)


def _check_inputs_made_for(cfg: dict, args, inputs: dict) -> None:
    """Refuse prompts or masks made with other settings (or another manifest) than this
    config's: the workflow reruns their jobs on a change, a hand-run has none to rerun, and
    its store would record settings its inputs were not made with."""
    import polars as pl

    from mmpipe.cohorts.manifest_files import read_manifest
    from mmpipe.layout import CohortLayout
    from mmpipe.made_with import MADE_WITH_KEY, made_with
    from mmpipe.params import manifest_view, prompt_params, segment_params
    from mmpipe.preprocess.masks import MASKS_TABLE

    layout = CohortLayout.of(cfg["results"], args.cohort)
    manifest = None
    try:
        manifest = read_manifest(layout.root)
    except MmpipeError:
        pass  # not built: what the inputs lack is named below
    except Exception as err:  # a damaged copy: the encode's traceback named no file
        raise MmpipeError(f"{layout.manifest()} cannot be read ({type(err).__name__}: {err}): "
                          f"rebuild it ({rebuild_command(layout.manifest())})"
                          ) from err
    checks = []
    if "prompts" in inputs:
        checks.append((Path(inputs["prompts"]), "clinical_prompts",
                       lambda: prompt_params(cfg, args.cohort, args.modality)))
    if "masks" in inputs:
        checks.append((Path(inputs["masks"]) / MASKS_TABLE, "segment",
                       lambda: segment_params(cfg, args.cohort, args.modality)))
    missing = [d for d in inputs.get("shards", []) if not Path(d).is_dir()]
    if missing:  # read as a shard from before shards recorded their settings
        raise MmpipeError(f"{missing[0]} is not built ({len(missing)} of "
                          f"{len(inputs['shards'])} shards missing): run its preprocessing "
                          f"first (snakemake {missing[0]})")
    if inputs.get("shards") and manifest is not None and not args.force:
        refuse_shards_older_than_their_files(manifest, args.modality, inputs["shards"])
    view = manifest_view(cfg, args.cohort, args.modality)
    for path, rule, params in checks:
        target = path.parent if rule == "segment" else path  # the rule's output
        if not path.is_file():
            raise MmpipeError(f"{path} is not built: run the {rule} rule first (snakemake "
                              f"{target})")
        try:
            made = pl.read_parquet_metadata(path).get(MADE_WITH_KEY)
        except pl.exceptions.PolarsError as err:  # a damaged copy: a traceback said so
            raise MmpipeError(f"{path} cannot be read ({err}): rebuild it with "
                              f"`{rebuild_command(target)}`") from err
        if made is None:  # the workflow has no changed setting to rerun it by
            raise MmpipeError(f"{path} records nothing of what it was made with (an older "
                              f"mmpipe): rebuild it with `{rebuild_command(target)}` "
                              "before encoding by hand")
        if made != made_with(params(), view)[MADE_WITH_KEY]:
            raise MmpipeError(f"{path} was made with other settings or another manifest than "
                              f"this config's: rebuild it with the workflow on this config "
                              f"(snakemake {target}) before encoding by hand")


def refuse_shards_older_than_their_files(manifest: tuple, modality: str,
                                         shards: list) -> None:
    """Refuse shards made before a file of the modality changed. A shard records its
    settings, not the files it read (prompts and masks record the manifest's view): the
    workflow reruns it when the view changes, and a hand-run encode read the old shards
    of a regenerated or replaced series into a store of exit code 0. Compared by mtime,
    the view's own measure of a change (a folder: its folders', as the view stamps it).
    ``manifest``: the cohort's, as :func:`~mmpipe.cohorts.manifest_files.read_manifest`
    gives it."""
    import time

    from mmpipe.io.walk import folder_stamps
    from mmpipe.layout import SHARD_SETTINGS

    made = {Path(d): (Path(d) / SHARD_SETTINGS).stat().st_mtime_ns for d in shards
            if (Path(d) / SHARD_SETTINGS).is_file()}
    if not made:
        return  # the shards' own check names them
    df, meta = manifest
    column = meta["modalities"].get(modality, {}).get("path_column")
    if column is None or column not in df.columns:
        return
    for value in df[column].drop_nulls().to_list():
        path = Path(value)
        try:
            times = ([t for _, t in folder_stamps(path) if isinstance(t, int)]
                     if path.is_dir() else [path.stat().st_mtime_ns])
        except OSError:
            continue  # the preprocessing names a file it cannot read
        newest = max(times, default=0)
        older = sorted(d for d, t in made.items() if t < newest)
        if older:
            future = (" (dated in the future: a copy from a host whose clock runs ahead)"
                      if newest > time.time_ns() else "")
            raise MmpipeError(f"{older[0]} (and {len(older) - 1} more of {len(made)} shards) "
                              f"was made before {path} changed{future}: run the "
                              f"preprocessing again ({rebuild_command(*older)}) before "
                              "encoding by hand, or "
                              "pass --force to encode from the shards as they are")


def _refuse_other_settings(out: Path, params: dict) -> None:
    """Refuse to replace a finished store made with another encoder setting or
    preprocessing than this config's: the workflow, whose record says the config's
    settings, would take the replaced store as up to date (``--force`` replaces it)."""
    from mmpipe.encode.made_with import settings_differences
    from mmpipe.store import FeatureStore

    try:
        attrs = FeatureStore(out).attrs
    except Exception:  # none there, or none finished: nothing to replace
        return
    differ = settings_differences(attrs, params)
    if differ:
        raise MmpipeError(f"{out} is a finished store made with other {' and '.join(differ)} "
                          "than this config's; replaced, the workflow would take it as its "
                          "own and up to date. Encode with the workflow's config, or pass "
                          "--force to replace it")


def _read_every_chunk(store) -> list[int]:
    """Decode every chunk of every array: a chunk cut short (an interrupted copy) of
    ``emb``, ``subject_id`` or ``reason`` was summarised as a healthy store, and one of
    ``present`` or ``status`` ended in a decompressor's traceback naming no store.
    Returns the rows of ``emb`` holding NaN or inf, found in the same pass."""
    import numpy as np

    def arrays(group, prefix=""):
        for name, arr in sorted(group.arrays()):
            yield prefix + name, arr
        for name, sub in sorted(group.groups()):
            yield from arrays(sub, f"{prefix}{name}/")

    not_finite: list[int] = []
    for name, arr in arrays(store.group):
        try:
            if not arr.ndim:
                arr.get_basic_selection(...)
                continue
            rows = max(arr.chunks[0], 1)
            for lo in range(0, arr.shape[0], rows):
                block = arr.get_basic_selection(slice(lo, lo + rows))
                if name == "emb":
                    finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
                    not_finite += (lo + np.flatnonzero(~finite)).tolist()
        except Exception as err:  # the codecs raise what they raise (RuntimeError, ...)
            raise MmpipeError(f"{store.path}: array {name!r} cannot be read ({type(err).__name__}"
                              f": {err}): a damaged copy; encode it again") from err
    return not_finite


def _check_bag(store) -> None:
    """The bag as its writer left it. A chunk of ``bag/emb`` or ``bag/coords`` lost in a
    copy reads as zeros, and a lost ``bag/offsets`` chunk as every bag empty; the store's
    own checks cover the arrays stage 2 reads, not these."""
    import numpy as np

    if not store.has_bag:
        return
    bag, n = store.group["bag"], len(store.subject_ids)
    problems = []
    if "offsets" not in bag or "emb" not in bag:
        problems.append("no bag/offsets or bag/emb")
    else:
        offsets, rows = np.asarray(bag["offsets"][:]), bag["emb"].shape[0]
        counts = np.diff(offsets)
        if (offsets.shape != (n + 1,) or offsets[0] != 0 or (counts < 0).any()
                or offsets[-1] != rows):
            problems.append(f"bag/offsets of {offsets.shape[0]} entries ending at "
                            f"{offsets[-1] if len(offsets) else None}, for {n} subjects and "
                            f"{rows} rows of bag/emb")
        elif (counts[~store.present] != 0).any():
            problems.append("bag items of subjects without an embedding")
        if "coords" in bag and bag["coords"].shape[0] != rows:
            problems.append(f"{bag['coords'].shape[0]} rows of bag/coords for {rows} items")
        # every row of a bag is written; zarr leaves out a chunk of only its fill value,
        # zeros, which no encoder's features fill, but coordinates can (VGG11's slice
        # index 0 of every subject's one slice): theirs are not counted
        emb = bag["emb"]
        if emb.nchunks_initialized < emb.nchunks:
            problems.append(f"{emb.nchunks - emb.nchunks_initialized} of {emb.nchunks} "
                            "chunks of bag/emb are not on disk")
    if problems:
        raise MmpipeError(f"{store.path}: its bag disagrees with what its writer wrote "
                          f"({'; '.join(problems)}): a damaged copy (a chunk lost in "
                          "transfer?); encode it again")


def _check_rows(store, not_finite: list[int]) -> None:
    """What stage 2 would meet in the rows, and the store's own checks (a lost
    ``subject_id`` chunk's empty IDs among them) do not count: two rows of one ID, and a
    present row of NaN or inf (``not_finite``: the rows of ``emb`` holding them; the
    writer refuses both), which stage 2 reads as absent."""
    import numpy as np

    ids, present = store.subject_ids, store.present
    problems = []
    named, counts = np.unique(ids, return_counts=True)
    if (twice := named[counts > 1]).size:
        problems.append(f"subject(s) listed more than once: {twice[:5].tolist()}")
    if unusable := [i for i in not_finite if present[i]]:
        problems.append(f"{len(unusable)} present subject(s) with NaN or inf features, "
                        f"which stage 2 reads as absent: {ids[unusable[:5]].tolist()}")
    if problems:
        raise MmpipeError(f"{store.path}: its rows are not what its writer writes "
                          f"({'; '.join(problems)}): a damaged copy; encode it again")


def cmd_inspect(args) -> None:
    from mmpipe.store import FeatureStore

    try:
        store = FeatureStore(args.store)
    except MmpipeError:
        raise
    except Exception as err:  # a chunk the store's own checks read could not be decoded
        raise MmpipeError(f"{args.store}: the store cannot be read ({type(err).__name__}: "
                          f"{err}): a damaged copy; encode it again") from err
    _check_rows(store, _read_every_chunk(store))
    _check_bag(store)
    a = store.attrs
    print(f"{store.path}")
    print(f"  encoder   {a.get('encoder')} ({a.get('encoder_type')}), modality {a.get('modality')}")
    print(f"  weights   {'RANDOM-INIT (not pretrained)' if a.get('weights_random_init') else a.get('weights_source')}"
          f"  sha256 {a.get('weights_sha256')}")
    print(f"  subjects  {a.get('n_subjects')}, present {a.get('n_present')}, "
          f"status {a.get('status_counts')}")
    print(f"  emb       {tuple(store.emb.shape)} float32; bag: {store.has_bag}")
    print(f"  created   {a.get('created')}; preprocessing hash {a.get('preprocessing_hash')}")


def cmd_predict(args) -> None:
    from mmpipe.bench.predict import class_labels, load_run, score_stores
    from mmpipe.encoders.device import resolve_device
    from mmpipe.fsutil import write_parquet

    stores = {}
    for spec in args.store:
        modality, sep, path = spec.partition("=")
        if not sep:
            raise MmpipeError(f"--store takes MODALITY=PATH, not {spec!r}")
        if modality in stores:  # the last one given was scored, without a word
            raise MmpipeError(f"--store gives modality {modality!r} twice ({stores[modality]} "
                              f"and {path}): give one store a modality")
        stores[modality] = path
    if Path(args.out).is_dir():  # found only after the model had scored every subject
        raise MmpipeError(f"--out {args.out} is a folder: give the parquet file to write")
    out, run = Path(args.out).resolve(), Path(args.run).resolve()
    # given its model file, the run's own files are beside it: scores of the user's own
    # name may go there, not over the predictions.parquet the report reads
    run_files = {run.parent / name for name in (METRICS, PREDICTIONS, TRAIN_LOG, MODEL)}
    if (run in out.parents) if run.is_dir() else (out == run or out in run_files):
        # it overwrote the run's model.pt, or the predictions.parquet the report reads
        raise MmpipeError(f"--out {args.out} is inside the run's folder {args.run}, or is "
                          "one of its files: write the scores elsewhere")
    if Path(args.out).suffix.lower() != ".parquet":  # scores.csv was written as parquet
        raise MmpipeError(f"--out {args.out}: the scores are written as parquet (with the "
                          "classes in its metadata); give a .parquet file")
    # and so is a folder that cannot be made (a file in its place, no permission); the
    # folders made here go again if scoring fails, so a failed run leaves nothing behind
    parent = Path(args.out).absolute().parent
    made = [d for d in (parent, *parent.parents) if not d.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    try:
        device = resolve_device(args.device)
        method, bundle = load_run(args.run, device)
        table = score_stores(method, bundle, stores, device)
        classes = class_labels(bundle)
        # which class each score_k is, in the file too (a parquet reader shows its metadata)
        write_parquet(table, args.out, metadata={"mmpipe.label": str(bundle.get("label")),
                                                 "mmpipe.score_classes": json.dumps(classes)})
    except BaseException:
        for folder in made:  # deepest first; one another process wrote into stays
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    print(f"{args.out}: {len(table)} subjects scored, {int(table['no_input'].sum())} without "
          f"input; " + ", ".join(f"score_{k} = P({bundle.get('label')} = {v})"
                                 for k, v in enumerate(classes)))


VERBOSE_HELP = "log debug messages too"
CONFIG_HELP = ("a config laid over ./config.yaml, as snakemake --configfile (repeat to lay "
               "several in order)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmpipe", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="write the synthetic demo cohort (the config's demo "
                       "settings, into the cohort's raw folder unless OUT is given)")
    p.add_argument("out", nargs="?")
    p.add_argument("--config", action="append", metavar="FILE", help=CONFIG_HELP)
    p.add_argument("--cohort", help="the config's demo cohort (default: demo)")
    p.add_argument("--n-subjects", type=int, help="over the config's (with OUT only)")
    p.add_argument("--seed", type=int, help="over the config's (with OUT only)")
    p.add_argument("--force", action="store_true",
                   help="replace the workflow's demo folder made with other settings")
    p.set_defaults(func=cmd_demo)

    for name, func, help_ in (("check-config", cmd_check_config, "validate a config file"),
                              ("manifest", cmd_manifest, "build a cohort's manifest")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", action="append", metavar="FILE", help=CONFIG_HELP)
        if name == "manifest":
            p.add_argument("--cohort", required=True)
            p.add_argument("--force", action="store_true",
                           help="replace a manifest the config would build otherwise")
        p.set_defaults(func=func)

    p = sub.add_parser("encode", help="encode one modality into a feature store "
                                      "(its preprocessing must exist)")
    p.add_argument("--config", action="append", metavar="FILE", help=CONFIG_HELP)
    p.add_argument("--cohort", required=True)
    p.add_argument("--modality", required=True)
    p.add_argument("--encoder", required=True)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1, as the encode rule runs by default: "
                        "a store of the same bytes as the workflow's; the thread count "
                        "changes float rounding, so match a profile's set-threads, e.g. "
                        "the SLURM profile's 8)")
    p.add_argument("--force", action="store_true",
                   help="replace a finished store made with other settings, and encode "
                        "from preprocessing shards older than the files they were made from")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("predict", help="score subjects with a trained run (any modality subset)")
    p.add_argument("run", help="a run directory (holds model.pt)")
    p.add_argument("--store", action="append", required=True, metavar="MODALITY=PATH",
                   help="feature store of one modality; repeat for each available modality")
    p.add_argument("--out", required=True, help="predictions parquet to write")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda, cuda:N, or auto (CUDA where present)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("inspect", help="summarise a feature store")
    p.add_argument("store")
    p.set_defaults(func=cmd_inspect)
    for p in sub.choices.values():  # after the command too (`mmpipe inspect -v X`)
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help=VERBOSE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(level=10 if args.verbose else 20)
    try:
        args.func(args)
    except MmpipeError as err:
        print(f"mmpipe: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a path that cannot be read or written: the user's to fix
        if args.verbose:
            raise
        print(f"mmpipe: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
