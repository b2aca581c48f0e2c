"""Where the demo's planted signal lives: its AUC at every step from the latent model to
the trained methods, so a change that loses it shows at the step that lost it.

Run after the demo (``snakemake --cores 2``, default config):

    python benchmarks/demo_signal.py [--results results/demo] [--config config.yaml]

Steps, each as the AUC of the label on the labelled subjects that have the modality
(but for the ceilings of step 2 on each seed's test split, which score every test
subject, as the trained runs of step 4 do):

1. latent: the generator's own reading of the risk for the modality (``summary.json``).
2. image: the image property that carries it, measured back from the raw files
   (T1 lesion volume, T2 lesion brightness, CT lesion enhancement, slide nuclei and tint;
   clinical: age and stage from the table). Then the cohort's ceiling: the AUC of z's
   posterior mean from each subject's own readings, on every labelled subject and on each
   seed's test split, the most any fusion can reach here; and on each test split the
   most each modality alone can reach, with the subjects that lack it at the prior.
3. store: a cross-validated linear probe (z-scored ridge-penalised logistic regression,
   5 folds, 3 repeats) on each encoder store, and the share of the latent reading a
   cross-validated linear map of the features recovers (R²): a store can keep the
   reading (high R²) and still lose the label to its dimension.
4. trained: the test AUC of every trained run (mean ± std over seeds) under natural
   missingness, from the report's ``summary.csv``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
IMAGING = ("mri_t1", "mri_t2", "ct", "wsi")


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def _probe(x: np.ndarray, y: np.ndarray) -> float:
    """Mean AUC of out-of-fold logistic-regression scores over 3 repeated 5-fold splits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=5000))
    folds = min(5, int(np.bincount(y).min()))
    return float(np.mean([
        _auc(y, cross_val_predict(clf, x, y, method="predict_proba",
                                  cv=StratifiedKFold(folds, shuffle=True, random_state=r))[:, 1])
        for r in range(3)]))


def _recovered(x: np.ndarray, reading: np.ndarray) -> float:
    """Cross-validated R² of the latent reading from the features (ridge, z-scored)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13)))
    return float(cross_val_score(model, x, reading, cv=5, scoring="r2").mean())


# -- step 2: the image property, read back from the files ------------------------------------


def _nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(path.read_bytes()))
                      .get_fdata(), dtype=np.float32)


def _ct_volume(folder: Path) -> np.ndarray:
    import pydicom

    slices = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    main = max({s.SeriesInstanceUID for s in slices},
               key=lambda uid: sum(s.SeriesInstanceUID == uid for s in slices))
    return np.stack([s.pixel_array.astype(np.float32) * float(s.RescaleSlope)
                     + float(s.RescaleIntercept) for s in slices
                     if s.SeriesInstanceUID == main])


def image_property(modality: str, raw: Path, sid: str) -> float:
    """The property the generator planted the reading in (see mmpipe.cohorts.demo)."""
    from mmpipe.cohorts.demo import measure

    if modality in ("mri_t1", "mri_t2"):
        return measure.mri_property(modality, _nifti(raw / modality / f"{sid}.nii.gz"))
    if modality == "ct":
        return measure.ct_property(_ct_volume(raw / "ct" / sid))
    import tifffile

    return measure.slide_property(tifffile.imread(raw / "wsi" / f"{sid}.tiff", level=0))


def _clinical_property(raw: Path, ids: list[str]) -> np.ndarray:
    """Age plus the stage's rank, from the table (a blank field counts as the median)."""
    rows = {r["subject_id"]: r for r in csv.DictReader((raw / "clinical.csv").open())}
    age = np.array([float(rows[s]["age"]) if rows[s]["age"] else np.nan for s in ids])
    stage = np.array([("I", "II", "III", "IV").index(rows[s]["stage"]) if rows[s]["stage"]
                      else np.nan for s in ids])
    age = (age - np.nanmean(age)) / np.nanstd(age)
    stage = (stage - np.nanmean(stage)) / np.nanstd(stage)
    return np.nan_to_num(age) + np.nan_to_num(stage)


# -- the report ------------------------------------------------------------------------------


def _was_read(subject: dict, modality: str) -> bool:
    """Whether the subject has the imaging ``modality`` as read (not the corrupt CT or
    slide)."""
    return (subject["present"][modality] and not (modality == "ct" and subject["corrupt_ct"])
            and not (modality == "wsi" and subject["corrupt_slide"]))


def _posterior_mean(subject: dict, channels: list[str]) -> float:
    """z's posterior mean given the subject's readings of ``channels`` (z ~ N(0, 1), each
    reading z plus noise of the channel's sigma); 0, z's prior mean, given none."""
    from mmpipe.cohorts.demo.plan import CHANNEL_NOISE

    precision = {m: CHANNEL_NOISE[m] ** -2 for m in channels}
    return (sum(subject["channels"][m] * precision[m] for m in channels)
            / (1 + sum(precision.values())))


def _fused_reading(subject: dict) -> float:
    """z's posterior mean given the subject's own readings: the imaging modalities it
    has as read, and age and stage (blank fields counted as read)."""
    return _posterior_mean(subject, [m for m in IMAGING if _was_read(subject, m)]
                           + ["age", "stage"])


def _single_reading(subject: dict, modality: str) -> float:
    """z's posterior mean from one modality's readings (the clinical record's two, age
    and stage), 0 (z's prior mean) where the subject lacks the modality or it was not
    read: what a single-modality run can reach on every test subject, those without
    the modality scored alike, at the prior, as the trained runs score them."""
    if modality == "clinical":
        return _posterior_mean(subject, ["age", "stage"])
    return _posterior_mean(subject, [modality] if _was_read(subject, modality) else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "results" / "demo")
    ap.add_argument("--config", type=Path, default=REPO / "config.yaml")
    args = ap.parse_args(argv)

    import polars as pl
    import torch
    import yaml

    from mmpipe.cohorts.demo import latent_model
    from mmpipe.store import read_features

    raw = args.results / "raw"
    if not (raw / "summary.json").is_file() or not (args.results / "features").is_dir():
        print(f"{args.results}: no demo results; run `snakemake --cores 2` first",
              file=sys.stderr)
        return 2
    summary = json.loads((raw / "summary.json").read_text())
    cfg = yaml.safe_load(args.config.read_text())
    demo_cfg = cfg["cohorts"]["demo"]
    bench = demo_cfg.get("benchmark", {})
    print(f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}, torch {torch.__version__}")
    print(f"demo: {json.dumps(summary['params'])}")
    print(f"seeds: {bench.get('seeds', cfg['benchmark']['seeds'])}; "
          f"ratios: {bench.get('ratios', cfg['benchmark']['ratios'])}; "
          f"normalize: {bench.get('normalize', cfg['benchmark']['normalize'])}")
    subjects = {s["subject_id"]: s for s in summary["subjects"]}

    def labelled(ids) -> tuple[list[int], np.ndarray]:
        keep = [i for i, sid in enumerate(ids) if subjects[sid]["label"] is not None]
        return keep, np.array([subjects[ids[i]]["label"] for i in keep])

    print("\n1-2. latent reading and image property (AUC of the label)")
    print(f"  {'modality':10s} {'n':>4s} {'latent':>7s} {'image':>7s}")
    all_ids = list(subjects)
    keep, y = labelled(all_ids)
    params = summary["params"]
    # z itself is not written anywhere: the generator's latent model recomputes it
    z = latent_model(params["n_subjects"], params["seed"])["z"]
    age, stage = (np.array([subjects[all_ids[i]]["channels"][k] for i in keep])
                  for k in ("age", "stage"))
    print(f"  {'z (risk)':10s} {len(keep):4d} {_auc(y, z[keep]):7.3f} {'-':>7s}")
    print(f"  {'clinical':10s} {len(keep):4d} {_auc(y, age + stage):7.3f} "
          f"{_auc(y, _clinical_property(raw, [all_ids[i] for i in keep])):7.3f}")
    for m in IMAGING:
        ids = [sid for sid in all_ids
               if subjects[sid]["label"] is not None and _was_read(subjects[sid], m)]
        yy = np.array([subjects[s]["label"] for s in ids])
        reading = np.array([subjects[s]["channels"][m] for s in ids])
        prop = np.array([image_property(m, raw, s) for s in ids])
        print(f"  {m:10s} {len(ids):4d} {_auc(yy, reading):7.3f} {_auc(yy, prop):7.3f}",
              flush=True)
    # the most any fusion can draw from this cohort: z's posterior mean from the readings
    # each subject has (its imaging modalities as read, age and stage); the README's
    # large-n figures (0.94 with every modality, 0.93 under the demo's rates) are not the
    # 200 subjects' own
    fused = np.array([_fused_reading(subjects[all_ids[i]]) for i in keep])
    print(f"  {'fusion':10s} {len(keep):4d} {_auc(y, fused):7.3f} {'-':>7s}  (each subject's "
          "own readings, weighted 1/sigma^2: this cohort's ceiling)")
    position = {all_ids[i]: k for k, i in enumerate(keep)}
    singles = (*IMAGING, "clinical")
    single = {m: np.array([_single_reading(subjects[all_ids[i]], m) for i in keep])
              for m in singles}
    print("  one modality alone, every labelled subject, those without it at z's prior mean "
          "(as the trained runs score them at the training prior): "
          + ", ".join(f"{m} {_auc(y, single[m]):.3f}" for m in singles))
    per_split = []
    for split_file in sorted((args.results / "splits").glob("seed*.parquet")):
        split = pl.read_parquet(split_file)
        test = [position[s] for s in split.filter(pl.col("split") == "test")["subject_id"]
                if s in position]
        per_split.append({m: _auc(y[test], single[m][test]) for m in singles})
        print(f"  {'  test':10s} {len(test):4d} {_auc(y[test], fused[test]):7.3f} {'-':>7s}  "
              f"({split_file.stem}'s test split; one modality alone: "
              + ", ".join(f"{m} {per_split[-1][m]:.3f}" for m in singles) + ")")
    if per_split:
        print("  one modality alone, mean over the test splits (what step 4's means compare "
              "with): " + ", ".join(f"{m} {np.mean([p[m] for p in per_split]):.3f}"
                                    for m in singles))

    print("\n3. encoder stores: linear probe AUC (5-fold CV) and R² of the latent reading")
    print(f"  {'store':28s} {'n':>4s} {'dim':>6s} {'probe':>7s} {'R²':>6s} {'weights':>12s}")
    for path in sorted((args.results / "features").glob("*/*.zarr")):
        f = read_features(path)
        modality = path.parent.name
        rows = [i for i in range(len(f.subject_id)) if f.present[i]]
        keep, yy = labelled([f.subject_id[i] for i in rows])
        rows = [rows[i] for i in keep]
        x = f.emb[rows].reshape(len(rows), -1)
        key = "age" if modality == "clinical" else modality
        reading = np.array([subjects[f.subject_id[i]]["channels"][key] for i in rows])
        if modality == "clinical":  # the table holds two readings: predict their sum
            reading = reading + np.array([subjects[f.subject_id[i]]["channels"]["stage"]
                                          for i in rows])
        print(f"  {modality + '/' + path.stem:28s} {len(rows):4d} {x.shape[1]:6d} "
              f"{_probe(x, yy):7.3f} {_recovered(x, reading):6.3f} "
              f"{f.attrs.get('weights_source', '-'):>12s}", flush=True)

    print("\n4. trained methods: test AUC under natural missingness (mean ± std over seeds)")
    table = args.results / "report" / "summary.csv"
    if not table.is_file():
        print(f"  {table} not found: the report has not been built")
        return 0
    rows = [r for r in csv.DictReader(table.open()) if r["scenario"] == "natural"]
    rows.sort(key=lambda r: (r["feature_set"], -float(r["auc_mean"])))
    for r in rows:
        print(f"  {r['feature_set']:18s} {r['method']:28s} {float(r['auc_mean']):.3f} ± "
              f"{float(r['auc_std']):.3f}  ({r['n_seeds']} seeds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
