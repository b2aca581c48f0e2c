"""``mmpipe predict`` on model files and stores it must not trust: a model.pt crafted to
run code, a malformed one, and stores made another way than the training stores (a
tabular store fitted on another cohort: its columns mean something else)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mmpipe.bench.bundle import FORMAT, load_bundle
from mmpipe.bench.predict import predict_stores
from mmpipe.bench.prepare import make_mask, make_split
from mmpipe.bench.run import run_experiment
from mmpipe.cli import main
from mmpipe.errors import StoreError
from tests.conftest import RunsCode
from tests.reliability.conftest import build, csv_cohort_config, encode, with_cohort, write_csv

FIELDS = ["age", "site"]


def _rows(n: int, sites: list[str], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": f"p{seed}-{i:02d}", "y": int(i % 2), "age": int(40 + 30 * rng.random()
                                                                  + 10 * (i % 2)),
             "site": sites[i % len(sites)]} for i in range(n)]


def _cohort(tmp_path, base, rows, **tabular):
    csv = write_csv(tmp_path / "cohort.csv", rows)
    mods = {"clinical": {"kind": "table", "fields": FIELDS, "encoders": ["tabular"]}}
    cfg = with_cohort(base, csv_cohort_config(csv, mods))
    cfg["encoders"]["tabular"].update(tabular)
    layout = build(tmp_path, cfg)
    return layout, encode(layout, cfg, "clinical", "tabular").path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base_config):
    """A deepsets run on a 40-subject tabular cohort from sites A and B. Its run names
    another cohort than its stores' ("trained"), so the tests score them as a new
    cohort's, without the note of stores of the cohort the run trained on."""
    root = tmp_path_factory.mktemp("trained")
    layout, store = _cohort(root, base_config, _rows(40, ["A", "B"], 0))
    make_split(layout.root, "y", 0, (0.6, 0.2, 0.2), layout.split(0))
    make_mask(layout.root, "natural", 0.0, 0, layout.mask("natural", 0.0, 0))
    run = root / "run"
    run_experiment(layout.root, {"clinical": "tabular"}, "y",
                   {"type": "deepsets", "max_epochs": 3}, layout.split(0),
                   layout.mask("natural", 0.0, 0), run, seed=0, tuning={"trials": 1},
                   meta={"cohort": "trained", "feature_set": "tab", "method": "deepsets",
                         "scenario": "natural", "rate": 0.0})
    return run, store



def _predict(run, store, out) -> int:
    return main(["predict", str(run), "--store", f"clinical={store}", "--out", str(out)])


def test_predict_scores_the_training_stores(trained, tmp_path, capsys):
    """The command's scores are the run's own test scores, and say which class each is."""
    import json

    import polars as pl
    import pyarrow.parquet as pq

    run, store = trained
    assert _predict(run, store, tmp_path / "scores.parquet") == 0
    scores = pl.read_parquet(tmp_path / "scores.parquet")
    own = pl.read_parquet(run / "predictions.parquet").filter(
        (pl.col("split") == "test") & (pl.col("evaluation") == "scenario"))
    joined = own.join(scores, on="subject_id", suffix="_new")
    assert len(joined) == len(own) > 0
    assert np.allclose(joined["score_1"], joined["score_1_new"], atol=1e-6)
    assert (joined["predicted"] == joined["predicted_new"]).all()
    assert "score_0 = P(y = 0), score_1 = P(y = 1)" in capsys.readouterr().out
    meta = pq.read_metadata(tmp_path / "scores.parquet").metadata
    assert json.loads(meta[b"mmpipe.score_classes"]) == ["0", "1"]


def test_a_modality_given_twice_or_a_folder_as_out_is_refused(trained, tmp_path, capsys):
    """The last store given was scored and the first dropped, without a word."""
    run, store = trained
    assert main(["predict", str(run), "--store", f"clinical={store}", "--store",
                 f"clinical={store}", "--out", str(tmp_path / "s.parquet")]) == 1
    assert "gives modality 'clinical' twice" in capsys.readouterr().err
    assert not (tmp_path / "s.parquet").exists()
    # a folder as --out: a traceback (IsADirectoryError) after every subject was scored
    assert _predict(run, store, tmp_path) == 1
    assert f"--out {tmp_path} is a folder: give the parquet file to write" in \
        capsys.readouterr().err


def test_the_run_is_loaded_onto_the_device_it_scores_on(trained):
    """The inputs went to ``--device`` and the network stayed on the CPU: any GPU failed
    with a bare device mismatch. (The meta device stands in for one here.)"""
    from mmpipe.bench.predict import load_run

    run, _ = trained
    method, _ = load_run(run, torch.device("meta"))
    assert {p.device.type for p in method.parameters()} == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_predict_on_cuda_scores_as_on_the_cpu(trained):
    run, store = trained
    cpu = predict_stores(run, {"clinical": store}, device="cpu")
    cuda = predict_stores(run, {"clinical": store}, device="cuda")
    assert np.allclose(cpu["score_1"], cuda["score_1"], atol=1e-5)


def test_a_store_listing_a_subject_twice_or_other_subjects_is_named(trained, tmp_path):
    import shutil

    import zarr

    from mmpipe.bench.predict import score_stores

    run, store = trained
    twice = tmp_path / "twice.zarr"
    shutil.copytree(store, twice)
    group = zarr.open_group(str(twice), mode="r+")
    ids = group["subject_id"][:]
    ids[1] = ids[0]
    group["subject_id"][:] = ids
    group.attrs["modality"] = "other"  # scored below as the bundle's second modality
    with pytest.raises(StoreError,
                       match=r"clinical store .*twice.zarr lists subject\(s\) \[.p0-00.\] more"):
        predict_stores(run, {"clinical": twice})
    from mmpipe.bench.predict import load_run

    # two modalities' stores of other subjects name both stores and the first difference
    method, bundle = load_run(run)
    bundle = {**bundle, "modalities": ["clinical", "other"],
              "shapes": {**bundle["shapes"], "other": bundle["shapes"]["clinical"]},
              "encodings": {**bundle["encodings"], "other": bundle["encodings"]["clinical"]}}
    with pytest.raises(StoreError, match=r"row 1: 'p0-01' vs 'p0-00'") as info:
        score_stores(method, bundle, {"clinical": store, "other": twice}, torch.device("cpu"))
    assert str(store) in str(info.value) and str(twice) in str(info.value)


def test_a_model_file_that_runs_code_is_refused(trained, tmp_path, capsys):
    run, store = trained
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    bundle = load_bundle(run)
    bundle["state"] = {"payload": RunsCode(marker)}
    torch.save(bundle, crafted / "model.pt")
    assert _predict(crafted, store, tmp_path / "scores.parquet") == 1
    assert "would run code" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "scores.parquet").exists()


def test_a_malformed_model_file_is_a_named_error(trained, tmp_path, capsys):
    run, store = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    bundle = load_bundle(run)
    del bundle["shapes"]
    torch.save(bundle, bad / "model.pt")
    assert _predict(bad, store, tmp_path / "s.parquet") == 1
    assert "malformed model bundle: 'shapes' missing" in capsys.readouterr().err
    # weights that do not fit the method: named too, not a KeyError from deep inside
    bundle = {**load_bundle(run), "state": {"nonsense": torch.zeros(1)}}
    assert bundle["format"] == FORMAT
    torch.save(bundle, bad / "model.pt")
    assert _predict(bad, store, tmp_path / "s.parquet") == 1
    assert "do not fit method 'deepsets'" in capsys.readouterr().err
    # a hyper-parameter renamed since the run was saved: a ValueError's traceback, the
    # file unnamed; a normaliser statistic of another width: broadcast and scored
    width = load_bundle(run)["shapes"]["clinical"][0]
    for change, message in (
            ({"method": {**load_bundle(run)["method"], "bogus": 1}},
             r"its method .* cannot be built by this mmpipe: .*unknown hyper-parameters"),
            ({"normalizer": {**load_bundle(run)["normalizer"],
                             "stats": {"clinical": {"mean": [0.5], "std": [2.0]}}}},
             rf"malformed normaliser: clinical.mean holds 1 values for {width} features")):
        torch.save({**load_bundle(run), **change}, bad / "model.pt")
        assert _predict(bad, store, tmp_path / "s.parquet") == 1
        err = capsys.readouterr().err
        assert str(bad) in err and re.search(message, err), err


def test_a_tabular_store_fitted_on_another_cohort_is_refused(trained, tmp_path,
                                                            base_config):
    run, _ = trained
    # sites B and C: the one-hot columns mean other sites than in training
    _, other = _cohort(tmp_path / "new", base_config, _rows(12, ["B", "C"], 1))
    with pytest.raises(StoreError, match="made differently") as info:
        predict_stores(run, {"clinical": other})
    assert "feature_names" in str(info.value) and "encoding_from" in str(info.value)


def test_a_store_encoded_with_the_training_encoding_is_scored_and_says_what_is_new(
        trained, tmp_path, base_config):
    run, store = trained
    _, reused = _cohort(tmp_path / "new", base_config, _rows(12, ["B", "C"], 1),
                        encoding_from=str(store))
    scores = predict_stores(run, {"clinical": reused})
    # NaN is not null in polars: a subject scored NaN has no input
    assert len(scores) == 12 and not scores["no_input"].any()
    assert scores["score_1"].is_not_nan().all()
    from mmpipe.store import read_features

    f = read_features(reused)
    notes = dict(zip(f.subject_id, f.reason, strict=True))
    unseen = [s for s, r in notes.items() if "'C'" in r]
    assert len(unseen) == 6 and all("not seen when the encoding was fitted" in notes[s]
                                    for s in unseen)


def test_a_store_preprocessed_differently_is_refused_or_noted_by_what_differs(trained,
                                                                               tmp_path):
    """The model kept the training store's preprocessing as one hash, so another HU
    window, normalisation or prompt template was scored with a note only (it cannot be
    told from a new code version or a cohort's own median spacing): the model now keeps
    the settings, refuses those that change what an input becomes, and notes the rest."""
    import shutil

    import zarr

    from mmpipe.bench.bundle import load_bundle

    run, store = trained
    trained_record = load_bundle(run)["encodings"]["clinical"]["preprocessing"]
    assert trained_record["fields"] == FIELDS

    def copy_with(name, **attrs):
        copy = tmp_path / f"{name}.zarr"
        shutil.copytree(store, copy)
        group = zarr.open_group(str(copy), mode="r+")
        group.attrs.update(attrs)
        return copy

    # the hash alone moved (the reading code's key): scored, and said
    code = copy_with("code", preprocessing_hash="0" * 64)
    assert predict_stores(run, {"clinical": code})["notes"].unique().to_list() == [
        "clinical: inputs read by another version of mmpipe's reading code than the run's "
        "training inputs: the scores may shift"]
    # a tabular store's fields in another order: its feature names and encoding (the
    # signature) say its features are the same, so the order is no difference
    reordered = copy_with("fields", preprocessing_hash="1" * 64,
                          preprocessing={**trained_record, "fields": FIELDS[::-1]})
    assert predict_stores(run, {"clinical": reordered})["notes"].unique().to_list() == [""]
    # another transform is what each input becomes
    other = copy_with("transform", preprocessing_hash="2" * 64,
                      preprocessing={**trained_record, "transform": {"scale": 2}})
    with pytest.raises(StoreError, match=r"preprocessed differently .*transform\.scale: "
                                         r"trained on None, store has 2"):
        predict_stores(run, {"clinical": other})
    assert predict_stores(run, {"clinical": store})["notes"].unique().to_list() == [""]


def test_volume_and_prompt_preprocessing_refused_by_setting_and_noted_by_cohort():
    """Another HU window or resampled spacing is refused, naming it; a cohort's own series
    choice, QC gates and codes are scored with notes naming them; a setting only one
    version records is a note; a model saved before the record keeps the hash note."""
    from mmpipe.bench.predict import check_encoding

    record = {"dicom": {"series_select": "most_slices", "min_slices": 8, "code": "a"},
              "transform": {"hu_window": [-79, 304], "spacing": "median"},
              "median_spacing": [1.0, 0.8, 0.8]}
    sig = {"encoder_type": "med3d", "preprocessing_hash": "h", "preprocessing": record}

    def store(**changes):
        return {"encoder_type": "med3d", "preprocessing_hash": "other",
                "preprocessing": {**record, **changes}}

    with pytest.raises(StoreError, match=r"transform\.hu_window: trained on \[-79, 304\], "
                                         r"store has \[-1000, 1000\]"):
        check_encoding("ct", "ct.zarr", store(transform={"hu_window": [-1000, 1000],
                                                         "spacing": "median"}), sig)
    # resampled to another grid: the cohort's own median, which the message gives the
    # run's to set instead
    with pytest.raises(StoreError, match=r"transform\.spacing: trained on \[1\.0, 0\.8, "
                                         r"0\.8\], store has \[2\.5, 0\.7, 0\.7\].*"
                                         r"transform\.spacing: \[1\.0, 0\.8, 0\.8\] "
                                         r"resamples as the run's"):
        check_encoding("ct", "ct.zarr", store(median_spacing=[2.5, 0.7, 0.7]), sig)
    # ...and following it scores the store: the same grid, stated (it was refused as
    # 'median' against a list)
    explicit = store(transform={"hu_window": [-79, 304], "spacing": [1.0, 0.8, 0.8]})
    del explicit["preprocessing"]["median_spacing"]
    assert "reading code" in check_encoding("ct", "ct.zarr", explicit, sig)
    note = check_encoding("ct", "ct.zarr", store(
        dicom={"series_select": "description:(?i)venous", "min_slices": 8, "code": "a"}), sig)
    assert note == ("ct: inputs chosen or coded with other settings than the run's "
                    "(dicom.series_select: 'description:(?i)venous')")
    # the reading code's own key is no setting
    assert "reading code" in check_encoding(
        "ct", "ct.zarr", store(dicom={**record["dicom"], "code": "b"}), sig)
    # a transform setting one side leaves out is "none" there (most have no default):
    # a window, a crop or a mask on one side only is refused (it was a note)
    for changes in ({"transform": {"spacing": "median"}},
                    {"transform": {**record["transform"], "roi_crop": {"margin": 4}}},
                    {"mask": {"from": "totalsegmentator", "roi_subset": ["kidney_left"]}}):
        with pytest.raises(StoreError, match="preprocessed differently"):
            check_encoding("ct", "ct.zarr", store(**changes), sig)
    with pytest.raises(StoreError, match=r"transform\.roi_crop\.margin: trained on 4, store "
                                         r"has None"):
        check_encoding("ct", "ct.zarr", store(), {**sig, "preprocessing": {
            **record, "transform": {**record["transform"], "roi_crop": {"margin": 4}}}})
    # ...but a step written off (false, null) is the step left out
    assert "reading code" in check_encoding(
        "ct", "ct.zarr", store(transform={**record["transform"], "mask_out": False,
                                          "roi_crop": None}), sig)
    # an empty crop block crops at margin 0 (masks.mask_steps): a crop, refused against
    # none (it read as a step left out), and the crop of `{margin: 0}`
    with pytest.raises(StoreError, match=r"transform\.roi_crop\.margin: trained on None, "
                                         r"store has 0"):
        check_encoding("ct", "ct.zarr", store(transform={**record["transform"],
                                                         "roi_crop": {}}), sig)
    cropped = {**sig, "preprocessing": {
        **record, "transform": {**record["transform"], "roi_crop": {"margin": 0}}}}
    assert "reading code" in check_encoding(
        "ct", "ct.zarr", store(transform={**record["transform"], "roi_crop": {}}), cropped)
    # a choosing setting a later version records: a note, not a refusal
    later = store(dicom={**record["dicom"], "max_gap_factor": 1.5})
    assert "dicom.max_gap_factor recorded for only one" in check_encoding(
        "ct", "ct.zarr", later, sig)
    older = {k: v for k, v in sig.items() if k != "preprocessing"}
    assert "preprocessing_hash differs" in check_encoding(
        "ct", "ct.zarr", store(transform={"hu_window": None}), older)
    # prompts: a cohort's own codes for the same words are a note, the template refused
    prompt = {"fields": ["sex"], "prompt": {"header": "Patient.", "phrases": {"sex": "{value}"},
                                            "value_maps": {"sex": {"M": "male"}}}, "code": "c"}
    text = {"encoder_type": "text", "preprocessing_hash": "p",
            "preprocessing": {"prompt": prompt, "transform": None}}

    def prompts(**changes):
        return {**text, "preprocessing_hash": "q",
                "preprocessing": {"prompt": {**prompt, "prompt": {**prompt["prompt"],
                                                                  **changes}},
                                  "transform": None}}

    assert "prompt.prompt.value_maps: {'sex': {'1': 'male'}}" in check_encoding(
        "clinical", "c.zarr", prompts(value_maps={"sex": {"1": "male"}}), text)
    with pytest.raises(StoreError, match=r"prompt\.prompt\.header: trained on 'Patient\.'"):
        check_encoding("clinical", "c.zarr", prompts(header="Case."), text)
    # the text of a blank is no setting where blanks are omitted, one where written
    assert "reading code" in check_encoding("clinical", "c.zarr",
                                            prompts(missing_text="n/a"), text)
    explicit = {**text, "preprocessing": {"prompt": {**prompt, "prompt": {
        **prompt["prompt"], "missing": "explicit", "missing_text": "unknown"}},
        "transform": None}}
    with pytest.raises(StoreError, match="prompt.prompt.missing_text: trained on 'unknown'"):
        check_encoding("clinical", "c.zarr",
                       prompts(missing="explicit", missing_text="n/a"), explicit)


def test_stores_of_two_cohorts_are_refused_together(trained, tmp_path):
    """Subject IDs such as DEMO-000 or 1..N recur across cohorts: stores of two were
    joined by ID into one subject without a word."""
    import shutil

    import zarr

    run, store = trained
    copy = tmp_path / "other.zarr"
    shutil.copytree(store, copy)
    zarr.open_group(str(copy), mode="r+").attrs["cohort"] = "another_cohort"
    from mmpipe.bench.predict import load_run, score_stores

    method, bundle = load_run(run)
    bundle = {**bundle, "modalities": ["clinical", "clinical2"],
              "shapes": {**bundle["shapes"], "clinical2": bundle["shapes"]["clinical"]}}
    with pytest.raises(StoreError, match="different cohorts .*'another_cohort'"):
        score_stores(method, bundle, {"clinical": store, "clinical2": copy}, "cpu")


def test_a_store_whose_embedding_settings_differ_is_refused(trained):
    """The text encoder's pooling, its length or projection, an image set's cap: a store
    made with other settings holds other features, and was scored without a word."""
    from mmpipe.bench.predict import check_encoding
    from mmpipe.store import FeatureStore

    _, store = trained
    assert FeatureStore(store).attrs["embedding_settings"] == {}  # tabular: its encoding signs
    trained_sig = {"encoder_type": "text", "embedding_settings": {"pooling": "cls",
                                                                  "max_length": 256}}
    other = {"encoder_type": "text", "embedding_settings": {"pooling": "mean",
                                                            "max_length": 256}}
    with pytest.raises(StoreError, match="embedding_settings: trained on"):
        check_encoding("clinical", "x.zarr", other, trained_sig)
    # with a projection and without: both record their settings, so the hash's absence is
    # a store made without the projection, not a hash left unrecorded (it was a note)
    projected = {**trained_sig, "weights_projection_sha256": "ab" * 32}
    with pytest.raises(StoreError, match="weights_projection_sha256: trained on 'abab"):
        check_encoding("clinical", "x.zarr", trained_sig, projected)
    with pytest.raises(StoreError, match="weights_projection_sha256: trained on None"):
        check_encoding("clinical", "x.zarr", projected, trained_sig)
    # a model saved before the settings were signed records neither: a note
    older = {k: v for k, v in projected.items() if k != "embedding_settings"}
    note = check_encoding("clinical", "x.zarr", trained_sig, older)
    assert "embedding_settings, weights_projection_sha256 unrecorded" in note
    assert check_encoding("clinical", "x.zarr", {**other, "embedding_settings": {
        "pooling": "cls", "max_length": 256}}, trained_sig) == ""
    # an image set's cap against none: null is "every image", not a default left unstated
    capped = {"encoder_type": "vgg11_images",
              "embedding_settings": {"pooling": None, "max_images": 8}}
    every = {"encoder_type": "vgg11_images",
             "embedding_settings": {"pooling": None, "max_images": None}}
    with pytest.raises(StoreError, match="embedding_settings: trained on"):
        check_encoding("histo", "x.zarr", every, capped)
    with pytest.raises(StoreError, match="embedding_settings: trained on"):
        check_encoding("histo", "x.zarr", capped, every)


def test_the_embedding_settings_are_a_types_own_minus_files_and_bags():
    from mmpipe.encoders.registry import get_encoder_type

    text = {"type": "text", "model": "biomedbert", "checkpoint": "/w/ckpt", "projection": "/p",
            "max_length": 256, "pooling": "cls", "normalize": True}
    assert get_encoder_type("text").embedding_settings(text) == {
        "model": "biomedbert", "max_length": 256, "pooling": "cls", "normalize": True}
    images = {"type": "vgg11_images", "weights": "/w", "keep_bag": True, "max_images": 8}
    assert get_encoder_type("vgg11_images").embedding_settings(images) == {
        "pooling": None, "max_images": 8}


def test_a_store_of_another_modality_is_scored_with_a_note(trained, tmp_path):
    """`--store ct=<the MRI store>`: same encoder, same signature, scored without a word.
    A modality the run does not read may be a new cohort's name for this one: a note (one
    the run reads is refused: tests/bench/test_run.py)."""
    import shutil

    import zarr

    run, store = trained
    copy = tmp_path / "mri.zarr"
    shutil.copytree(store, copy)
    zarr.open_group(str(copy), mode="r+").attrs["modality"] = "mri"
    notes = predict_stores(run, {"clinical": copy})["notes"].unique().to_list()
    assert len(notes) == 1 and "made for modality 'mri'" in notes[0]
    assert "clinical inputs" in notes[0]


def test_a_store_with_settings_the_run_did_not_record_is_scored_with_a_note(trained,
                                                                           tmp_path):
    """A model saved before the embedding settings were signed, or a setting stated on one
    side and left to its default on the other: scored, with a note, not refused."""
    import shutil

    import zarr

    run, store = trained
    copy = tmp_path / "stated.zarr"
    shutil.copytree(store, copy)
    zarr.open_group(str(copy), mode="r+").attrs["embedding_settings"] = {"max_length": 256}
    notes = predict_stores(run, {"clinical": copy})["notes"].unique().to_list()
    assert len(notes) == 1 and "embedding_settings unrecorded for the run" in notes[0]


def test_predict_scores_an_hgb_model_as_its_run_did_blanks_included(tmp_path, base_config):
    """hgb reads a tabular blank as NaN; ``mmpipe predict`` built its data without the
    stores' encodings, so a blank reached the trees as stage 1's filled value and the
    scores of subjects with blanks differed from the run's (by up to 1.0)."""
    import polars as pl

    rng = np.random.default_rng(0)
    rows = []
    for i in range(120):   # class 1 above 35; blank ages all of class 0
        age = int(20 + 60 * rng.random())
        rows.append({"id": f"p{i:03d}", "y": 0 if i % 4 == 0 else int(age > 35),
                     "age": None if i % 4 == 0 else age, "site": "AB"[i % 2]})
    layout, store = _cohort(tmp_path, base_config, rows)
    make_split(layout.root, "y", 0, (0.6, 0.2, 0.2), layout.split(0))
    make_mask(layout.root, "natural", 0.0, 0, layout.mask("natural", 0.0, 0))
    run = tmp_path / "run"
    run_experiment(layout.root, {"clinical": "tabular"}, "y", {"type": "hgb"},
                   layout.split(0), layout.mask("natural", 0.0, 0), run, seed=0,
                   normalize="none", meta={"cohort": "toy", "feature_set": "tab",
                                           "method": "hgb", "scenario": "natural",
                                           "rate": 0.0})
    ran = pl.read_parquet(run / "predictions.parquet").filter(
        pl.col("evaluation") == "scenario")
    scored = predict_stores(run, {"clinical": store}).join(ran, on="subject_id", suffix="_run")
    blank_ids = {row["id"] for row in rows if row["age"] is None}
    assert scored["subject_id"].is_in(list(blank_ids)).sum() >= 5
    np.testing.assert_allclose(scored["score_1"], scored["score_1_run"], atol=1e-5)


def test_a_store_or_method_of_another_code_version_is_scored_with_a_note(trained, tmp_path):
    """Each store records its encoder's code key and the packages it ran with, and a run
    its training code's key; `mmpipe predict` compared neither, so a store encoded by a
    newer mmpipe (a new foreground z-score), or a method whose forward pass changed with
    its weights' names and shapes kept, was scored without a word."""
    import shutil

    import zarr

    from mmpipe.params import method_code

    run, store = trained
    recorded = load_bundle(run)["encodings"]["clinical"]
    assert recorded["code_version"] and recorded["package_versions"]["numpy"]
    assert predict_stores(run, {"clinical": store})["notes"].unique().to_list() == [""]
    copy = tmp_path / "newer.zarr"
    shutil.copytree(store, copy)
    group = zarr.open_group(str(copy), mode="r+")
    group.attrs["code_version"] = "f" * 64
    group.attrs["package_versions"] = {**recorded["package_versions"], "numpy": "9.9.9"}
    (note,) = predict_stores(run, {"clinical": copy})["notes"].unique().to_list()
    assert note == (f"clinical: encoded by another version of mmpipe's clinical code (code key "
                    f"{recorded['code_version'][:12]} for the run's training store, "
                    f"{'f' * 12} for this one) and with other package versions than the "
                    f"run's training store (numpy {recorded['package_versions']['numpy']} -> "
                    "9.9.9): the scores may shift; encode the training cohort with this "
                    "version and retrain to compare like with like")
    # a build of the same release (torch's +cpu and +cu121), or a package one side lacks
    # (it made neither side's features), is no other version
    versions = recorded["package_versions"]
    group.attrs["code_version"] = recorded["code_version"]
    group.attrs["package_versions"] = {
        **versions, "torch": versions["torch"].split("+")[0] + "+cu121",
        **{name: "not installed" for name in versions if name != "torch"}}
    assert predict_stores(run, {"clinical": copy})["notes"].unique().to_list() == [""]
    # the method: a run of this code says nothing, one of other code says so
    bundle = load_bundle(run)
    for key, said in ((method_code("deepsets"), False), ("0" * 64, True)):
        other = tmp_path / f"run_{key[:4]}"
        other.mkdir()
        torch.save({**bundle, "meta": {**bundle["meta"], "code_version": key}},
                   other / "model.pt")
        (note,) = predict_stores(other, {"clinical": store})["notes"].unique().to_list()
        assert note.startswith("the run's method (deepsets) was trained by another version "
                               f"of mmpipe's code (code key {'0' * 12}") is said, note


def test_the_stores_of_the_cohort_the_run_trained_on_are_said_to_be_in_sample(trained):
    """Scoring the run's own cohort scored its training subjects in-sample without a
    word: their scores read like held-out ones."""
    run, store = trained
    bundle = load_bundle(run)
    import zarr

    cohort = zarr.open_group(str(store), mode="r").attrs["cohort"]
    assert bundle["meta"]["cohort"] != cohort
    assert predict_stores(run, {"clinical": store})["notes"].unique().to_list() == [""]
    own = run.parent / "own_cohort_run"
    own.mkdir(exist_ok=True)
    torch.save({**bundle, "meta": {**bundle["meta"], "cohort": cohort}}, own / "model.pt")
    (note,) = predict_stores(own, {"clinical": store})["notes"].unique().to_list()
    assert note == (f"the stores are of cohort {cohort!r}, which the run trained on: its "
                    "training and validation subjects are scored in-sample (read the run's "
                    "test split, predictions.parquet, for held-out scores)")
