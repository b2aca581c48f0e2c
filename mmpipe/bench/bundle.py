"""A run's ``model.pt``: what ``mmpipe predict`` needs to score new subjects, loaded
without running any code from the file.

The bundle holds plain data only (dicts, lists, strings, numbers and tensors), so it is
read with ``torch.load(weights_only=True)``, which refuses a pickle that would run code.
Non-neural methods store their fitted models as arrays too (``hgb``). Contents:

- ``format``: :data:`FORMAT`; ``method``: the method's config with the hyper-parameters
  the tuning chose; ``state``: its weights, or under cross-validation's fold ensemble
  ``{"members": [...], "normalizers": [...]}`` (each fold model's weights and the
  normaliser of its training folds) with ``ensemble``: the number of fold models;
- ``modalities``, ``shapes``, ``n_classes``, ``label``, ``label_values``;
- ``normalizer``: the training split's normalisation (:class:`~mmpipe.bench.data.Normalizer`);
- ``feature_set``: modality -> encoder; ``encodings``: modality -> the signature of the
  store the run was trained on (:func:`mmpipe.store.encoding_signature`: encoder type,
  weights, feature names and tabular encoding, preprocessing), so new stores made another
  way are refused instead of silently scored;
- ``meta``: cohort, feature set, method, scenario, rate.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmpipe.errors import MmpipeError, pickles_code, unpickler_refusal
from mmpipe.layout import MODEL

FORMAT = 2
_REQUIRED = {"format": int, "method": dict, "state": dict, "modalities": list, "shapes": dict,
             "n_classes": int, "label": str, "label_values": list, "normalizer": dict,
             "feature_set": dict, "encodings": dict, "meta": dict}


class ModelBundleError(MmpipeError):
    """A run's model file is unsafe, malformed or from another version of mmpipe."""


def _plain(value: Any, where: str = "bundle") -> Any:
    """Numpy scalars and arrays as Python values / tensors, which ``weights_only`` loads;
    anything else is refused here, not later as a file that "would run code"."""
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if value is None or isinstance(value, str | int | float | bool | torch.Tensor):
        return value
    raise ModelBundleError(f"{where}: a model bundle holds plain data and tensors, not "
                           f"{type(value).__name__}")


def save_bundle(path: str | Path, **contents: Any) -> None:
    bundle = {"format": FORMAT, **contents}
    missing = sorted(set(_REQUIRED) - set(bundle))
    if missing:
        raise ModelBundleError(f"{path}: a model bundle needs {missing}")
    torch.save(_plain(bundle), path)


def _check_intact(path: Path) -> None:
    """Refuse a file whose bytes changed since it was written: ``torch.load`` does not
    check the zip's checksums, so a few bytes flipped inside a weight (a bad copy, a
    failing disk) were scored without a word. A file that is no zip is left to
    ``torch.load``'s own message."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return
    except Exception as err:  # a record that cannot be decompressed at all
        damaged = f"? ({type(err).__name__}: {err})"
    if damaged is not None:
        raise ModelBundleError(f"{path}: damaged: its record {damaged} fails its checksum, "
                               "so its bytes changed after it was written (a bad copy or "
                               "disk); copy it again or retrain the run")


def load_bundle(path: str | Path) -> dict[str, Any]:
    """The bundle at ``path`` (a run directory or its ``model.pt``), checked."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL
    if not path.is_file():
        raise ModelBundleError(f"{path}: no model file (a run directory holds {MODEL} "
                               "unless benchmark.keep_models was 'best' or 'none': its "
                               "metrics.json names the seed that kept it, model_seed)")
    _check_intact(path)
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        why = unpickler_refusal(err) or str(err)
        if pickles_code(err):  # a class or function the file would call: code
            raise ModelBundleError(
                f"{path}: refused: the file holds objects that would run code when loaded "
                f"({why}); mmpipe writes only plain data and tensors, so this file was not "
                "written by mmpipe or was tampered with") from None
        raise ModelBundleError(f"{path}: not a readable model file ({why})") from None
    except Exception as err:  # truncated zip, not a torch file, ...
        raise ModelBundleError(f"{path}: not a readable model file "
                               f"({type(err).__name__}: {err})") from None
    if not isinstance(bundle, dict):
        raise ModelBundleError(f"{path}: a model bundle is a mapping, found "
                               f"{type(bundle).__name__}")
    if bundle.get("format") != FORMAT:
        newer = isinstance(bundle.get("format"), int) and bundle["format"] > FORMAT
        raise ModelBundleError(f"{path}: bundle format {bundle.get('format')!r}, this mmpipe "
                               f"reads format {FORMAT}: " + (
                                   "it was written by a newer mmpipe; upgrade mmpipe to "
                                   "score with it" if newer else
                                   "retrain the run with this version"))
    problems = [f"{key!r} missing" if key not in bundle
                else f"{key!r} is {type(bundle[key]).__name__}, not {kind.__name__}"
                for key, kind in _REQUIRED.items()
                if key not in bundle or not isinstance(bundle[key], kind)]
    if not problems:
        if set(bundle["modalities"]) != set(bundle["shapes"]):
            problems.append("its modalities and shapes disagree")
        if not all(isinstance(s, list) and all(isinstance(d, int) for d in s)
                   for s in bundle["shapes"].values()):
            problems.append("a shape is not a list of sizes")
        if not isinstance(bundle["method"].get("type"), str):
            problems.append("its method has no 'type'")
        if bundle["n_classes"] < 2:
            problems.append(f"n_classes is {bundle['n_classes']}")
        elif bundle["label_values"] and len(bundle["label_values"]) != bundle["n_classes"]:
            # the scores' classes would be named past the columns there are
            problems.append(f"{len(bundle['label_values'])} label values for "
                            f"{bundle['n_classes']} classes")
    if problems:
        raise ModelBundleError(f"{path}: malformed model bundle: {'; '.join(problems)}")
    return bundle
