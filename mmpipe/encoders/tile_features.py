"""Per-tile slide features extracted by the common WSI tools (``tile_features`` encoder).

Three layouts, told apart by the file itself. Dataset names, dtypes and attributes are
the ones each tool's writer makes, read from the writers (not copied):
mahmoodlab/CLAM ``extract_features_fp.py`` with ``utils/file_utils.py`` ``save_hdf5``
(commit 53e2409); mahmoodlab/TRIDENT ``trident/wsi_objects/WSI.py`` ``extract_features``
with ``trident/IO.py`` ``save_h5`` and ``coords_to_h5`` (a91fa84); KatherLab/STAMP
``src/stamp/preprocessing/__init__.py`` (c54ce06; 2.0 before b67dbbc; 1.x
``stamp/preprocessing/extractor/feature_extractors.py``).

``clam``
    ``h5_files/<slide>.h5``: ``features`` float32 [N, D] and ``coords`` int32 [N, 2], the
    level-0 (x, y) of each patch's top-left corner. The writer passes no attributes, so the
    feature file's ``coords`` usually carry none; where they do carry the patching attributes
    (``patch_size``, ``patch_level``) they are recorded. ``pt_files/<slide>.pt``: the same
    features as one tensor, without coordinates; they come from the sibling
    ``../h5_files/<slide>.h5`` when it exists. CLAM does not record its feature encoder
    (its ``--model_name``): the encoder's ``feature_encoder`` setting names it.
``trident``
    ``features_<encoder>/<slide>.h5``: ``features`` [N, D] (float32, or the encoder's
    float16) whose attribute ``encoder`` names the patch encoder, and ``coords`` int64
    [N, 2] level-0 pixels whose attributes give ``patch_size`` (at the target
    magnification), ``target_magnification`` and ``overlap``. An empty slide is written
    as zero rows.
``stamp``
    ``feats`` float16 [N, D] and ``coords`` float32 [N, 2], each tile's (x, y) in
    micrometres, with file attributes ``extractor``, ``unit`` (``"um"``), ``tile_size_um``
    (``tile_size`` before 2.1), ``tile_size_px`` and ``feat_type`` (``"tile"``). Version-1
    files carry only ``extractor``: their coordinates are pixels of the 224-px tiles.
    STAMP's slide and patient encodings (``feat_type`` ``slide``/``patient``) are one
    vector, not tile features, and are refused.

Only h5py reads the HDF5 files and ``torch.load(weights_only=True)`` the ``.pt`` files
(:func:`mmpipe.encoders.precomputed.load_feature_file`): nothing in a data file is run.
Every failure is an :class:`InputError` that names the file and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mmpipe.errors import InputError

SUFFIXES = (".h5", ".pt")
# the name of the per-tile features in each layout
FEATURES = {"clam": "features", "trident": "features", "stamp": "feats"}
LEVEL0_PIXELS = "level-0 pixels"
MICROMETRES = "micrometres (rounded to whole micrometres)"
STAMP_V1_PIXELS = "pixels of the 224-px tiles (STAMP v1 file: no unit recorded)"
# what a file says about how its features were made; files of one store must agree
# on each key they record (None: not recorded)
PROVENANCE_KEYS = ("layout", "feature_encoder", "feature_dim", "patch_size", "patch_level",
                   "magnification", "overlap", "patch_size_um", "mpp", "coords_unit")


@dataclass
class TileFile:
    """A feature file as its header describes it (no features read yet)."""

    path: Path
    n_tiles: int
    # the file whose ``coords`` hold the tile coordinates (a .pt file's h5 sibling);
    # None when there are none
    coords_file: Path | None
    provenance: dict[str, Any] = field(default_factory=dict)
    # where ``feature_encoder`` came from: the file, its folder's name or the config
    encoder_source: str | None = None


def _plain(value: Any) -> Any:
    """An attribute as a plain hashable value; TRIDENT writes None as the text 'None'."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = tuple(value.tolist())
    return None if value in ("None", "") else value


def _dataset(f: h5py.File, name: str, path: Path, what: str) -> h5py.Dataset:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        found = "is not a dataset" if obj is not None else "is missing"
        raise InputError(f"the {what} dataset {name!r} {found} (the file holds "
                         f"{sorted(f.keys())})", path)
    if obj.dtype.kind not in "biuf":
        raise InputError(f"{name!r} has non-numeric dtype {obj.dtype}", path)
    return obj


def _check_shapes(features: tuple[int, ...], coords: tuple[int, ...] | None,
                  path: Path, name: str = "features") -> None:
    """One row per tile: [N, D] features, N > 0, and [N, 2] coordinates when given."""
    if not features or features[0] == 0 or 0 in features:
        raise InputError(f"the file holds zero tiles ({name} of shape {features}): the tool "
                         "found no tissue tile in this slide", path)
    if len(features) != 2:
        hint = (": one vector is a slide-level embedding (TRIDENT slide_features_*, STAMP "
                "slide/patient encodings), not tile features") if len(features) == 1 else ""
        raise InputError(f"{name} of shape {features}, expected [tiles, features]{hint}", path)
    if coords is None:
        return
    if len(coords) != 2 or coords[1] != 2:
        raise InputError(f"coords of shape {coords}, expected [tiles, 2] (x, y)", path)
    if coords[0] != features[0]:
        raise InputError(f"{coords[0]} coordinates for {features[0]} feature rows", path)


def _detect_layout(f: h5py.File, path: Path) -> str:
    if "feats" in f:
        return "stamp"
    if "features" not in f:
        raise InputError("the features are missing: no 'features' dataset (CLAM, TRIDENT) nor "
                         f"'feats' (STAMP); the file holds {sorted(f.keys())}", path)
    feats = f["features"]
    coords = f.get("coords")
    # TRIDENT's save_h5 gives the features their name/savetodir/encoder, and the coords
    # the magnifications (trident/IO.py coords_to_h5); CLAM's writer gives neither
    marks = set(feats.attrs) if isinstance(feats, h5py.Dataset) else set()
    if isinstance(coords, h5py.Dataset):
        marks |= set(coords.attrs)
    return "trident" if marks & {"savetodir", "encoder", "target_magnification"} else "clam"


def _clam_attrs(coords: h5py.Dataset) -> dict[str, Any]:
    # the patching attributes, where a file carries them (CLAM create_patches_fp.py:
    # wsi_core/WholeSlideImage.py process_contour)
    a = coords.attrs
    return {"patch_size": _plain(a.get("patch_size")), "patch_level": _plain(a.get("patch_level")),
            "coords_unit": LEVEL0_PIXELS}


def _trident_attrs(f: h5py.File, path: Path) -> tuple[dict[str, Any], str | None]:
    # features attrs: WSI.extract_features; coords attrs: trident/IO.py coords_to_h5
    a = f["coords"].attrs if isinstance(f.get("coords"), h5py.Dataset) else {}
    encoder, source = _plain(f["features"].attrs.get("encoder")), "file"
    if encoder is None and path.parent.name.startswith("features_"):
        encoder, source = path.parent.name.removeprefix("features_"), "folder name"
    return ({"feature_encoder": encoder, "patch_size": _plain(a.get("patch_size")),
             "magnification": _plain(a.get("target_magnification")),
             "overlap": _plain(a.get("overlap")), "coords_unit": LEVEL0_PIXELS},
            source if encoder is not None else None)


def _stamp_attrs(f: h5py.File, path: Path) -> dict[str, Any]:
    # STAMP src/stamp/preprocessing/__init__.py (the h5_fp.attrs it writes); the reader
    # it pairs with, src/stamp/modeling/data.py get_coords, takes tile_size + unit "um"
    # as the 2.0 spelling of tile_size_um
    a = f.attrs
    feat_type = _plain(a.get("feat_type"))
    if feat_type not in (None, "tile"):
        raise InputError(f"a STAMP {feat_type}-level encoding (feat_type {feat_type!r}), not "
                         "tile features", path)
    unit = _plain(a.get("unit"))
    size_um = _plain(a.get("tile_size_um", a.get("tile_size") if unit == "um" else None))
    size_px = _plain(a.get("tile_size_px"))
    if unit not in (None, "um"):
        raise InputError(f"STAMP coordinates in unit {unit!r}; mmpipe knows 'um'", path)
    mpp = round(float(size_um) / float(size_px), 4) if size_um and size_px else None
    return {"feature_encoder": _plain(a.get("extractor")), "patch_size": size_px,
            "patch_size_um": size_um, "mpp": mpp,
            "coords_unit": MICROMETRES if unit == "um" else STAMP_V1_PIXELS}


def _open(path: Path) -> h5py.File:
    if not h5py.is_hdf5(path):
        raise InputError("not an HDF5 file (no HDF5 signature): expected a CLAM, TRIDENT or "
                         "STAMP feature .h5", path)
    try:
        return h5py.File(path, "r")
    except OSError as err:  # truncated, or damaged past its signature
        raise InputError(f"cannot read the HDF5 file: {err}", path) from err


def _inspect_h5(path: Path) -> TileFile:
    with _open(path) as f:
        layout = _detect_layout(f, path)
        source = None
        if layout == "trident":
            prov, source = _trident_attrs(f, path)
        elif layout == "stamp":  # first: a slide-level STAMP file is refused as such
            prov = _stamp_attrs(f, path)
            source = "file" if prov["feature_encoder"] is not None else None
        feats = _dataset(f, FEATURES[layout], path, "features")
        coords = _dataset(f, "coords", path, "tile coordinates")
        _check_shapes(feats.shape, coords.shape, path, FEATURES[layout])
        if layout == "clam":
            prov = _clam_attrs(coords)
        prov.update(layout=layout, feature_dim=int(feats.shape[1]))
        return TileFile(path, int(feats.shape[0]), path, prov, source)


def _clam_sibling(path: Path) -> Path:
    """Where CLAM's extract_features_fp.py writes the h5 of a pt_files/<slide>.pt."""
    return path.parent.parent / "h5_files" / f"{path.stem}.h5"


def _read_pt(path: Path) -> np.ndarray:
    from mmpipe.encoders.precomputed import load_feature_file

    # torch.load(weights_only=True); empty, non-numeric and non-finite tensors refused
    try:
        return load_feature_file(path, flatten=False)
    except InputError as err:
        if "features are empty" in err.reason:
            raise InputError(f"the file holds zero tiles ({err.reason})", path) from None
        raise


def _inspect_pt(path: Path) -> TileFile:
    shape = _read_pt(path).shape
    sibling = _clam_sibling(path)
    prov: dict[str, Any] = {"coords_unit": None}
    coords_file = None
    if sibling.is_file():
        try:
            with _open(sibling) as f:
                coords = _dataset(f, "coords", sibling, "tile coordinates")
                _check_shapes(shape, coords.shape, path, "the .pt tensor")
                prov = _clam_attrs(coords)
        except InputError as err:
            raise InputError(f"its CLAM h5 sibling {sibling} (the tile coordinates): "
                             f"{err.reason}", path) from None
        coords_file = sibling
    else:
        _check_shapes(shape, None, path, "the .pt tensor")
    prov.update(layout="clam", feature_dim=int(shape[1]))
    return TileFile(path, int(shape[0]), coords_file, prov)


def inspect_tile_file(path: str | Path, feature_encoder: str | None = None) -> TileFile:
    """Layout, tile count, feature dimension and provenance of one feature file, from its
    header (a ``.pt`` file is read whole). ``feature_encoder`` (the config's) names the
    encoder of a file that records none; a file that records another one is refused."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"unsupported tile feature file type {suffix!r} (use one of "
                         f"{list(SUFFIXES)})", path)
    if not path.is_file():
        raise InputError("feature file not found", path)
    tf = _inspect_h5(path) if suffix == ".h5" else _inspect_pt(path)
    recorded = tf.provenance.get("feature_encoder")
    if recorded is None and feature_encoder:
        tf.provenance["feature_encoder"], tf.encoder_source = feature_encoder, "config"
    elif recorded is not None and feature_encoder and str(recorded) != feature_encoder:
        raise InputError(f"the file's features come from encoder {recorded!r} "
                         f"({tf.encoder_source}), the config's feature_encoder says "
                         f"{feature_encoder!r}", path)
    return tf


def _finite(arr: np.ndarray, what: str, path: Path) -> np.ndarray:
    bad = int(arr.size - np.isfinite(arr).sum())
    if bad:
        raise InputError(f"{what} hold {bad} non-finite value(s) (NaN/inf) of {arr.size}", path)
    return arr


def read_tile_features(tf: TileFile) -> tuple[np.ndarray, np.ndarray | None]:
    """The file's features (float32 [N, D]) and tile coordinates (int64 [N, 2] in
    ``coords_unit``; micrometres rounded to whole ones), or None without coordinates."""
    path = tf.path
    layout = tf.provenance["layout"]
    try:
        if path.suffix.lower() == ".pt":
            feats = _read_pt(path)
            coords = None
        else:
            with _open(path) as f:
                feats = _finite(np.asarray(f[FEATURES[layout]][()], dtype=np.float32),
                                "features", path)
                coords = f["coords"][()]
        if tf.coords_file is not None and coords is None:
            with _open(tf.coords_file) as f:
                coords = f["coords"][()]
    except (OSError, KeyError) as err:  # changed or damaged since its header was read
        raise InputError(f"cannot read the features: {type(err).__name__}: {err}",
                         path) from err
    _check_shapes(feats.shape, None if coords is None else coords.shape, path)
    if feats.shape != (tf.n_tiles, tf.provenance["feature_dim"]):
        raise InputError(f"features of shape {feats.shape}, its header said "
                         f"({tf.n_tiles}, {tf.provenance['feature_dim']})", path)
    if coords is not None:
        coords = np.rint(_finite(np.asarray(coords, dtype=np.float64), "coords", path))
        coords = coords.astype(np.int64)
    return np.ascontiguousarray(feats), coords
