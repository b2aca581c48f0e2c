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
(:func:`mmpipe.encoders.precomputed.load_feature_file`): nothing in a data file is run,
and nothing in one makes the job read another file: ``features``/``feats``/``coords``
that are links, keep their data in external files or are virtual datasets are refused
(the tools write plain datasets). Every failure, h5py's and numpy's own errors on a
malformed file included, is an :class:`InputError` that names the file and the reason,
so one bad file rejects its subject and never stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mmpipe.errors import InputError, shared_cause

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
# the datasets the layouts read
DATASETS = ("features", "feats", "coords")
# what h5py, numpy and torch raise on a malformed file (a dangling link, a bad attribute,
# a group where a dataset belongs, a damaged object header: h5py's RuntimeError "addr
# overflow"): turned into an InputError that names the file; but running out of memory
# (torch's allocator raises a RuntimeError too) fails the job (errors.shared_cause)
_READ_ERRORS = (ValueError, TypeError, KeyError, OSError, RuntimeError)


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


def _decoded(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _plain(value: Any, name: str, path: Path) -> Any:
    """An attribute as a plain hashable value (the files of a store are compared on them):
    a scalar or a flat tuple; TRIDENT writes None as the text 'None'. An array of more
    than one axis, or anything else unhashable, is no patch size or encoder name: refused."""
    if isinstance(value, h5py.Empty):  # an attribute without a value records nothing
        return None
    if isinstance(value, np.ndarray) and value.ndim > 1:
        raise InputError(f"the attribute {name!r} is an array of shape {value.shape}, "
                         "expected a single value or a flat list", path)
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    value = tuple(map(_decoded, value)) if isinstance(value, list) else _decoded(value)
    try:
        hash(value)
    except TypeError:
        raise InputError(f"the attribute {name!r} holds {type(value).__name__} "
                         f"{str(value)[:60]!r}, expected a single value or a flat list",
                         path) from None
    return None if value in ("None", "") else value


def _refuse_links(f: h5py.File, path: Path) -> None:
    """The tools write their datasets into the file itself. A link to another file, or a
    soft link (whose path may pass through one), would make the job read a file the
    config never named: refused before anything follows it."""
    for name in DATASETS:
        link = f.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise InputError(f"{name!r} is an external link to {link.path!r} in file "
                             f"{link.filename!r}: a feature file must hold its own data",
                             path)
        if isinstance(link, h5py.SoftLink):
            raise InputError(f"{name!r} is a soft link to {link.path!r}: a feature file "
                             "must hold its own data as plain datasets", path)


def _in_file(ds: Any, name: str, path: Path) -> h5py.Dataset:
    """A dataset whose values are stored in this file: external raw storage and virtual
    datasets (data mapped from other files) are refused, as links are."""
    if not isinstance(ds, h5py.Dataset):  # a group, or a file changed since its header
        raise InputError(f"{name!r} is not a dataset", path)
    if ds.is_virtual:
        raise InputError(f"{name!r} is a virtual dataset (its data mapped from other "
                         "datasets or files): a feature file must hold its own data", path)
    if ds.external:
        files = [_decoded(e[0]) for e in ds.external]
        raise InputError(f"{name!r} keeps its data in external file(s) {files}: a feature "
                         "file must hold its own data", path)
    return ds


def _dataset(f: h5py.File, name: str, path: Path, what: str) -> h5py.Dataset:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        found = "is not a dataset" if obj is not None else "is missing"
        raise InputError(f"the {what} dataset {name!r} {found} (the file holds "
                         f"{sorted(f.keys())})", path)
    _in_file(obj, name, path)
    if obj.dtype.kind not in "biuf":
        raise InputError(f"{name!r} has non-numeric dtype {obj.dtype}", path)
    return obj


def _check_shapes(features: tuple[int, ...], coords: tuple[int, ...] | None,
                  path: Path, name: str = "features") -> None:
    """One row per tile: [N, D] features, N > 0 and D > 0, and [N, 2] coordinates when
    given. ``name`` is the features' dataset name (``feats`` in STAMP files)."""
    if features and features[0] == 0:
        raise InputError(f"the file holds zero tiles ({name} of shape {features}): the tool "
                         "found no tissue tile in this slide", path)
    if len(features) != 2:
        hint = (": one vector is a slide-level embedding (TRIDENT slide_features_*, STAMP "
                "slide/patient encodings), not tile features") if len(features) == 1 else ""
        raise InputError(f"{name} of shape {features}, expected [tiles, features]{hint}", path)
    if features[1] == 0:
        raise InputError(f"{name} of shape {features}: {features[0]} tiles with zero feature "
                         "columns each (no feature vector was written)", path)
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


def _clam_attrs(coords: h5py.Dataset, path: Path) -> dict[str, Any]:
    # the patching attributes, where a file carries them (CLAM create_patches_fp.py:
    # wsi_core/WholeSlideImage.py process_contour)
    a = coords.attrs
    return {key: _plain(a.get(key), key, path) for key in ("patch_size", "patch_level")} | {
        "coords_unit": LEVEL0_PIXELS}


def _trident_attrs(f: h5py.File, path: Path) -> tuple[dict[str, Any], str | None]:
    # features attrs: WSI.extract_features; coords attrs: trident/IO.py coords_to_h5
    a = f["coords"].attrs if isinstance(f.get("coords"), h5py.Dataset) else {}
    encoder, source = _plain(f["features"].attrs.get("encoder"), "encoder", path), "file"
    if encoder is None and path.parent.name.startswith("features_"):
        encoder, source = path.parent.name.removeprefix("features_"), "folder name"
    return ({"feature_encoder": encoder,
             "patch_size": _plain(a.get("patch_size"), "patch_size", path),
             "magnification": _plain(a.get("target_magnification"), "target_magnification",
                                     path),
             "overlap": _plain(a.get("overlap"), "overlap", path), "coords_unit": LEVEL0_PIXELS},
            source if encoder is not None else None)


def _size(a: h5py.AttributeManager, key: str, path: Path) -> float | int | None:
    """A STAMP tile size attribute: a positive number (µm per pixel is computed from two)."""
    value = _plain(a.get(key), key, path)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                              or not np.isfinite(value) or value <= 0):
        raise InputError(f"the STAMP attribute {key!r} is {value!r}, expected a positive "
                         "number", path)
    return value


def _stamp_attrs(f: h5py.File, path: Path) -> dict[str, Any]:
    # STAMP src/stamp/preprocessing/__init__.py (the h5_fp.attrs it writes); the reader
    # it pairs with, src/stamp/modeling/data.py get_coords, takes tile_size + unit "um"
    # as the 2.0 spelling of tile_size_um
    a = f.attrs
    feat_type = _plain(a.get("feat_type"), "feat_type", path)
    if feat_type not in (None, "tile"):
        raise InputError(f"a STAMP {feat_type}-level encoding (feat_type {feat_type!r}), not "
                         "tile features", path)
    unit = _plain(a.get("unit"), "unit", path)
    if unit not in (None, "um"):
        raise InputError(f"STAMP coordinates in unit {unit!r}; mmpipe knows 'um'", path)
    size_um = _size(a, "tile_size" if unit == "um" and "tile_size_um" not in a
                    else "tile_size_um", path)
    size_px = _size(a, "tile_size_px", path)
    mpp = round(size_um / size_px, 4) if size_um and size_px else None
    return {"feature_encoder": _plain(a.get("extractor"), "extractor", path), "patch_size": size_px,
            "patch_size_um": size_um, "mpp": mpp,
            "coords_unit": MICROMETRES if unit == "um" else STAMP_V1_PIXELS}


def _open(path: Path) -> h5py.File:
    if not h5py.is_hdf5(path):
        raise InputError("not an HDF5 file (no HDF5 signature): expected a CLAM, TRIDENT or "
                         "STAMP feature .h5", path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:  # truncated, or damaged past its signature
        if shared_cause(err):  # a mount's error, where h5py keeps the errno: the job's
            raise
        raise InputError(f"cannot read the HDF5 file: {err}", path) from err
    try:
        _refuse_links(f, path)
    except BaseException:
        f.close()
        raise
    return f


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
            prov = _clam_attrs(coords, path)
        prov.update(layout=layout, feature_dim=int(feats.shape[1]))
        return TileFile(path, int(feats.shape[0]), path, prov, source)


def _clam_sibling(path: Path) -> Path:
    """Where CLAM's extract_features_fp.py writes the h5 of a pt_files/<slide>.pt."""
    return path.parent.parent / "h5_files" / f"{path.stem}.h5"


def _inspect_pt(path: Path) -> TileFile:
    from mmpipe.encoders.precomputed import torch_feature_shape

    # the header only (the storage is mapped, not read): the values are read, and their
    # non-finite ones refused, with the features (read_tile_features), as an HDF5 file's
    shape = torch_feature_shape(path)
    sibling = _clam_sibling(path)
    prov: dict[str, Any] = {"coords_unit": None}
    coords_file = None
    if sibling.is_file():
        try:
            with _open(sibling) as f:
                coords = _dataset(f, "coords", sibling, "tile coordinates")
                _check_shapes(shape, coords.shape, path, "the .pt tensor")
                # CLAM writes one features array to both files: an h5 of another
                # encoder's features lent the tensor its coordinates (read_tile_features
                # compares rows, for another slide's of as many tiles)
                if "features" in f and (
                        found := tuple(_dataset(f, "features", sibling, "features").shape)
                ) != tuple(shape):
                    raise InputError(f"its features are {list(found)}, the .pt tensor "
                                     f"{list(shape)}: not the same features", sibling)
                prov = _clam_attrs(coords, sibling)
        except (InputError, *_READ_ERRORS) as err:
            if shared_cause(err):
                raise
            reason = (err.reason if isinstance(err, InputError)
                      else f"{type(err).__name__}: {err}")
            raise InputError(f"its CLAM h5 sibling {sibling} (the tile coordinates): "
                             f"{reason}", path) from None
        coords_file = sibling
    else:
        _check_shapes(shape, None, path, "the .pt tensor")
    prov.update(layout="clam", feature_dim=int(shape[1]))
    return TileFile(path, int(shape[0]), coords_file, prov)


def inspect_tile_file(path: str | Path, feature_encoder: str | None = None) -> TileFile:
    """Layout, tile count, feature dimension and provenance of one feature file, from its
    header (a ``.pt`` file's storage is mapped, not read, when it is in torch's zip
    format). ``feature_encoder`` (the config's) names the encoder of a file that records
    none; a file that records another one is refused."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"unsupported tile feature file type {suffix!r} (use one of "
                         f"{list(SUFFIXES)})", path)
    if not path.is_file():
        raise InputError("feature file not found", path)
    try:
        tf = _inspect_h5(path) if suffix == ".h5" else _inspect_pt(path)
    except _READ_ERRORS as err:  # h5py's or numpy's own error on a malformed file
        if shared_cause(err):
            raise
        raise InputError(f"cannot read the file's header: {type(err).__name__}: {err}",
                         path) from err
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


def _positions(coords: np.ndarray, path: Path) -> np.ndarray:
    """Coordinates as int64, rounded. A negative one is no position on the slide, and one
    past the int64 range would be cast to INT64_MIN without a word: both refused."""
    raw = _finite(coords, "coords", path)
    coords = np.rint(raw)
    if negative := int((coords < 0).sum()):
        raise InputError(f"coords hold {negative} negative value(s) (smallest "
                         f"{coords.min():g}): tile positions on a slide are not negative", path)
    if huge := int((coords >= 2.0 ** 63).sum()):
        raise InputError(f"coords hold {huge} value(s) past the int64 range (largest "
                         f"{coords.max():g}): not tile positions", path)
    positions = coords.astype(np.int64)
    # CLAM, TRIDENT and STAMP write each tile once: a position twice is a merged or
    # corrupt file, whose repeated tiles weighed more in the slide's mean; positions that
    # only meet once rounded are in some unit other than pixels or micrometres
    if positions.ndim == 2 and (repeated := len(raw) - len(np.unique(raw, axis=0))):
        raise InputError(f"coords hold {repeated} repeated tile position(s): each tile is "
                         "written once", path)
    if positions.ndim == 2 and (merged := len(positions) - len(np.unique(positions, axis=0))):
        raise InputError(f"coords hold {merged} position(s) less than one unit from another "
                         "(fractions, or normalised): not pixel or micrometre positions", path)
    return positions


def _same_rows(h5_features, feats: np.ndarray, sibling: Path) -> None:
    """The first and last rows of a CLAM h5's features against the .pt tensor's: the same
    array in both files, or the h5 is another slide's (of as many tiles) and its
    coordinates are not these tiles'."""
    if h5_features.shape != feats.shape:
        return  # inspect_tile_file names the shapes
    ends = sorted({0, len(feats) - 1})  # h5py indexes with increasing, distinct rows
    if not np.array_equal(np.asarray(h5_features[ends], dtype=np.float32), feats[ends]):
        raise InputError("its features differ from the .pt tensor's (first or last tile): "
                         "another slide's file, whose coordinates are not these tiles'",
                         sibling)


def read_tile_features(tf: TileFile) -> tuple[np.ndarray, np.ndarray | None]:
    """The file's features (float32 [N, D]) and tile coordinates (int64 [N, 2] in
    ``coords_unit``; micrometres rounded to whole ones), or None without coordinates."""
    from mmpipe.encoders.precomputed import as_float32, load_feature_file

    path = tf.path
    pt = path.suffix.lower() == ".pt"
    name = "the .pt tensor" if pt else FEATURES[tf.provenance["layout"]]
    coords = None
    try:
        if pt:
            # torch.load(weights_only=True); non-numeric and non-finite tensors refused
            feats = load_feature_file(path, flatten=False)
            if tf.coords_file is not None:  # CLAM's h5_files/<slide>.h5 beside pt_files/
                with _open(tf.coords_file) as f:
                    coords = _in_file(f["coords"], "coords", tf.coords_file)[()]
                    if "features" in f:
                        _same_rows(_in_file(f["features"], "features", tf.coords_file),
                                   feats, tf.coords_file)
        else:
            with _open(path) as f:
                feats = as_float32(np.asarray(_in_file(f[name], name, path)[()]),
                                   "features", path)
                coords = _in_file(f["coords"], "coords", path)[()]
        if coords is not None:
            coords = np.asarray(coords, dtype=np.float64)
    except _READ_ERRORS as err:  # changed or damaged since its header was read
        if shared_cause(err):
            raise
        raise InputError(f"cannot read the features: {type(err).__name__}: {err}",
                         path) from err
    _check_shapes(feats.shape, None if coords is None else coords.shape, path, name)
    if feats.shape != (tf.n_tiles, tf.provenance["feature_dim"]):
        raise InputError(f"{name} of shape {feats.shape}, its header said "
                         f"({tf.n_tiles}, {tf.provenance['feature_dim']})", path)
    if coords is not None:
        coords = _positions(coords, path)
    return np.ascontiguousarray(feats), coords
