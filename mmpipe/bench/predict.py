"""Score new subjects with a trained run (``mmpipe predict``).

A run's ``model.pt`` (:mod:`mmpipe.bench.bundle`, loaded without unpickling anything)
holds the method's config and weights, the modalities and feature shapes it was trained
on, the training split's normalisation (``none`` for a fold ensemble whose members
normalise raw features, each with its own), and how each training store's features were
made.
New subjects come as feature stores of any subset of those modalities; a modality
without a store counts as absent for everyone, which a warning, logged and written in the
scores' ``notes`` column, says (a forgotten ``--store`` reads like a cohort without the
modality). A store made another way than the training store (another encoder or
weights, other columns or another tabular encoding: its categories and scaling) is
refused, since its numbers would mean something else to the model. So is a store whose
inputs became something else (another HU window, normalisation, resampled spacing, tile
size or prompt template: another HU window changed the class of 82 of the demo's 137 CT
subjects), by the model's record of each training store's preprocessing settings; under
``spacing: median`` the spacing is the cohort's own median, so a new cohort is refused
with the training spacing to state instead. A store whose inputs were only chosen or
coded otherwise (the DICOM series choice and QC gates, tissue detection, the tile cap,
an assumed mpp, a prompt's value maps and blank codes: what a new cohort may need), or
read by another version of mmpipe's reading code, is scored with a warning, logged and
written in the scores' ``notes`` column; so is any difference for a run saved before the
record was kept, which has the settings' hash only; and so is a store encoded by
another version of the encoder's code or other package versions, or a run trained by
another version of the training code (:func:`code_note`, :func:`method_code_note`). A
store made for another of the
run's modalities (``mri_t1=`` given the T2 store) is refused; one made for a modality the
run does not know is scored with a note, since a new cohort may name its modalities
otherwise. Stores of different cohorts are refused together: their subjects would be
joined by ID.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mmpipe.bench.bundle import ModelBundleError, load_bundle
from mmpipe.bench.data import BenchData, Normalizer, common_subjects, read_store, usable_rows
from mmpipe.bench.selection import FoldEnsemble
from mmpipe.bench.trainer import predict_proba
from mmpipe.encoders.device import resolve_device
from mmpipe.errors import ConfigError, MmpipeError, StoreError
from mmpipe.layout import METRICS
from mmpipe.store import PREPROCESSING_KEYS, SIGNATURE_KEYS, encoding_signature

log = logging.getLogger(__name__)

# what mmpipe.store.package_versions records for a package it did not find
NOT_INSTALLED = "not installed"


def load_run(run_dir: str | Path, device: torch.device | str = "cpu"):
    """(method ready for inference on ``device``, the saved bundle) of a run directory."""
    from mmpipe.bench.run import build_method

    _refuse_untrained(run_dir)
    bundle = load_bundle(run_dir)
    shapes = {m: tuple(s) for m, s in bundle["shapes"].items()}
    template = BenchData(subject_id=np.array([], dtype=str), y=np.zeros(0, dtype=np.int64),
                         x={m: np.zeros((0, *shapes[m]), np.float32) for m in bundle["modalities"]},
                         present=np.zeros((0, len(shapes)), bool),
                         modalities=list(bundle["modalities"]), n_classes=bundle["n_classes"])
    members = bundle.get("ensemble")
    if members is not None and (not isinstance(members, int) or members < 1):
        raise ModelBundleError(f"{run_dir}: 'ensemble' must be the number of fold models, "
                               f"found {members!r}")
    try:
        method = (FoldEnsemble([build_method(bundle["method"], template)
                                for _ in range(members)])
                  if members else build_method(bundle["method"], template))
    except (MmpipeError, KeyError, TypeError, ValueError) as err:
        # a hyper-parameter renamed since the run was saved, a value of another kind
        raise ModelBundleError(f"{run_dir}: its method {bundle['method']} cannot be built by "
                               f"this mmpipe: {err}") from None
    # numpy broadcast a statistic of another width over the features and scored with it
    if problems := Normalizer.state_problems(bundle["normalizer"], bundle["shapes"]):
        raise ModelBundleError(f"{run_dir}: malformed normaliser: {'; '.join(problems)}")
    try:
        method.load_state_dict(bundle["state"])
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise ModelBundleError(f"{run_dir}: the saved weights do not fit method "
                               f"{bundle['method'].get('type')!r}: {err}") from None
    if hasattr(method, "eval"):
        method.eval()
    # the weights load on the CPU; the inputs go to ``device`` (predict_proba), and a
    # network left behind failed on a GPU with a bare device mismatch
    for member in getattr(method, "members", [method]):
        if getattr(member, "kind", "torch") == "torch":
            member.to(device)
    return method, bundle


def _refuse_untrained(run_dir: str | Path) -> None:
    """A run that did not train (cross-validation folds of one class, no subject with an
    input) has no model: its ``metrics.json`` says why, where the missing file's
    message pointed at ``keep_models``, which had nothing to do with it."""
    metrics = Path(run_dir) / METRICS
    if not Path(run_dir).is_dir() or not metrics.is_file():
        return
    try:
        record = json.loads(metrics.read_text())
        flags = {f.get("flag") for f in record.get("flags") or ()}
    except (OSError, ValueError, AttributeError, TypeError):
        return  # not ours to judge: the bundle's own checks say what is wrong
    if "not_trained" in flags:
        why = next((n for n in record.get("notes") or () if str(n).startswith("not trained")),
                   "not trained")
        raise ModelBundleError(f"{run_dir}: this run has no model: {why} (its metrics.json)")


# signature keys a model saved before them lacks (mmpipe.store.SIGNATURE_KEYS)
LATER_SIGNATURE_KEYS = ("embedding_settings", "weights_projection_sha256")
# stated, when absent, by a side that records embedding_settings (they entered the
# signature together, and every store since records its embedding settings): then a
# missing hash is a store made without a projection, not a hash left unrecorded
_ABSENT_MEANS_NONE = {"weights_projection_sha256": "embedding_settings"}


# embedding settings whose null is a setting of its own, not a default left unstated: an
# image set without a cap (mmpipe.encode.images); a model trained on 8 images a subject
# scored a store of every image with a note
_NULL_IS_STATED = frozenset({"max_images"})


def _unstated_only(mine, theirs) -> bool:
    """Two recordings that differ only where one side states nothing."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        return mine != theirs and all(
            mine[k] == theirs[k] for k in set(mine) & set(theirs)
            if k in _NULL_IS_STATED or (mine[k] is not None and theirs[k] is not None))
    return (mine is None) != (theirs is None)


def check_encoding(modality: str, path, attrs: dict, trained: dict) -> str:
    """Refuse a store whose features were made another way than the training store's;
    returns a note ("" when none) when only its inputs' preprocessing differs."""
    new = encoding_signature(attrs)
    # recorded since this version: a model saved before has none, and a setting left
    # unstated on one side may be the other's default, so only two stated values that
    # differ refuse the store; the rest is a note
    unsure = [k for k in LATER_SIGNATURE_KEYS if _unstated_only(trained.get(k), new.get(k))
              and not (k in _ABSENT_MEANS_NONE and _ABSENT_MEANS_NONE[k] in trained
                       and _ABSENT_MEANS_NONE[k] in new)]
    differ = [k for k in SIGNATURE_KEYS if k not in unsure and (k in trained or k in new)
              and trained.get(k) != new.get(k)]
    if differ:
        shown = "; ".join(f"{k}: trained on {_short(trained.get(k))}, store has "
                          f"{_short(new.get(k))}" for k in differ)
        raise StoreError(f"{path}: the {modality} features were made differently from the "
                         f"run's training features ({shown}). Encode the new subjects the "
                         "same way (same encoder and weights; for a tabular store, "
                         "`encoding_from:` the training store) and predict again")
    soft = [k for k in PREPROCESSING_KEYS if trained.get(k) != new.get(k)]
    if not soft and not unsure:
        return ""
    mine, theirs = trained.get("preprocessing"), attrs.get("preprocessing")
    if soft and isinstance(mine, dict) and isinstance(theirs, dict):
        preprocessing = _preprocessing_note(modality, path, mine, theirs)
    else:  # a run saved before its stores' records were kept: the hash is all there is
        preprocessing = [f"{modality}: inputs preprocessed differently from the run's "
                         f"training inputs ({', '.join(soft)} differs): the scores may "
                         "shift"] if soft else []
    note = "; ".join(
        preprocessing
        + ([f"{modality}: {', '.join(unsure)} unrecorded for the run or unstated on one side "
            "(defaults may differ): check that the store was made with the run's settings"]
           if unsure else []))
    if note:
        log.warning("%s: %s", path, note)
    return note


# the preprocessing settings that decide what an input becomes (its voxels, tiles or
# prompt text): another value gives the model other numbers for the same subject. The
# others decide which series, slides or tiles are taken and which fail QC (the DICOM
# series choice and gates, tissue detection, the tile cap, an assumed mpp) or how a
# cohort codes its values (a prompt's value maps and blank codes), which a new cohort
# may need otherwise; they are named in the scores' notes
_WHAT_AN_INPUT_BECOMES = ("transform", "mask", "tiling.target_mpp", "tiling.tile_size",
                          "prompt.fields", "prompt.prompt.header", "prompt.prompt.phrases",
                          "prompt.prompt.missing", "prompt.prompt.missing_text")
# compared elsewhere: a table's fields by the store's feature names and tabular encoding
# (a tabular store of the same columns in another order holds the same features), or by
# the prompts' own fields
_NOT_COMPARED = ("fields",)


def _settings(record: dict, prefix: str = "") -> dict[str, object]:
    """A preprocessing record as dotted setting -> value, without the blocks' code keys
    (a new version of the reading code is the workflow's to rerun, not a setting). A
    volume's ``transform.spacing`` is the spacing it was resampled to: a cohort's own
    median (``median_spacing``) under ``spacing: median``; its crop is the margin it
    crops at (``roi_crop: {}`` is margin 0); a prompt's ``missing_text`` is no setting
    where blanks are omitted."""
    flat: dict[str, object] = {}
    for key, value in record.items():
        if (prefix and key == "code" and prefix.count(".") == 1) or (
                not prefix and key in _NOT_COMPARED):
            continue
        name = f"{prefix}{key}"
        # two levels: a block's settings, and a prompt's own; a value map or a blank
        # code list is one setting, whose keys are a cohort's codes, not settings
        if isinstance(value, dict) and value and prefix.count(".") < 2:
            flat.update(_settings(value, f"{name}."))
        else:
            flat[name] = value
    if not prefix:
        # `roi_crop: {}` crops at margin 0 (masks.mask_steps), so it is the crop of
        # `{margin: 0}`, not a step left out as another empty block is
        if isinstance(flat.get("transform.roi_crop"), dict):
            flat["transform.roi_crop.margin"] = flat.pop("transform.roi_crop").get("margin", 0)
        if "median_spacing" in flat:
            median = flat.pop("median_spacing")
            if flat.get("transform.spacing") == "median":
                flat["transform.spacing"] = median
        if flat.get("prompt.prompt.missing", "omit") == "omit":
            flat.pop("prompt.prompt.missing_text", None)
    return flat


def _code_keys(record: dict, blocks: set[str]) -> dict[str, object]:
    return {name: record[name].get("code") for name in blocks
            if isinstance(record.get(name), dict)}


def _same(a, b) -> bool:
    """Equal settings; spacings to float rounding (a median copied from the message)."""
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(
            isinstance(v, int | float) and isinstance(w, int | float)
            for v, w in zip(a, b, strict=True)):
        return all(math.isclose(v, w, rel_tol=1e-6) for v, w in zip(a, b, strict=True))
    return a == b


def _off(value):
    """A setting left out, null, false or empty: the transform step is off."""
    return None if value is None or value is False or value == {} else value


def _becomes(key: str) -> bool:
    return any(key == w or key.startswith(f"{w}.") for w in _WHAT_AN_INPUT_BECOMES)


def _preprocessing_note(modality: str, path, trained: dict, store: dict) -> list[str]:
    """Refuse a store whose inputs became something else than the training inputs (another
    HU window, normalisation, resampled spacing, crop, tile size or prompt template); the
    note, if any, for the settings that only choose among a cohort's inputs or read its
    codes, for those only one version of mmpipe records, and for another version of the
    reading code."""
    mine, theirs = _settings(trained), _settings(store)
    # a setting that decides what an input becomes is compared where one side leaves it
    # out too: most transform keys have no default, and leaving one out is "none" (no
    # HU window, no crop), which another value contradicts
    hard = sorted(k for k in set(mine) | set(theirs)
                  if _becomes(k) and not _same(_off(mine.get(k)), _off(theirs.get(k))))
    if hard:
        shown = "; ".join(f"{k}: trained on {_short(mine.get(k))}, store has "
                          f"{_short(theirs.get(k))}" for k in hard)
        spacing = (f" (transform.spacing: {_short(mine['transform.spacing'])} resamples as "
                   "the run's training volumes were)"
                   if "transform.spacing" in hard and "transform.spacing" in mine else "")
        raise StoreError(f"{path}: the {modality} inputs were preprocessed differently from "
                         f"the run's training inputs ({shown}), so its features mean "
                         "something else to the model. Encode the new subjects with the "
                         f"run's preprocessing settings{spacing} and predict again")
    differ = sorted(k for k in set(mine) & set(theirs) if not _same(mine[k], theirs[k]))
    one_side = sorted(k for k in set(mine) ^ set(theirs) if not _becomes(k))
    notes = []
    if differ:
        notes.append(f"{modality}: inputs chosen or coded with other settings than the run's "
                     f"({', '.join(f'{k}: {_short(theirs[k])}' for k in differ)})")
    if one_side:
        notes.append(f"{modality}: {', '.join(one_side)} recorded for only one of the run's "
                     "training inputs and these (another version of mmpipe)")
    blocks = set(trained) & set(store)
    code = _code_keys(trained, blocks) != _code_keys(store, blocks)
    # what else moved the hash: a table's fields in another order (the signature says
    # the features are the same) is no note
    unexplained = not notes and all(trained.get(k) == store.get(k) for k in _NOT_COMPARED)
    if code or unexplained:
        notes.append(f"{modality}: inputs read by another version of mmpipe's reading code "
                     "than the run's training inputs: the scores may shift")
    return notes


def _modality_note(modality: str, path, attrs: dict, modalities: list[str]) -> str:
    """A store made for another modality than the one it is scored as. Another of the
    run's own (``mri_t1=`` given the T2 store: 26 of the demo's 200 classes flipped) is
    refused; one the run does not know is kept in the scores' notes, since a new cohort
    may name its modalities otherwise."""
    made_for = attrs.get("modality")
    if made_for is None or made_for == modality:
        return ""
    if made_for in modalities:
        raise StoreError(f"{path} was made for modality {made_for!r}, which the run also "
                         f"reads, and is given as {modality!r}: give each modality its own "
                         "store")
    note = (f"{modality}: scored with a store made for modality {made_for!r} ({path}): check "
            f"that it holds the run's {modality} inputs")
    log.warning("%s", note)
    return note


def code_note(modality: str, path, attrs: dict, trained: dict) -> str:
    """A note ("" when none) where the store was encoded by another version of the
    encoder's code, or with other releases of the packages it ran with, than the run's
    training store: the same settings and weights may then give other numbers (a new
    foreground z-score, another resampler). A model saved before these were recorded
    compares nothing. Every store records the same packages, so a tabular store's note
    may name torch, which it never ran: the note says "may"."""
    said = []
    if trained.get("code_version") and attrs.get("code_version") \
            and trained["code_version"] != attrs["code_version"]:
        said.append(f"encoded by another version of mmpipe's {modality} code (code key "
                    f"{str(trained['code_version'])[:12]} for the run's training store, "
                    f"{str(attrs['code_version'])[:12]} for this one)")
    mine, theirs = trained.get("package_versions"), attrs.get("package_versions")
    if isinstance(mine, dict) and isinstance(theirs, dict):
        # a release against a release: a build's local tag (torch's +cpu, +cu121) is the
        # same code, and a package one side lacks cannot have made its features
        def release(version) -> str:
            return str(version).split("+", 1)[0]

        moved = [f"{name} {mine[name]} -> {theirs[name]}" for name in sorted(mine)
                 if name in theirs and NOT_INSTALLED not in (mine[name], theirs[name])
                 and release(mine[name]) != release(theirs[name])]
        if moved:
            said.append("with other package versions than the run's training store ("
                        + ", ".join(moved) + ")")
    if not said:
        return ""
    note = (f"{modality}: {' and '.join(said)}: the scores may shift; encode the training "
            "cohort with this version and retrain to compare like with like")
    log.warning("%s: %s", path, note)
    return note


def method_code_note(bundle: dict) -> str:
    """A note ("" when none) where this mmpipe's code for the run's method (its module
    and the training code) differs from the code that trained it: a forward pass changed
    with its parameter names and shapes kept loads the weights and scores otherwise."""
    from mmpipe.methods import METHODS
    from mmpipe.params import method_code

    trained = bundle["meta"].get("code_version")
    kind = bundle["method"]["type"]
    now = method_code(kind) if trained and kind in METHODS else trained
    if now == trained:
        return ""
    note = (f"the run's method ({kind}) was trained by another version of mmpipe's code "
            f"(code key {str(trained)[:12]}, this version's {now[:12]}): if its "
            "forward pass changed, the scores differ from what the run would give")
    log.warning("%s", note)
    return note


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def predict_stores(run_dir: str | Path, stores: dict[str, str | Path],
                   device: str = "cpu") -> pl.DataFrame:
    """Scores of every subject found in ``stores`` (modality -> store path)."""
    device = resolve_device(device)
    return score_stores(*load_run(run_dir, device), stores, device)


def class_labels(bundle: dict) -> list[str]:
    """The label value each ``score_k`` column is the probability of, in column order."""
    values = bundle.get("label_values") or range(bundle["n_classes"])
    return [str(v) for v in values]


def score_stores(method, bundle: dict, stores: dict[str, str | Path],
                 device: torch.device) -> pl.DataFrame:
    """:func:`predict_stores` with the run loaded (:func:`load_run`, on ``device``)."""
    modalities = list(bundle["modalities"])
    if not stores:
        raise ConfigError("give a feature store of at least one of the run's modalities "
                          f"{modalities}")
    unknown = sorted(set(stores) - set(modalities))
    if unknown:
        raise ConfigError(f"the run was trained on {modalities}; no modality {unknown}")
    feats = {m: read_store(m, p) for m, p in stores.items()}
    cohorts = {m: f.attrs.get("cohort") for m, f in feats.items()
               if f.attrs.get("cohort") is not None}
    if len(set(cohorts.values())) > 1:  # DEMO-000 of one is not DEMO-000 of the other
        raise StoreError("the stores come from different cohorts ("
                         + ", ".join(f"{stores[m]}: {c!r}" for m, c in sorted(cohorts.items()))
                         + "): their subjects would be joined by ID. Give one cohort's stores")
    notes = [_modality_note(m, stores[m], f.attrs, modalities) for m, f in feats.items()]
    notes += [check_encoding(m, stores[m], f.attrs, bundle["encodings"].get(m, {}))
              for m, f in feats.items()]
    notes += [code_note(m, stores[m], f.attrs, bundle["encodings"].get(m, {}))
              for m, f in feats.items()]
    notes.append(method_code_note(bundle))
    trained_on = bundle["meta"].get("cohort")
    if trained_on is not None and trained_on in cohorts.values():
        notes.append(f"the stores are of cohort {trained_on!r}, which the run trained on: "
                     "its training and validation subjects are scored in-sample (read the "
                     "run's test split, predictions.parquet, for held-out scores)")
        log.warning("%s", notes[-1])
    if left_out := [m for m in modalities if m not in stores]:
        notes.append(f"{', '.join(left_out)}: no store given, scored as absent for every "
                     "subject")
        log.warning("%s", notes[-1])
    ids = common_subjects({m: (stores[m], f) for m, f in feats.items()})
    n = len(ids)
    x, present = {}, np.zeros((n, len(modalities)), bool)
    for j, m in enumerate(modalities):
        shape = tuple(bundle["shapes"][m])
        if m in feats:
            if feats[m].emb.shape[1:] != shape:
                raise StoreError(f"{m}: features of shape {feats[m].emb.shape[1:]}, the run "
                                 f"expects {shape}")
            present[:, j] = usable_rows(feats[m], stores[m])
            if (unusable := feats[m].present & ~present[:, j]).any():
                notes.append(f"{m}: {int(unusable.sum())} present subject(s) with NaN or inf "
                             f"features in {stores[m]}, scored as without it: "
                             + ", ".join(ids[unusable][:10].tolist()))
            x[m] = np.where(present[:, j].reshape(-1, *[1] * len(shape)),
                            np.nan_to_num(feats[m].emb), 0).astype(np.float32)
        else:
            x[m] = np.zeros((n, *shape), np.float32)
    # how each store was encoded, as in training: a method reads a tabular store's blank
    # columns through it (hgb's blanks as NaN)
    data = BenchData(subject_id=ids, y=np.zeros(n, dtype=np.int64), x=x, present=present,
                     modalities=modalities, n_classes=bundle["n_classes"],
                     provenance=dict(bundle.get("encodings") or {}))
    normalizer = Normalizer.from_state(bundle["normalizer"])
    if unread := [m for m in normalizer.unseen if m in feats]:
        notes.append(f"{', '.join(unread)}: no subject the run trained on had it, so the "
                     "model has no weights for it and its store is not read")
        log.warning("%s", notes[-1])
    data = normalizer.transform(data)
    present = data.present  # less a modality the model never trained on (its unseen)
    proba = np.full((n, bundle["n_classes"]), np.nan, dtype=np.float32)
    keep = np.flatnonzero(present.any(axis=1))
    if len(keep):
        proba[keep] = predict_proba(method, data.subset(keep), device)
    # the warning is also in the scores, where it cannot be missed with the file
    out = {"subject_id": ids.tolist(), "pattern": data.patterns(),
           "no_input": (~present.any(axis=1)).tolist(),
           "notes": ["; ".join(n for n in notes if n)] * n}
    for c in range(bundle["n_classes"]):
        out[f"score_{c}"] = proba[:, c].tolist()
    # the class index, as a run's predictions.parquet has it (class_labels names it)
    out["predicted"] = [None if np.isnan(p).any() else int(p.argmax()) for p in proba]
    return pl.DataFrame(out, schema_overrides={"predicted": pl.Int64})
