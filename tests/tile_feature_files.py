"""Miniature tile feature files written the way each tool writes them: the dataset names,
dtypes, chunking and attributes of CLAM's ``extract_features_fp.py`` (``h5_files/``,
``pt_files/``; the patching attributes of ``create_patches_fp.py`` on request), TRIDENT's
``WSI.extract_features`` (``<mag>x_<px>px_<overlap>px_overlap/features_<encoder>/``) and
STAMP's ``stamp preprocess`` (2.1+, 2.0 and 1.x attributes)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch


def grid(n: int, step: int) -> np.ndarray:
    """(x, y) of ``n`` tiles in rows of four, ``step`` apart."""
    i = np.arange(n)
    return np.stack([(i % 4) * step, (i // 4) * step], axis=1)


def _appendable(f: h5py.File, name: str, data: np.ndarray, chunk_rows: int) -> h5py.Dataset:
    # CLAM's save_hdf5 and TRIDENT's save_h5: resizable along the tiles, chunked by rows
    return f.create_dataset(name, data=data, maxshape=(None, *data.shape[1:]),
                            chunks=(max(1, min(chunk_rows, len(data))), *data.shape[1:]))


def write_clam(root: Path, slide: str, feats: np.ndarray, *, patch_attrs: bool = False,
               pt: bool = True, h5: bool = True) -> tuple[Path, Path]:
    """``h5_files/<slide>.h5`` (features float32, coords int32 level-0 px, no attributes
    unless ``patch_attrs``) and ``pt_files/<slide>.pt`` (the features tensor)."""
    h5_path, pt_path = root / "h5_files" / f"{slide}.h5", root / "pt_files" / f"{slide}.pt"
    if h5:
        h5_path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(h5_path, "w") as f:
            _appendable(f, "features", feats.astype(np.float32), 32)
            coords = _appendable(f, "coords", grid(len(feats), 512).astype(np.int32), 32)
            if patch_attrs:  # create_patches_fp.py's attributes of its patch file's coords
                coords.attrs.update({"patch_size": 256, "patch_level": 0,
                                     "downsample": (1.0, 1.0), "downsampled_level_dim": (4096, 4096),
                                     "level_dim": (4096, 4096), "name": slide,
                                     "save_path": str(root / "patches")})
    if pt:
        pt_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torch.from_numpy(feats.astype(np.float32)), pt_path)
    return h5_path, pt_path


def write_trident(root: Path, slide: str, feats: np.ndarray, *, encoder: str | None = "uni_v1",
                  patch_size: int = 256, magnification: int = 20,
                  dtype=np.float32) -> Path:
    """``<mag>x_<px>px_0px_overlap/features_<encoder>/<slide>.h5``; a None encoder is
    written as the text 'None' (TRIDENT's save_h5 serialises None that way)."""
    folder = (root / f"{magnification}x_{patch_size}px_0px_overlap"
              / f"features_{encoder or 'conch_v15'}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slide}.h5"
    with h5py.File(path, "w") as f:
        ds = _appendable(f, "features", feats.astype(dtype), 1)
        ds.attrs.update({"name": slide, "savetodir": str(folder),
                         "encoder": encoder if encoder is not None else "None"})
        coords = _appendable(f, "coords", grid(len(feats), 2 * patch_size).astype(np.int64), 1)
        coords.attrs.update({"patch_size": patch_size, "patch_size_level0": patch_size * 40 // magnification,
                             "level0_magnification": 40, "target_magnification": magnification,
                             "overlap": 0, "name": slide, "savetodir": str(root),
                             "level0_width": 8192, "level0_height": 8192})
    return path


def write_stamp(root: Path, slide: str, feats: np.ndarray, *, extractor: str = "mahmood-uni",
                tile_size_um: float = 256.0, tile_size_px: int = 224,
                version: str = "2.3.0") -> Path:
    """A STAMP feature file: feats float16, coords float32 micrometres with the file
    attributes of ``version`` (2.1+: tile_size_um; 2.0: tile_size + unit; 1.x: pixel
    coordinates and the extractor only)."""
    folder = root / f"{extractor}-abcdef12"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slide}.h5"
    with h5py.File(path, "w") as f:
        if version.startswith("1."):
            f["coords"] = grid(len(feats), 224).astype(np.int64)
            f["feats"] = feats.astype(np.float32)
            f["augmented"] = np.zeros(len(feats), dtype=bool)
            f.attrs["extractor"] = extractor
            return path
        f["coords"] = (grid(len(feats), 1) * tile_size_um + 0.3).astype(np.float32)
        f["feats"] = feats.astype(np.float16)
        f.attrs.update({"stamp_version": version, "extractor": extractor, "unit": "um"})
        if version < "2.1":  # before 2.1 (src/stamp/preprocessing/__init__.py at b67dbbc~1)
            f.attrs["tile_size"] = tile_size_um
            return path
        f.attrs.update({"tile_size_um": tile_size_um, "tile_size_px": tile_size_px,
                        "code_hash": "abcdef12", "feat_type": "tile"})
    return path
