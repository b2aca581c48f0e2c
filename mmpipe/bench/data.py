"""Feature sets: the cached embeddings a method consumes, as one in-memory object.

A *feature set* names one encoder per modality (``{"ct": "ctfm", "wsi": "uni"}``).
:func:`load_feature_set` reads the matching stores of stage 1 (where
:class:`~mmpipe.layout.CohortLayout` puts them) and the cohort manifest's
label into :class:`BenchData`: per-modality arrays with zeros where a modality is
absent, and a presence mask per subject. Only embeddings are loaded, never the
per-item bags.

:class:`Normalizer` holds the per-modality normalisation (z-score, L2 or none). It is
fitted by the caller on the *training* subset only, so no statistic ever sees
validation or test data, and it serialises to JSON-able lists so a saved model can
normalise new subjects the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmpipe.cohorts.manifest_files import SUBJECT, modality_presence, read_manifest
from mmpipe.errors import ConfigError, MmpipeError, StoreError
from mmpipe.layout import CohortLayout
from mmpipe.store import encoding_signature, read_features

log = logging.getLogger(__name__)

LABEL_MISSING = "label missing"
STD_FLOOR = 1e-6
L2_FLOOR = 1e-12


# what made a store's features beside its settings (mmpipe.store's attributes): the
# encoder's code key and the packages it ran with; another value may shift the numbers,
# so `mmpipe predict` notes it (a new version is the workflow's to rerun, not a setting)
STORE_CODE_KEYS = ("code_version", "package_versions")


@dataclass
class BenchData:
    """Every subject of one cohort (or a subset) under one feature set and label.

    ``x[m]`` is float32 ``[N, *shape]`` with exact zeros where modality ``m`` is absent
    (never NaN); ``present`` is bool ``[N, M]`` with columns in ``modalities`` order.
    ``y`` holds class indices ``0..C-1``; ``label_values[c]`` is the manifest value of
    class ``c`` (sorted order of the values) and ``label_name`` the manifest column.
    """

    subject_id: np.ndarray
    y: np.ndarray
    x: dict[str, np.ndarray]
    present: np.ndarray
    modalities: list[str]
    n_classes: int
    label_name: str = ""
    label_values: list[Any] = field(default_factory=list)
    # modality -> how its store's features were made (mmpipe.store.encoding_signature)
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    # modality -> the subjects its store holds as present with NaN or inf features, read
    # as absent (:func:`usable_rows`): the run's notes name them
    unreadable: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.subject_id = np.asarray(self.subject_id, dtype=str)
        self.y = np.asarray(self.y, dtype=np.int64)
        self.present = np.asarray(self.present, dtype=bool)
        self.modalities = list(self.modalities)
        n, m = len(self.subject_id), len(self.modalities)
        if self.y.shape != (n,):
            raise ValueError(f"y has shape {self.y.shape}, expected ({n},)")
        if self.present.shape != (n, m):
            raise ValueError(f"present has shape {self.present.shape}, expected ({n}, {m})")
        if set(self.x) != set(self.modalities):
            raise ValueError(f"x holds modalities {sorted(self.x)}, expected {self.modalities}")
        for name in self.modalities:
            if self.x[name].shape[0] != n:
                raise ValueError(f"x[{name!r}] has {self.x[name].shape[0]} rows, expected {n}")
        if n and (self.y.min() < 0 or self.y.max() >= self.n_classes):
            raise ValueError(f"y must lie in 0..{self.n_classes - 1}")

    def __len__(self) -> int:
        return len(self.subject_id)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Feature shape of every modality (without the subject axis)."""
        return {m: tuple(self.x[m].shape[1:]) for m in self.modalities}

    def with_input(self) -> BenchData:
        """The subjects with at least one modality present: the only ones a model can be
        trained, validated or scored on (the others get the training prior at test)."""
        return self.subset(self.present.any(axis=1))

    def subset(self, idx) -> BenchData:
        """The subjects at ``idx`` (integer indices or a boolean mask), in that order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        return dataclasses.replace(
            self,
            subject_id=self.subject_id[idx],
            y=self.y[idx],
            x={m: self.x[m][idx] for m in self.modalities},
            present=self.present[idx],
            label_values=list(self.label_values),
        )

    def with_present(self, present: np.ndarray) -> BenchData:
        """Apply a scenario mask: presence becomes ``self.present & present``.

        Values of modalities that become absent are zeroed, so absent always means zero.
        """
        present = np.asarray(present, dtype=bool)
        if present.shape != self.present.shape:
            raise ValueError(f"mask has shape {present.shape}, data {self.present.shape}")
        new = self.present & present
        x = {}
        for j, m in enumerate(self.modalities):
            v = self.x[m]
            if (self.present[:, j] & ~new[:, j]).any():
                v = v * new[:, j].reshape(-1, *([1] * (v.ndim - 1))).astype(v.dtype)
            x[m] = v
        return dataclasses.replace(self, x=x, present=new, label_values=list(self.label_values))

    def patterns(self) -> list[str]:
        """Present modalities of each subject joined by ``+`` (``""`` when none is present)."""
        return ["+".join(m for m, p in zip(self.modalities, row, strict=True) if p)
                for row in self.present]


def common_subjects(stores: dict[str, tuple[str | Path, Any]]) -> np.ndarray:
    """The subjects every store lists, in one order, each once. ``stores``: modality ->
    (its path, its features). Training and ``mmpipe predict`` both read stores this way:
    a :class:`StoreError` names the stores and the first difference."""
    (first, (path0, f0)), *rest = stores.items()
    ids = f0.subject_id
    twice = sorted(s for s, k in Counter(ids.tolist()).items() if k > 1)
    if twice:  # the writer refuses them; a store written another way was read twice over
        raise StoreError(f"the {first} store {path0} lists subject(s) {twice[:5]} more than "
                         "once: rebuild it")
    for m, (path, f) in rest:
        if len(f.subject_id) != len(ids) or (f.subject_id != ids).any():
            raise StoreError(f"the {first} store {path0} and the {m} store {path} do not list "
                             f"the same subjects in the same order "
                             f"({_first_difference(ids, f.subject_id)}): encode them from "
                             "one manifest")
    return ids


def _first_difference(a: np.ndarray, b: np.ndarray) -> str:
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} subjects"
    i = int(np.flatnonzero(a != b)[0])
    return f"row {i}: '{a[i]}' vs '{b[i]}'"  # not numpy's repr, np.str_('...')


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def usable_rows(features, path) -> np.ndarray:
    """A store's present rows whose features are all finite. The writer refuses NaN and
    inf; a present row of them (a store written another way) is absent, with a warning
    naming the subjects, in training and in ``mmpipe predict`` alike (predict scored one
    as input, its NaN as 0 and its inf as 3.4e38), and a training run's notes name them
    (:attr:`BenchData.unreadable`)."""
    n = len(features.subject_id)
    finite = (np.isfinite(features.emb.reshape(n, -1)).all(axis=1) if n
              else np.ones(0, dtype=bool))
    bad = features.present & ~finite
    if bad.any():
        log.warning("%s: %d present subject(s) with NaN or inf features, read as absent: %s",
                    path, int(bad.sum()), ", ".join(features.subject_id[bad][:10].tolist()))
    return features.present & finite


def _check_made_from_this_manifest(cohort_dir: Path, df: pl.DataFrame, meta: dict,
                                   ids: np.ndarray, modalities: list[str], paths: list[Path],
                                   feats: list) -> None:
    """Refuse a store of another modality or cohort (its attrs say which), or one holding
    features for subjects this manifest gives no such modality: the subject lists alone
    agreed for a store copied from a cohort of the same IDs, or encoded before the
    manifest lost a subject's image, and those subjects trained on features the manifest
    no longer gives them. A subject the manifest lists and the store has not is stage 1's
    rejection, and fine."""
    cohort = meta.get("cohort")
    presence = modality_presence(df, meta)
    where = {s: i for i, s in enumerate(presence[SUBJECT].cast(str).to_list())}
    rows = np.array([where[s] for s in ids.tolist()], dtype=np.int64)
    problems = []
    for m, path, f in zip(modalities, paths, feats, strict=True):
        made = {k: f.attrs.get(k) for k in ("cohort", "modality")}
        expected = {"cohort": cohort, "modality": m}
        other = [f"{k} {made[k]!r}, not {v!r}" for k, v in expected.items()
                 if made[k] is not None and v is not None and made[k] != v]
        if other:
            problems.append(f"{path} was encoded for {' and '.join(other)}")
            continue
        if m not in presence.columns:
            continue
        given = presence[m].to_numpy()[rows]
        extra = np.asarray(f.present, dtype=bool) & ~given
        if extra.any():
            problems.append(f"{path} holds features for {int(extra.sum())} subject(s) the "
                            f"manifest gives no {m} ({', '.join(ids[extra][:5].tolist())})")
    if problems:
        raise StoreError(f"the stores disagree with the manifest of {cohort_dir}: "
                         + "; ".join(problems) + ". They were made from another manifest "
                         "or cohort: remake them (snakemake --forcerun encode <store>)")


def _refuse_emptied_stores(modalities: list[str], paths: list[Path], feats: list,
                           present: np.ndarray) -> None:
    """Refuse a store that holds no subject's features though stage 1 had inputs for
    some: every one rejected (a setting that rejects all: ``min_slices`` above every
    series, a tissue fraction above every slide) or unreadable. The store was written
    and looked finished, and the benchmark trained without the modality, its one trace
    a normaliser warning. A modality no subject has (every row ``absent``) is not such
    a store."""
    problems = []
    for j, (m, path, f) in enumerate(zip(modalities, paths, feats, strict=True)):
        status = np.asarray(f.status).astype(str)
        lost = (status == "rejected") | np.asarray(f.present, dtype=bool)
        if present[:, j].any() or not lost.any():
            continue
        reasons = Counter(str(r) for r in np.asarray(f.reason)[lost])
        shown = "; ".join(f"{n} x {r[:160]!r}" for r, n in reasons.most_common(2))
        problems.append(f"{path}: none of its {int(lost.sum())} subject(s) with {m} input "
                        f"has features ({shown})")
    if problems:
        raise StoreError("; ".join(problems) + ". Every subject was rejected or is "
                         "unreadable: fix what rejects them (the stage-1 summary gives each "
                         "subject's reason) or leave the modality out of the feature set")


def read_store(modality: str, path: str | Path):
    """A store's features, or a :class:`StoreError` naming the store when its arrays
    cannot be read: a damaged chunk failed deep in the codec, naming neither, and a
    training job showed the codec's traceback."""
    try:
        return read_features(path)
    except (MmpipeError, OSError):  # already named (a missing chunk, no such store)
        raise
    except Exception as err:
        raise StoreError(f"{path}: the {modality} store cannot be read ({type(err).__name__}: "
                         f"{err}): a damaged copy; encode it again") from err


def load_feature_set(cohort_dir: str | Path, feature_set: dict[str, str], label: str
                     ) -> tuple[BenchData, list[dict]]:
    """Load the stores of ``feature_set`` and the manifest label ``label``.

    Returns the data and one record ``{"subject_id", "reason"}`` per subject left out,
    for a missing label. A subject without any of this feature set's modalities stays,
    every entry absent: every feature set of a cohort holds the same labelled subjects,
    so its runs are scored on the same test subjects as every other's (one with no input
    gets the training prior there, :func:`mmpipe.bench.run.run_seed`). Raises
    :class:`StoreError` when the stores do not list the same subjects in the same order,
    or disagree with the manifest.
    """
    cohort_dir = Path(cohort_dir)
    if not feature_set:
        raise ConfigError("feature set is empty: name at least one modality -> encoder")
    df, meta = read_manifest(cohort_dir)
    if label not in df.columns:
        raise ConfigError(f"label {label!r} is not a manifest column of {cohort_dir} "
                          f"(labels: {meta.get('labels')})")
    # a feature set is a set: its modalities in name order, however the config lists them
    modalities = sorted(feature_set)
    paths = [CohortLayout(cohort_dir).store(m, feature_set[m]) for m in modalities]
    feats = [read_store(m, p) for m, p in zip(modalities, paths, strict=True)]

    ids = common_subjects({m: (p, f) for m, p, f in zip(modalities, paths, feats, strict=True)})
    manifest_ids = df[SUBJECT].cast(str).to_list()
    only_store = sorted(set(ids.tolist()) - set(manifest_ids))
    only_manifest = sorted(set(manifest_ids) - set(ids.tolist()))
    if only_store or only_manifest:
        raise StoreError(f"feature store {paths[0]} and the manifest of {cohort_dir} disagree: "
                         f"{len(only_store)} subject(s) only in the store {only_store[:5]}, "
                         f"{len(only_manifest)} only in the manifest {only_manifest[:5]}; "
                         "the stores are stale: rebuild them")

    _check_made_from_this_manifest(cohort_dir, df, meta, ids, modalities, paths, feats)

    labels = dict(zip(manifest_ids, df[label].to_list(), strict=True))
    present = np.zeros((len(ids), len(modalities)), dtype=bool)
    unreadable = {}
    for j, (m, p, f) in enumerate(zip(modalities, paths, feats, strict=True)):
        present[:, j] = usable_rows(f, p)
        if (bad := np.asarray(f.present, dtype=bool) & ~present[:, j]).any():
            unreadable[m] = ids[bad].tolist()
    _refuse_emptied_stores(modalities, paths, feats, present)

    dropped: list[dict] = []
    keep = np.ones(len(ids), dtype=bool)
    fs_name = ", ".join(f"{m}: {e}" for m, e in feature_set.items())
    for i, sid in enumerate(ids.tolist()):
        if _is_missing(labels[sid]):
            dropped.append({"subject_id": sid, "reason": f"{LABEL_MISSING} ({label})"})
            keep[i] = False
    if dropped:
        shown = ", ".join(f"{d['subject_id']} ({d['reason']})" for d in dropped[:5])
        log.warning("%s: %d of %d subject(s) left out of feature set {%s}: %s%s", cohort_dir,
                    len(dropped), len(ids), fs_name, shown, " ..." if len(dropped) > 5 else "")

    kept = np.flatnonzero(keep)
    values = [labels[s] for s in ids[kept].tolist()]
    label_values = sorted(set(values))
    if len(label_values) < 2:
        raise ConfigError(f"label {label!r} of {cohort_dir} has {len(label_values)} distinct "
                          f"value(s) {label_values} among usable subjects; need at least 2")
    index = {v: c for c, v in enumerate(label_values)}
    x = {}
    for j, (m, f) in enumerate(zip(modalities, feats, strict=True)):
        emb = np.asarray(f.emb[kept], dtype=np.float32)
        mask = present[kept, j].reshape(-1, *([1] * (emb.ndim - 1)))
        x[m] = np.where(mask, emb, np.float32(0)).astype(np.float32)
    data = BenchData(
        subject_id=ids[kept],
        y=np.array([index[v] for v in values], dtype=np.int64),
        x=x,
        present=present[kept],
        modalities=modalities,
        n_classes=len(label_values),
        label_name=label,
        label_values=label_values,
        # and the store's preprocessing record, which `mmpipe predict` compares setting by
        # setting (its hash alone cannot tell another HU window from a new code version)
        provenance={m: {**encoding_signature(f.attrs),
                        "preprocessing": f.attrs.get("preprocessing"),
                        # the encoder's code and the libraries it ran with: another
                        # version's store is scored with a note (bench/predict.py)
                        **{k: f.attrs.get(k) for k in STORE_CODE_KEYS}}
                    for m, f in zip(modalities, feats, strict=True)},
        unreadable={m: [s for s in sids if not _is_missing(labels[s])]  # the kept ones
                    for m, sids in unreadable.items()},
    )
    log.info("%s: feature set {%s}, %d subjects, %d classes, presence %s", cohort_dir, fs_name,
             len(data), data.n_classes,
             {m: int(data.present[:, j].sum()) for j, m in enumerate(modalities)})
    return data, dropped


def blank_columns(provenance: dict[str, Any]) -> list[tuple[int, int]]:
    """(value column, its blank indicator) of each numeric field of a tabular store
    (:mod:`mmpipe.encoders.tabular`: a numeric field is its value then ``{field}=missing``,
    a categorical one a column per category then its blank category); [] for any other
    store. Stage 1 standardised and imputed a blank at the whole cohort's mean, which
    the test subjects shape: the z-score here imputes again from the training rows."""
    encoding = provenance.get("tabular_encoding")
    if not encoding:
        return []
    pairs, offset = [], 0
    for col in encoding["columns"]:
        if col["kind"] == "numeric":
            pairs.append((offset, offset + 1))
            offset += 2
        else:
            offset += len(col["categories"]) + 1
    return pairs


def _constant_columns_kept(rows: np.ndarray, std: np.ndarray, pairs: list[tuple[int, int]],
                           modality: str) -> np.ndarray:
    """1 for a column that varies over the training rows, 0 for one that does not (its
    weight never trained). A numeric field's value column varies by its values alone:
    blanks hold stage 1's imputed value, which the normaliser replaces by the mean.
    ``std``: the rows' standard deviation per column."""
    keep = std >= STD_FLOOR
    for value, blank in pairs:
        known = rows[:, blank] < 0.5
        keep[value] = bool(known.any()) and rows[known, value].std() >= STD_FLOOR
    if not keep.any():
        log.warning("normaliser: every feature of %s is constant over the training subjects "
                    "(%d have it): the model reads it as present or absent only", modality,
                    len(rows))
    return keep.astype(np.float32)


def _blank_value_stats(rows: np.ndarray, pairs: list[tuple[int, int]], mean: np.ndarray,
                       std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mean`` and ``std`` with each numeric field's value column's statistics over the
    rows where it has a value, and its blank indicator left as it is (0 and 1)."""
    for value, blank in pairs:
        known = rows[:, blank] < 0.5
        if known.any():
            mean[value], std[value] = rows[known, value].mean(), rows[known, value].std()
        mean[blank], std[blank] = 0.0, 1.0
    return mean, std


class Normalizer:
    """Per-modality feature normalisation, fitted on training subjects only.

    - ``"zscore"``: per feature element (the feature dims flattened), mean and standard
      deviation over the *present* rows of the data given to :meth:`fit`. A feature
      constant there (standard deviation under 1e-6) is zero everywhere: a model saw it
      only as zero, so its weight never trained, and a value it takes only in validation
      or test (a category no training subject has, a field blank only there) added that
      weight's random initial value to those subjects' scores. (HyperMM's convolution
      shares its weights over a block's positions, so a position constant in training
      has trained weights; it is zeroed all the same, as training saw it.) A tabular
      store's numeric fields (:func:`blank_columns`) take their statistics from the
      training rows with a value, their blanks are set to the training mean (0) and their
      blank indicators stay 0/1: no statistic of the stage-1 encoding, fitted on the whole
      cohort, reaches the features.
    - ``"l2"``: each feature vector (last axis) scaled to unit L2 norm. A tabular store's
      numeric fields are first standardised and their blanks imputed from the training
      rows, as the z-score does them: scaled as stored, its vectors carried stage 1's
      cohort-wide statistics, which the test subjects shape, into every training
      subject's features; and its columns constant on the training rows (a category only
      test subjects have) are zero, as the z-score's are. The row scaling comes after
      those statistics, so a cross-validation fold cannot refit them on this
      normaliser's output as the z-score's folds do (:attr:`folds_refit_raw`): its own
      normaliser is fitted on the raw training folds.
    - ``"none"``: identity (a tabular store then keeps stage 1's cohort-wide scaling and
      blank imputation: label-free, but not fitted on training subjects only; HGB, the
      method run so, reads such a blank as NaN).

    Absent rows stay exactly zero after :meth:`transform`, and a modality no subject
    of the fit has (``unseen``: a cohort whose test subjects alone have it) is absent for
    every subject transformed, in every mode: no weight of its encoder trained.
    """

    MODES = ("zscore", "l2", "none")
    FITTED = ("zscore",)  # the modes whose statistics fit() takes from training subjects

    def __init__(self, mode: str = "zscore"):
        if mode not in self.MODES:
            raise ConfigError(f"unknown normalisation {mode!r} (known: {list(self.MODES)})")
        self.mode = mode
        self.stats: dict[str, dict[str, np.ndarray]] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        # modality -> (value column, blank indicator) pairs (blank_columns)
        self.blanks: dict[str, list[tuple[int, int]]] = {}
        # modalities no subject of the fit has: absent for every subject transformed
        self.unseen: list[str] = []
        self.fitted = False

    @property
    def fits(self) -> bool:
        return self.mode in self.FITTED

    @property
    def folds_refit_raw(self) -> bool:
        """Whether a cross-validation fold fits its own normaliser on the raw features
        (:func:`mmpipe.bench.selection._fit_cv`): a fitted ``l2`` with a tabular store's
        statistics, which its row scaling follows. (The z-score's folds refit on its
        output, to which they compose exactly.)"""
        return self.mode not in self.FITTED and bool(self.stats)

    def fit(self, data: BenchData) -> Normalizer:
        """Statistics of ``data``; ``keep`` is 0 for a feature constant on it."""
        self.stats, self.shapes, self.blanks = {}, data.shapes(), {}
        self.unseen = [m for j, m in enumerate(data.modalities) if not data.present[:, j].any()]
        if self.unseen:
            log.warning("normaliser: no subject it is fitted on has %s; absent for every "
                        "subject", ", ".join(self.unseen))
        if self.mode == "zscore":
            for j, m in enumerate(data.modalities):
                width = int(np.prod(self.shapes[m], dtype=np.int64))
                rows = data.x[m][data.present[:, j]].reshape(-1, width)
                pairs = blank_columns(data.provenance.get(m, {}))
                if len(rows) == 0:  # unseen: every subject's is zeroed by transform()
                    mean, std = np.zeros(width), np.ones(width)
                    keep = np.ones(width, np.float32)
                else:
                    rows = rows.astype(np.float64)
                    spread = rows.std(axis=0)
                    keep = _constant_columns_kept(rows, spread, pairs, m)
                    mean, std = _blank_value_stats(rows, pairs, rows.mean(axis=0),
                                                   spread)
                    std = np.where(std < STD_FLOOR, 1.0, std)
                if pairs:
                    self.blanks[m] = pairs
                self.stats[m] = {"mean": mean.astype(np.float32), "std": std.astype(np.float32),
                                 "keep": keep}
        elif self.mode == "l2":
            for j, m in enumerate(data.modalities):
                # a tabular store, numeric fields or not: a category's column too
                if not data.provenance.get(m, {}).get("tabular_encoding"):
                    continue
                pairs = blank_columns(data.provenance[m])
                width = int(np.prod(self.shapes[m], dtype=np.int64))
                rows = data.x[m][data.present[:, j]].reshape(-1, width).astype(np.float64)
                mean, std = _blank_value_stats(rows, pairs, np.zeros(width), np.ones(width))
                keep = (_constant_columns_kept(rows, rows.std(axis=0), pairs, m) if len(rows)
                        else np.ones(width, np.float32))
                self.blanks[m] = pairs
                self.stats[m] = {"mean": mean.astype(np.float32),
                                 "std": np.where(std < STD_FLOOR, 1.0, std).astype(np.float32),
                                 "keep": keep}
        self.fitted = True
        return self

    def transform(self, data: BenchData) -> BenchData:
        if not self.fitted:
            raise ValueError("Normalizer.transform() called before fit()")
        missing = [m for m in data.modalities if m not in self.shapes]
        if missing:
            raise ConfigError(f"normaliser was fitted without modalities {missing}")
        x = {}
        # a modality no fitted subject has is absent for all: its encoder never trained,
        # and its raw features went through those untrained weights into the scores
        present = data.present & ~np.isin(data.modalities, self.unseen)
        for j, m in enumerate(data.modalities):
            v = data.x[m]
            if tuple(v.shape[1:]) != tuple(self.shapes[m]):
                raise StoreError(f"{m}: features of shape {v.shape[1:]}, the normaliser was "
                                 f"fitted on {self.shapes[m]}")
            if m in self.stats:  # the z-score, or l2's tabular fields
                s = self.stats[m]
                width = int(np.prod(self.shapes[m], dtype=np.int64))  # a part may be empty
                flat = (v.reshape(len(v), width) - s["mean"]) / s["std"]
                if "keep" in s:  # absent from a model saved before constant features were
                    flat = flat * s["keep"]  # zeroed (it trained with them centred)
                for value, blank in self.blanks.get(m, []):
                    flat[:, value] = np.where(v.reshape(len(v), width)[:, blank] > 0.5, 0.0,
                                              flat[:, value])
                v = flat.reshape(v.shape)
            if self.mode == "l2":
                norm = np.linalg.norm(v, axis=-1, keepdims=True) if v.ndim > 1 else np.abs(v)
                v = v / np.maximum(norm, L2_FLOOR)
            mask = present[:, j].reshape(-1, *([1] * (v.ndim - 1)))
            x[m] = np.where(mask, v, 0).astype(np.float32)
        return dataclasses.replace(data, x=x, present=present,
                                   label_values=list(data.label_values))

    def zeroed(self) -> dict[str, tuple[int, int]]:
        """Modality -> (features zeroed as constant over the fitted subjects, its features),
        for each modality with one such feature."""
        return {m: (n, int(s["keep"].size)) for m, s in self.stats.items()
                if "keep" in s and (n := int((s["keep"] == 0).sum()))}

    def fit_transform(self, data: BenchData) -> BenchData:
        return self.fit(data).transform(data)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (plain lists) for saving with a model."""
        return {
            "mode": self.mode,
            "shapes": {m: list(s) for m, s in self.shapes.items()},
            "stats": {m: {k: v.tolist() for k, v in st.items()} for m, st in self.stats.items()},
            "blanks": {m: [list(p) for p in pairs] for m, pairs in self.blanks.items()},
            "unseen": list(self.unseen),
        }

    @classmethod
    def state_problems(cls, state: dict[str, Any],
                       shapes: dict[str, list[int]]) -> list[str]:
        """What keeps a saved :meth:`state_dict` from fitting features of ``shapes``
        (modality -> shape): its mode, its shapes, a statistic or blank column of another
        width. Empty when it fits."""
        problems = []
        try:
            if state.get("mode") not in cls.MODES:
                problems.append(f"mode {state.get('mode')!r}")
            saved = {m: [int(d) for d in s] for m, s in state.get("shapes", {}).items()}
            if saved != {m: list(s) for m, s in shapes.items()}:
                problems.append(f"shapes {saved} for the run's {shapes}")
            widths = {m: int(np.prod(s, dtype=np.int64)) for m, s in shapes.items()}
            for m, stats in state.get("stats", {}).items():
                for key, values in stats.items():
                    size = np.asarray(values).size
                    if size != widths.get(m, 0):
                        problems.append(f"{m}.{key} holds {size} values for "
                                        f"{widths.get(m, 0)} features")
            for m, pairs in state.get("blanks", {}).items():
                if any(not 0 <= int(c) < widths.get(m, 0) for pair in pairs for c in pair):
                    problems.append(f"{m}: a blank column past its {widths.get(m, 0)} "
                                    "features")
        except (AttributeError, TypeError, ValueError) as err:
            problems.append(f"{type(err).__name__}: {err}")
        return problems

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Normalizer:
        norm = cls(state["mode"])
        norm.shapes = {m: tuple(int(d) for d in s) for m, s in state["shapes"].items()}
        norm.stats = {m: {k: np.asarray(v, dtype=np.float32) for k, v in st.items()}
                      for m, st in state.get("stats", {}).items()}
        # absent from a model saved before blanks were re-imputed (it trained without)
        norm.blanks = {m: [(int(a), int(b)) for a, b in pairs]
                       for m, pairs in state.get("blanks", {}).items()}
        norm.unseen = list(state.get("unseen", []))  # absent before: none was
        norm.fitted = True
        return norm
