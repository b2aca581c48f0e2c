"""A benchmark run end to end on a small synthetic cohort built through the real
stage-1 path (csv adapter → precomputed stores), and `mmpipe predict` on its model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest

from mmpipe.bench.bundle import load_bundle
from mmpipe.bench.predict import predict_stores
from mmpipe.bench.prepare import make_mask, make_split
from mmpipe.bench.run import run_cell, run_cells, run_experiment
from mmpipe.cohorts import build_manifest
from mmpipe.cohorts.benchmark_view import benchmark_view_digest
from mmpipe.config import load_config
from mmpipe.encode.run import encode_store
from mmpipe.errors import StoreError
from mmpipe.hashing import params_hash
from mmpipe.layout import CohortLayout, parse_cell
from mmpipe.params import encoder_params
from mmpipe.report.aggregate import collect_runs, summarise
from tests.conftest import REPO

MODALITIES = {"a": 6, "b": 4, "c": 5}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return _cohort(tmp_path_factory.mktemp("bench"))


def _cohort(root, constant_a0: bool = False):
    """80 subjects, label ``y``, modalities ``a`` (always there), ``b`` and ``c``; with
    ``constant_a0`` the first feature of ``a`` is 1 for every subject."""
    rng = np.random.default_rng(0)
    n = 80
    y = rng.integers(0, 2, n)
    rows = ["id,y," + ",".join(MODALITIES)]
    for i in range(n):
        cells = []
        for m, d in MODALITIES.items():
            if rng.random() < 0.3 and m != "a":   # natural missingness; "a" always there
                cells.append("")
                continue
            x = rng.normal(size=d) + 1.5 * y[i]
            if constant_a0 and m == "a":
                x[0] = 1.0
            np.save(root / f"{m}{i}.npy", x.astype(np.float32))
            cells.append(f"{m}{i}.npy")
        rows.append(f"s{i:03d},{y[i]}," + ",".join(cells))
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    cohort_cfg = {"adapter": "csv", "csv": str(root / "cohort.csv"), "subject_column": "id",
                  "labels": ["y"], "modalities": {m: {"kind": "features", "column": m,
                                                      "encoders": ["precomputed"]}
                                                  for m in MODALITIES}}
    cfg = load_config(REPO / "config.yaml")
    cfg["cohorts"] = {"toy": cohort_cfg}
    cohort_dir = root / "results" / "toy"
    build_manifest("toy", cohort_cfg, cohort_dir)
    for m in MODALITIES:
        encode_store(cohort_dir, m, encoder_params(cfg, "toy", m, "precomputed"),
                     cohort_dir / "features" / m / "precomputed.zarr", device="cpu")
    make_split(cohort_dir, "y", 0, (0.6, 0.1, 0.3), root / "split.parquet")
    make_mask(cohort_dir, "mcar", 0.4, 0, root / "mask.parquet")
    return root, cohort_dir


@pytest.mark.parametrize("method", [{"type": "deepsets", "max_epochs": 60, "lr": 1e-3},
                                    {"type": "hgb", "max_iter": 30}])
def test_run_writes_metrics_predictions_and_a_usable_model(cohort, method, tmp_path):
    root, cohort_dir = cohort
    feature_set = {m: "precomputed" for m in MODALITIES}
    meta = {"cohort": "toy", "feature_set": "all", "method": method["type"],
            "scenario": "mcar", "rate": 0.4}
    out = tmp_path / "run"
    metrics = run_experiment(cohort_dir, feature_set, "y", method, root / "split.parquet",
                             root / "mask.parquet", out, seed=0, meta=meta)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["n"] == metrics["n_test"] > 0
    assert saved["test"]["auc"] > 0.7          # the signal is strong: a run that learns nothing fails
    assert len(saved["subsets"]) == 7          # every non-empty subset of 3 modalities
    # each subset is scored on the test subjects given all of it (HAM table 2): "a+b"
    # mixed in subjects given "a" alone
    preds = pl.read_parquet(out / "predictions.parquet")
    for subset in saved["subsets"]:
        name = "+".join(subset["modalities"])
        scored = preds.filter(pl.col("evaluation") == name)
        assert set(scored["pattern"]) == {name}, (name, set(scored["pattern"]))
        assert subset["n"] == len(scored)
    assert saved["trainable_parameters"] > 0
    assert saved["split"] == {"source": "drawn", "fixed": []}  # the report reads it
    preds = pl.read_parquet(out / "predictions.parquet")
    test = preds.filter((pl.col("split") == "test") & (pl.col("evaluation") == "scenario"))
    assert len(test) == metrics["n_test"]
    np.testing.assert_allclose(test["score_0"] + test["score_1"], 1.0, rtol=1e-5)
    # the mask removed entries: some test patterns lack modalities
    assert (test["pattern"] != "a+b+c").any()
    # `mmpipe predict` on the saved model, with every store, scores like the run did
    scored = predict_stores(out, {m: cohort_dir / "features" / m / "precomputed.zarr"
                                  for m in MODALITIES})
    assert len(scored) == 80 and not scored["no_input"].any()
    # ...and accepts any subset of modalities, saying which it scored as absent (a
    # forgotten --store had read as a cohort without the modality, without a word)
    only_a = predict_stores(out, {"a": cohort_dir / "features" / "a" / "precomputed.zarr"})
    assert set(only_a["pattern"]) == {"a"}
    assert only_a["notes"].unique().to_list() == [
        "the stores are of cohort 'toy', which the run trained on: its training and "
        "validation subjects are scored in-sample (read the run's test split, "
        "predictions.parquet, for held-out scores); "
        "b, c: no store given, scored as absent for every subject"]
    # the run's own scores of the test subjects given exactly those inputs, to float
    # rounding (the counts alone passed with a model whose weights did not load)
    for subset, again in (("a+b+c", scored), ("a", only_a)):
        own = preds.filter((pl.col("split") == "test") & (pl.col("evaluation") == subset))
        assert len(own), subset
        mine = own.join(again, on="subject_id", suffix="_predict")
        assert len(mine) == len(own)
        np.testing.assert_allclose(mine["score_1_predict"], mine["score_1"], atol=1e-6)
    assert scored["notes"].unique().to_list() == [
        "the stores are of cohort 'toy', which the run trained on: its training and "
        "validation subjects are scored in-sample (read the run's test split, "
        "predictions.parquet, for held-out scores)"]
    # a store of another of the run's modalities given as this one (b's as a: the same
    # encoder, the same signature) was scored with a note; a damaged store is named
    with pytest.raises(StoreError, match=r"b/precomputed.zarr was made for modality 'b', "
                                         r"which the run also reads, and is given as 'a'"):
        predict_stores(out, {"a": cohort_dir / "features" / "b" / "precomputed.zarr"})
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(cohort_dir / "features" / "a" / "precomputed.zarr", damaged)
    chunk = next(p for p in sorted((damaged / "emb").rglob("*")) if p.is_file()
                 and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:20])
    with pytest.raises(StoreError, match=r"damaged.zarr: the a store cannot be read"):
        predict_stores(out, {"a": damaged})


def test_a_run_records_the_settings_its_method_derived(cohort, tmp_path):
    # LARGO's CP rank follows the (tuned) width: recorded as None, it said nothing of
    # the model that ran
    root, cohort_dir = cohort
    method = {"type": "largo", "max_epochs": 2, "hidden": 64}
    meta = {"cohort": "toy", "feature_set": "all", "method": "largo", "scenario": "mcar",
            "rate": 0.4}
    run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y", method,
                   root / "split.parquet", root / "mask.parquet", tmp_path / "run", seed=0,
                   meta=meta)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["hparams"]["rank"] is None
    assert isinstance(saved["derived_hparams"]["rank"], int) and saved["derived_hparams"][
        "rank"] > 0


def test_a_run_whose_refit_failed_keeps_its_trials_record(cohort, tmp_path, failing_refit):
    root, cohort_dir = cohort
    meta = {"cohort": "toy", "feature_set": "all", "method": "concat_zero",
            "scenario": "mcar", "rate": 0.4}
    run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y",
                   {"type": "concat_zero", "max_epochs": 2}, root / "split.parquet",
                   root / "mask.parquet", tmp_path / "run", seed=0, meta=meta,
                   selection={"strategy": "cv", "folds": 3, "final": "refit"},
                   tuning={"trials": 2})
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert not saved["trained"] and "the refit of the chosen trial" in saved["notes"][-1]
    assert len(saved["selection"]["trials"]) == 2


def test_a_damaged_store_is_named_when_training_reads_it(cohort, tmp_path):
    """A chunk cut short failed a training job deep in the codec, with a traceback that
    named neither the store nor the modality (`mmpipe predict` already named it)."""
    from mmpipe.bench.data import load_feature_set

    _, cohort_dir = cohort
    copy = tmp_path / "toy"
    shutil.copytree(cohort_dir, copy)
    store = copy / "features" / "b" / "precomputed.zarr"
    chunk = next(p for p in sorted((store / "emb").rglob("*")) if p.is_file()
                 and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:20])
    with pytest.raises(StoreError, match=r"b/precomputed.zarr: the b store cannot be read "
                                         r"\(.*\): a damaged copy; encode it again"):
        load_feature_set(copy, {m: "precomputed" for m in MODALITIES}, "y")


def test_split_and_mask_are_shared_and_reproducible(cohort, tmp_path):
    root, cohort_dir = cohort
    again = make_split(cohort_dir, "y", 0, (0.6, 0.1, 0.3), tmp_path / "s.parquet")
    assert again.equals(pl.read_parquet(root / "split.parquet"))
    other = make_split(cohort_dir, "y", 1, (0.6, 0.1, 0.3), tmp_path / "s1.parquet")
    assert not other.equals(again)


def test_a_run_that_cannot_train_is_recorded_not_lost(cohort, tmp_path):
    """Complete-case Standard with no complete subject: the run exists, says why, NaN metrics."""
    from mmpipe.bench.missingness import read_mask, write_mask

    root, cohort_dir = cohort
    ids, mask, modalities = read_mask(root / "mask.parquet")
    mask[:, modalities.index("c")] = False          # nobody keeps modality c
    write_mask(ids, mask, modalities, tmp_path / "no_c.parquet")
    out = tmp_path / "run"
    metrics = run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y",
                             {"type": "standard"}, root / "split.parquet",
                             tmp_path / "no_c.parquet", out, seed=0, tuning={"trials": 1},
                             meta={"cohort": "toy", "feature_set": "all", "method": "standard",
                                   "scenario": "mcar", "rate": 0.4})
    assert metrics["trained"] is False and metrics["n_fit"] is None  # no 0 in a mean
    assert np.isnan(metrics["test"]["auc"])
    assert any("not trained" in n for n in metrics["notes"])
    preds = pl.read_parquet(out / "predictions.parquet")
    assert preds["no_input"].all() and (out / "train.log").read_text().startswith("not trained")


def _mask_out(cohort, part: str, label_value: int, out):
    """The cohort's mask with every modality taken from the ``part`` subjects of label
    ``label_value``, written to ``out``."""
    from mmpipe.bench.missingness import read_mask, write_mask
    from mmpipe.bench.splits import read_split
    from mmpipe.cohorts.manifest_files import read_manifest

    root, cohort_dir = cohort
    ids, mask, modalities = read_mask(root / "mask.parquet")
    split = dict(read_split(root / "split.parquet").select("subject_id", "split").iter_rows())
    label = dict(read_manifest(cohort_dir)[0].select("subject_id", "y").iter_rows())
    mask[[split[i] == part and label[i] == label_value for i in ids]] = False
    write_mask(ids, mask, modalities, out)
    return out


def test_a_run_early_stopped_on_a_validation_split_of_one_class_is_flagged(cohort, tmp_path):
    # no class-1 validation subject keeps an input: the loss of class 0 alone chose the
    # checkpoint, with a note on the labels only
    root, cohort_dir = cohort
    _mask_out(cohort, "val", 1, tmp_path / "one_class.parquet")
    metrics = run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y",
                             {"type": "deepsets", "max_epochs": 3}, root / "split.parquet",
                             tmp_path / "one_class.parquet", tmp_path / "run", seed=0,
                             meta={"cohort": "toy", "feature_set": "all",
                                   "method": "deepsets", "scenario": "mcar", "rate": 0.4})
    assert metrics["trained"]
    (flag,) = [f for f in metrics["flags"] if f["flag"] == "one_class_validation"]
    assert "are all of class 0" in flag["reason"]


@pytest.mark.parametrize("method", [{"type": "logreg"}, {"type": "hgb", "max_iter": 5},
                                    {"type": "deepsets", "max_epochs": 2}])
def test_a_training_part_of_one_class_is_not_trained_for_any_kind_of_method(cohort, tmp_path,
                                                                            method):
    """No class-1 training subject keeps an input: hgb fitted the one class and failed
    in predict_proba, logreg refused but its weights were saved, and either stopped
    the job (the cell's other seeds lost)."""
    root, cohort_dir = cohort
    _mask_out(cohort, "train", 1, tmp_path / "one_class.parquet")
    out = tmp_path / "run"
    metrics = run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y", method,
                             root / "split.parquet", tmp_path / "one_class.parquet", out,
                             seed=0, tuning={"trials": 1},
                             meta={"cohort": "toy", "feature_set": "all",
                                   "method": method["type"], "scenario": "mcar", "rate": 0.4})
    assert metrics["trained"] is False and np.isnan(metrics["test"]["auc"])
    assert any("need both classes" in n for n in metrics["notes"]), metrics["notes"]
    assert metrics["model"] is None and not (out / "model.pt").exists()


def _fail_run_seed_when(monkeypatch, predicate) -> None:
    """Make the seeds whose keyword arguments match ``predicate`` fail."""
    import mmpipe.bench.run as run_mod

    real = run_mod.run_seed

    def run_seed(*args, **kwargs):
        if predicate(kwargs):
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(run_mod, "run_seed", run_seed)


def _train(method: dict, seeds: list[int]) -> dict:
    """A training job's parameter set (mmpipe.params.train_params) for the toy cohort."""
    return {"method": method, "feature_set": {m: "precomputed" for m in MODALITIES},
            "label": "y", "normalize": "zscore", "evaluate_subsets": True, "seeds": seeds,
            "tuning": {"trials": 1}}


def _layout_with(cohort_dir, tmp_path, cells: dict[str, dict], seeds) -> CohortLayout:
    """A copy of the cohort's manifest and stores beside its own splits and masks."""
    import shutil

    root = tmp_path / "toy"
    shutil.copytree(cohort_dir, root)
    layout = CohortLayout(root)
    for seed in seeds:
        make_split(root, "y", seed, (0.6, 0.1, 0.3), layout.split(seed))
        for cell, options in cells.items():
            scenario, rate = parse_cell(cell)
            make_mask(root, scenario, rate, seed, layout.mask(scenario, rate, seed),
                      options=options, split_path=layout.split(seed))
    return layout


def test_a_cell_trains_every_seed_and_appears_whole_or_not_at_all(cohort, tmp_path,
                                                                    monkeypatch):
    root, cohort_dir = cohort
    layout = _layout_with(cohort_dir, tmp_path, {"testmiss-0.5": {"modality": "b"}}, (0, 1))
    train = {**_train({"type": "concat_zero", "max_epochs": 5}, [0, 1]), "code": "c" * 64}
    meta = {"cohort": "toy", "feature_set": "all", "method": "concat_zero"}
    cell = tmp_path / "cell"
    results = run_cell(layout, train, "testmiss", 0.5, cell, meta=meta)
    assert [r["seed"] for r in results] == [0, 1]
    assert sorted(p.name for p in cell.iterdir()) == ["seed0", "seed1"]
    # each run records the hash of the settings it was trained with, and what fit ran
    saved = json.loads((cell / "seed0" / "metrics.json").read_text())
    assert saved["params_hash"] == params_hash(train)
    # and its training code's key, which its model keeps for `mmpipe predict`
    assert saved["code_version"] == "c" * 64
    assert load_bundle(cell / "seed0")["meta"]["code_version"] == "c" * 64
    # ...and the manifest's view it read, which the report checks against the manifest
    assert saved["benchmark_view"] == benchmark_view_digest(layout.root, "y")
    assert saved["training"]["phases"][0]["max_epochs"] == 5
    assert saved["training"]["batch_size"] == results[0]["training"]["batch_size"]
    # the test-time scenario removed "b" from test subjects only
    preds = pl.read_parquet(cell / "seed0" / "predictions.parquet")
    scen = preds.filter(pl.col("evaluation") == "scenario")
    test = scen.filter(pl.col("split") == "test")
    assert (~test["pattern"].str.contains("b")).sum() >= 0.4 * len(test)

    # a failure in the second seed leaves no cell behind, not a cell with one seed
    _fail_run_seed_when(monkeypatch, lambda kwargs: kwargs["seed"] == 1)
    with pytest.raises(RuntimeError, match="boom"):
        run_cell(layout, train, "testmiss", 0.5, tmp_path / "cell2", meta=meta)
    assert not (tmp_path / "cell2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cell2")
                or "cell2" in p.name]


def test_a_method_job_trains_every_cell_and_appears_whole_or_not_at_all(cohort, tmp_path,
                                                                          monkeypatch):
    """`train_jobs: method`: the cells of one (feature set, method) in one directory, each
    run recording its own scenario and rate; a failing cell leaves nothing behind."""
    root, cohort_dir = cohort
    layout = _layout_with(cohort_dir, tmp_path, {"natural-0.0": {}, "mcar-0.4": {}}, (0,))
    train = _train({"type": "concat_zero", "max_epochs": 5}, [0])
    meta = {"cohort": "toy", "feature_set": "all", "method": "concat_zero"}
    out = tmp_path / "concat_zero"
    results = run_cells(layout, train, ["natural-0.0", "mcar-0.4"], out, meta=meta)
    assert list(results) == ["natural-0.0", "mcar-0.4"]
    assert sorted(p.name for p in out.iterdir()) == ["mcar-0.4", "natural-0.0"]
    for cell, (scenario, rate) in (("natural-0.0", ("natural", 0.0)),
                                   ("mcar-0.4", ("mcar", 0.4))):
        metrics = json.loads((out / cell / "seed0" / "metrics.json").read_text())
        assert (metrics["scenario"], metrics["rate"], metrics["seed"]) == (scenario, rate, 0)
    natural = pl.read_parquet(out / "natural-0.0" / "seed0" / "predictions.parquet")
    mcar = pl.read_parquet(out / "mcar-0.4" / "seed0" / "predictions.parquet")
    scenario_rows = [p.filter(pl.col("evaluation") == "scenario") for p in (natural, mcar)]
    assert scenario_rows[0]["pattern"].to_list() != scenario_rows[1]["pattern"].to_list()

    _fail_run_seed_when(monkeypatch, lambda kwargs: kwargs["meta"]["scenario"] == "mcar")
    with pytest.raises(RuntimeError, match="boom"):
        run_cells(layout, train, ["natural-0.0", "mcar-0.4"], tmp_path / "m2", meta=meta)
    assert not [p for p in tmp_path.iterdir() if "m2" in p.name]


@pytest.mark.parametrize("keep", ["all", "best", "none"])
def test_keep_models_keeps_every_seed_the_best_validation_seed_or_none(cohort, tmp_path, keep):
    root, cohort_dir = cohort
    layout = _layout_with(cohort_dir, tmp_path, {"natural-0.0": {}}, (0, 1, 2))
    train = {**_train({"type": "concat_zero", "max_epochs": 5}, [0, 1, 2]), "keep_models": keep}
    cell = tmp_path / "cell"
    results = run_cell(layout, train, "natural", 0.0, cell,
                       meta={"cohort": "toy", "feature_set": "all", "method": "concat_zero"})
    kept = sorted(p.parent.name for p in cell.glob("seed*/model.pt"))
    saved = {r["seed"]: json.loads((cell / f"seed{r['seed']}" / "metrics.json").read_text())
             for r in results}
    if keep == "all":
        assert kept == ["seed0", "seed1", "seed2"]
        assert all(m["model"] == "model.pt" for m in saved.values())
    elif keep == "none":
        assert kept == [] and all(m["model"] is None for m in saved.values())
    else:
        val_auc = {s: m["val"]["auc"] for s, m in saved.items()}
        best = max(sorted(val_auc), key=lambda s: val_auc[s])  # the lowest seed on a tie
        assert kept == [f"seed{best}"]
        assert {s: m["model"] for s, m in saved.items()} == {
            s: "model.pt" if s == best else None for s in saved}
        assert all(m["model_seed"] == best for m in saved.values())
        # the test split plays no part: a seed with a better test AUC is not kept for it
        assert saved[best]["val"]["auc"] == max(val_auc.values())


def test_cells_that_train_on_the_same_data_train_once(cohort, tmp_path, monkeypatch):
    """`testmiss` masks the test split only: in a method job its cell lends the natural
    cell's fit, with the metrics of a cell trained on its own; `mcar` trains its own."""
    import mmpipe.bench.run as run_mod

    root, cohort_dir = cohort
    cells = {"natural-0.0": {}, "testmiss-0.5": {"modality": "b"}, "mcar-0.4": {}}
    layout = _layout_with(cohort_dir, tmp_path, cells, (0, 1))
    train = _train({"type": "concat_zero", "max_epochs": 5}, [0, 1])
    meta = {"cohort": "toy", "feature_set": "all", "method": "concat_zero"}
    fitted = []
    real = run_mod.select_model
    monkeypatch.setattr(run_mod, "select_model",
                        lambda *a, **k: fitted.append(k["seed"]) or real(*a, **k))
    out = tmp_path / "concat_zero"
    results = run_cells(layout, train, list(cells), out, meta=meta)
    assert sorted(fitted) == [0, 0, 1, 1]  # natural and mcar, each seed; testmiss lends
    for r in results["testmiss-0.5"]:
        assert r["training_shared_with"] == "natural-0.0"
        assert any("trained once with cell natural-0.0" in n for n in r["notes"])
    assert all(r["training_shared_with"] is None
               for cell in ("natural-0.0", "mcar-0.4") for r in results[cell])

    alone = run_cell(layout, train, "testmiss", 0.5, tmp_path / "alone", meta=meta)
    assert len(fitted) == 6
    for shared, own in zip(results["testmiss-0.5"], alone, strict=True):
        assert shared["test"] == own["test"] and shared["val"] == own["val"]
        assert shared["subsets"] == own["subsets"] and shared["epochs"] == own["epochs"]
    for seed in (0, 1):
        a = pl.read_parquet(out / "testmiss-0.5" / f"seed{seed}" / "predictions.parquet")
        b = pl.read_parquet(tmp_path / "alone" / f"seed{seed}" / "predictions.parquet")
        assert a.equals(b)



def test_testmiss_keeps_a_subjects_only_modality_among_the_runs_and_mcar_does_not(tmp_path):
    """BD's protocol keeps the modality a test subject has alone; its mask judged "alone"
    over the cohort's modalities, so a subject with CT outside a slide+clinical run lost
    its clinical record there and was scored with the prior. MCAR applies as drawn: a
    run of fewer modalities must lose what the mask takes, like every run of the cell."""
    from mmpipe.bench.data import BenchData
    from mmpipe.bench.missingness import write_mask
    from mmpipe.bench.run import _apply_mask

    ids = np.array(["s0", "s1", "s2"])
    cohort_mask = np.array([[True, False, True],    # s0: lost b (clinical), kept c (CT)
                            [True, False, True],    # s1: lost b, has a too
                            [True, True, True]])
    path = write_mask(ids, cohort_mask, ["a", "b", "c"], tmp_path / "mask.parquet")
    present = np.array([[False, True], [True, True], [True, True]])   # run: a, b
    data = BenchData(subject_id=ids, y=np.zeros(3, dtype=np.int64),
                     x={"a": np.ones((3, 2), np.float32), "b": np.ones((3, 3), np.float32)},
                     present=present, modalities=["a", "b"], n_classes=2)
    masked, kept = _apply_mask(data, path, "testmiss")
    assert kept == 1 and masked.present.tolist() == [[False, True], [True, False],
                                                     [True, True]]
    masked, kept = _apply_mask(data, path, "mcar")
    assert kept == 0 and masked.present.tolist() == [[False, False], [True, False],
                                                     [True, True]]


def test_a_run_records_the_test_time_rate_its_own_feature_set_met(tmp_path):
    """The cell's mask says its rate over the cohort's modalities; a run that gives a
    subject its only modality back met a lower one, which the run now records."""
    from mmpipe.bench.data import BenchData
    from mmpipe.bench.missingness import read_removal_record, write_mask
    from mmpipe.bench.run import _apply_mask, _rate_on_feature_set

    ids = np.array(["s0", "s1", "s2", "s3"])
    cohort_mask = np.array([[True, False, True],    # s0: b taken, kept c outside the run
                            [True, False, True],    # s1: b taken, keeps a in the run
                            [True, True, True],     # s2: b kept
                            [True, False, True]])   # s3: not a test subject
    path = write_mask(ids, cohort_mask, ["a", "b", "c"], tmp_path / "mask.parquet",
                      record={"options": {"modality": "b"}})
    present = np.array([[False, True], [True, True], [True, True], [True, True]])
    data = BenchData(subject_id=ids, y=np.zeros(4, dtype=np.int64),
                     x={"a": np.ones((4, 2), np.float32), "b": np.ones((4, 3), np.float32)},
                     present=present, modalities=["a", "b"], n_classes=2)
    masked, _ = _apply_mask(data, path, "testmiss")
    test = {"train": np.array([3]), "val": np.array([], int), "test": np.array([0, 1, 2])}
    own = _rate_on_feature_set(data, masked, test, "testmiss", read_removal_record(path))
    assert own == {"rate": 1 / 3, "rate_of": 3}    # s1 of s0, s1, s2; s0 kept its only one
    only_a = BenchData(subject_id=ids, y=data.y, x={"a": data.x["a"]},
                       present=present[:, :1], modalities=["a"], n_classes=2)
    assert _rate_on_feature_set(only_a, only_a, test, "testmiss",
                                read_removal_record(path)) is None  # b is not in the run
    assert _rate_on_feature_set(data, masked, test, "natural", None) is None


def test_a_run_records_the_completeness_its_own_feature_set_met(tmp_path):
    """A completeness level is drawn over the scenario's modalities (the cohort's); a
    subject that lost a modality outside the run's feature set is complete in it, so an
    {a, b} run trained more complete than its cell says, and nothing recorded it."""
    from mmpipe.bench.data import BenchData
    from mmpipe.bench.missingness import read_removal_record, write_mask
    from mmpipe.bench.run import _apply_mask, _rate_on_feature_set

    ids = np.array([f"s{i}" for i in range(6)])
    cohort_mask = np.array([[True, True, True],     # kept complete
                            [True, True, False],    # lost c: complete in {a, b}
                            [True, False, True],    # lost b
                            [False, True, True],    # lost a
                            [True, True, False],    # lost c, but not a training subject
                            [True, True, True]])    # not complete by nature (b absent)
    path = write_mask(ids, cohort_mask, ["a", "b", "c"], tmp_path / "mask.parquet",
                      record={"options": {"modalities": None, "drop": "one"}})
    present = np.ones((6, 2), bool)
    present[5, 1] = False
    data = BenchData(subject_id=ids, y=np.zeros(6, dtype=np.int64),
                     x={"a": np.ones((6, 2), np.float32), "b": np.ones((6, 3), np.float32)},
                     present=present, modalities=["a", "b"], n_classes=2)
    masked, _ = _apply_mask(data, path, "completeness")
    idx = {"train": np.array([0, 1, 2, 3, 5]), "val": np.array([], int),
           "test": np.array([4])}
    own = _rate_on_feature_set(data, masked, idx, "completeness", read_removal_record(path))
    assert own == {"rate": 0.5, "rate_of": 4}       # s0 and s1 of s0..s3
    # a run holding one modality of a scenario over {b, c}: no level to meet
    record = {"options": {"modalities": ["b", "c"], "drop": "one"}}
    assert _rate_on_feature_set(data, masked, idx, "completeness", record) is None


def test_a_mask_from_another_build_names_its_file(tmp_path):
    """A mask without one of the run's subjects or modalities failed with a bare
    ``KeyError: 's2'`` / ``ValueError: 'b' is not in list``."""
    from mmpipe.bench.data import BenchData
    from mmpipe.bench.missingness import write_mask
    from mmpipe.bench.run import _apply_mask
    from mmpipe.errors import InputError

    ids = np.array(["s0", "s1", "s2"])
    data = BenchData(subject_id=ids, y=np.zeros(3, dtype=np.int64),
                     x={"a": np.ones((3, 2), np.float32), "b": np.ones((3, 3), np.float32)},
                     present=np.ones((3, 2), bool), modalities=["a", "b"], n_classes=2)
    short = write_mask(ids[:2], np.ones((2, 2), bool), ["a", "b"], tmp_path / "short.parquet")
    with pytest.raises(InputError, match=r"short\.parquet.*lacks 1 subject\(s\) \['s2'\]"):
        _apply_mask(data, short, "mcar")
    narrow = write_mask(ids, np.ones((3, 1), bool), ["a"], tmp_path / "narrow.parquet")
    with pytest.raises(InputError, match=r"narrow\.parquet: mask lacks modalities \['b'\]"):
        _apply_mask(data, narrow, "mcar")


def test_a_run_records_what_its_mask_removed(cohort, tmp_path):
    """An MCAR rate above what the cohort can lose while every subject keeps a modality
    was met as far as it could be, with a warning in the mask job's log only: the mask
    records what it removed from the labelled subjects, and each run of its cell carries
    that record to the report."""
    from mmpipe.bench.missingness import max_mcar_rate, read_removal_record

    root, cohort_dir = cohort
    natural = make_mask(cohort_dir, "natural", 0.0, 0, tmp_path / "natural.parquet")
    records = {}
    for rate in (0.4, 0.9):
        mask = make_mask(cohort_dir, "mcar", rate, 0, tmp_path / f"mask{rate}.parquet")
        record = read_removal_record(tmp_path / f"mask{rate}.parquet")
        assert record["present"] == natural.sum()
        assert record["removed"] == (natural & ~mask).sum()
        assert record["max_mcar_share"] == pytest.approx(max_mcar_rate(natural))
        assert (record["rate"], record["rate_of"]) == (record["share"], record["present"])
        meta = {"cohort": "toy", "feature_set": "a_only", "method": "logreg",
                "scenario": "mcar", "rate": rate}
        # a run of one modality carries its cell's record, not its own modality's share
        out = run_experiment(cohort_dir, {"a": "precomputed"}, "y", {"type": "logreg"},
                             root / "split.parquet", tmp_path / f"mask{rate}.parquet",
                             tmp_path / f"run{rate}", seed=0, meta=meta)
        assert out["scenario_mask"] == record
        # and its own: the share of its present entries of "a" the mask took
        kept_a = (natural & mask)[:, 0]
        assert out["scenario_feature_set"]["rate_of"] == natural[:, 0].sum()
        assert out["scenario_feature_set"]["rate"] == pytest.approx(
            1 - kept_a.sum() / natural[:, 0].sum())
        records[rate] = record
    assert records[0.4]["share"] == pytest.approx(0.4, abs=1 / records[0.4]["present"])
    assert records[0.9]["share"] == pytest.approx(records[0.9]["max_mcar_share"])
    assert records[0.9]["share"] < 0.7
    runs = collect_runs([tmp_path / f"run{r}" / "metrics.json" for r in (0.4, 0.9)])
    assert runs["mask_share"].to_list() == pytest.approx([records[r]["share"]
                                                          for r in (0.4, 0.9)])
    assert "mask_share_mean" not in summarise(runs).columns   # a cell's, not a method's
    assert runs["feature_set_rate_of"].to_list() == [natural[:, 0].sum()] * 2
    assert "feature_set_rate_mean" not in summarise(runs).columns


def test_every_feature_set_is_scored_on_the_same_test_subjects(cohort, tmp_path):
    """A subject without the feature set's modality was dropped before splitting, so a
    b-only run was scored on fewer test subjects than the a+b+c run the report pairs it
    with; now it is scored on all, those without b with the training prior."""
    root, cohort_dir = cohort
    make_mask(cohort_dir, "natural", 0.0, 0, tmp_path / "natural.parquet")
    tested = {}
    for name, feature_set in {"b_only": {"b": "precomputed"},
                              "all": {m: "precomputed" for m in MODALITIES}}.items():
        out = tmp_path / name
        run_experiment(cohort_dir, feature_set, "y", {"type": "logreg"},
                       root / "split.parquet", tmp_path / "natural.parquet", out, seed=0,
                       meta={"cohort": "toy", "feature_set": name, "method": "logreg",
                             "scenario": "natural", "rate": 0.0})
        preds = pl.read_parquet(out / "predictions.parquet").filter(
            (pl.col("split") == "test") & (pl.col("evaluation") == "scenario"))
        tested[name] = preds
    assert tested["b_only"]["subject_id"].to_list() == tested["all"]["subject_id"].to_list()
    no_b = tested["b_only"].filter(pl.col("no_input"))
    assert len(no_b) > 0 and set(no_b["pattern"]) == {""}
    assert not tested["all"]["no_input"].any()


def test_a_store_row_of_nan_or_inf_is_absent_in_training_and_in_predict(cohort, tmp_path,
                                                                        caplog):
    """Training read a present row of NaN or inf as absent with nothing said; `mmpipe
    predict` scored it as input (NaN as 0, inf as 3.4e38: a saturated score)."""
    import logging
    import shutil

    import zarr

    root, cohort_dir = cohort
    out = tmp_path / "run"
    run_experiment(cohort_dir, {"a": "precomputed"}, "y", {"type": "concat_zero",
                   "max_epochs": 2}, root / "split.parquet", root / "mask.parquet", out,
                   seed=0, tuning={"trials": 1},
                   meta={"cohort": "toy", "feature_set": "a", "method": "concat_zero",
                         "scenario": "mcar", "rate": 0.4})
    store = tmp_path / "a.zarr"
    shutil.copytree(cohort_dir / "features" / "a" / "precomputed.zarr", store)
    group = zarr.open_group(store, mode="r+")
    present = np.flatnonzero(group["present"][:])[:2]
    emb = group["emb"][:]
    emb[present[0]], emb[present[1]] = np.nan, np.inf
    group["emb"][:] = emb
    with caplog.at_level(logging.WARNING):
        scored = predict_stores(out, {"a": store})
    assert scored["no_input"].to_list()[present[0]] and scored["no_input"].to_list()[present[1]]
    assert scored["score_1"].is_nan().to_list()[present[1]]
    assert "2 present subject(s) with NaN or inf features, read as absent" in caplog.text
    # and in the scores' notes, which travel with the file
    ids = scored["subject_id"].to_list()
    assert (f"a: 2 present subject(s) with NaN or inf features in {store}, scored as "
            f"without it: {ids[present[0]]}, {ids[present[1]]}") in scored["notes"][0]


def _logreg_run(root, cohort_dir, modality: str, out, feature_set: str, **kw) -> dict:
    """A logreg run on ``modality``'s precomputed store of ``cohort_dir``, the cohort's
    split and MCAR 0.4 mask, into ``out``; its metrics."""
    return run_experiment(cohort_dir, {modality: "precomputed"}, "y", {"type": "logreg"},
                          root / "split.parquet", root / "mask.parquet", out, seed=0,
                          meta={"cohort": "toy", "feature_set": feature_set,
                                "method": "logreg", "scenario": "mcar", "rate": 0.4}, **kw)


def test_predict_refuses_a_store_whose_ids_were_lost(cohort, tmp_path):
    """A lost subject_id chunk reads every ID as '': a store of one new subject was
    scored under '', one of several refused as listing '' "more than once"."""
    import shutil

    root, cohort_dir = cohort
    out = tmp_path / "run"
    _logreg_run(root, cohort_dir, "a", out, "a")
    store = tmp_path / "a.zarr"
    shutil.copytree(cohort_dir / "features" / "a" / "precomputed.zarr", store)
    for chunk in (store / "subject_id").rglob("*"):
        if chunk.is_file() and chunk.name != "zarr.json":
            chunk.unlink()
    with pytest.raises(StoreError, match=r"\d+ subject\(s\) without an ID.*a damaged copy"):
        predict_stores(out, {"a": store})


def test_predict_says_why_a_run_has_no_model(tmp_path):
    """A run that did not train (cross-validation folds of one class) has no model.pt;
    the refusal pointed at benchmark.keep_models, which had nothing to do with it."""
    import json

    from mmpipe.bench.bundle import ModelBundleError

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({
        "flags": [{"flag": "not_trained", "reason": "training failed (NotTrainable)"}],
        "notes": ["not trained: every fold's training part holds one class; metrics are "
                  "NaN, predictions are the training prior"], "model": None}))
    with pytest.raises(ModelBundleError, match="this run has no model: not trained: every "
                       "fold's training part holds one class") as err:
        predict_stores(run, {"a": tmp_path / "a.zarr"})
    assert "keep_models" not in str(err.value)


def test_a_store_row_of_nan_read_as_absent_is_named_in_the_runs_notes(cohort, tmp_path):
    """A present row of NaN was read as absent with a log warning only: the run's record
    said nothing of the subjects whose input it had set aside."""
    import shutil

    import zarr

    root, cohort_dir = cohort
    copy = tmp_path / "cohort"
    shutil.copytree(cohort_dir, copy)
    group = zarr.open_group(copy / "features" / "a" / "precomputed.zarr", mode="r+")
    ids = group["subject_id"][:].tolist()
    row = int(np.flatnonzero(group["present"][:])[0])
    emb = group["emb"][:]
    emb[row] = np.nan
    group["emb"][:] = emb
    out = tmp_path / "run"
    metrics = _logreg_run(root, copy, "a", out, "a")
    assert any(note.startswith("a: 1 subject(s) the store holds as present have NaN or inf "
                               "features") and note.endswith(f"read as absent: {ids[row]}")
               for note in metrics["notes"]), metrics["notes"]


def test_training_subjects_left_without_input_are_counted(cohort, tmp_path):
    """Training and validation subjects with no modality of the run (none in the stores, or
    none left by a mask drawn on the manifest's presence) were left out without a word;
    only the test subjects were counted."""

    root, cohort_dir = cohort
    out = tmp_path / "b_only"
    _logreg_run(root, cohort_dir, "b", out, "b_only")
    notes = json.loads((out / "metrics.json").read_text())["notes"]
    counted = {}
    for part, scored in (("train", "left out of training"),
                         ("val", "scored with the training prior, as such test subjects are")):
        (note,) = [n for n in notes if n.split(" ", 2)[1:2] == [part]]
        n_none, rest = note.split(f" {part} subjects had no modality of this feature set "
                                  f"and were {scored} (")
        counted[part] = (int(n_none), int(rest.split(" ")[0]))
    # b is missing for about 30 % of subjects and the mask takes 40 % of what is left
    assert all(total > by_mask > 0 for total, by_mask in counted.values()), counted
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] + counted["train"][0] == 48  # the split's 60 % of 80


@pytest.mark.parametrize("selection", [None, {"strategy": "cv", "folds": 3}])
def test_validation_is_scored_on_every_subject_as_test_is(cohort, tmp_path, selection):
    """The validation score covered only the subjects with an input, where the test score
    covers every test subject (those without one at the training prior): a narrow feature
    set's validation score read an easier set than its test score, and the report's choice
    of the fusion by validation favoured it."""
    from mmpipe.bench.metrics import classification_metrics

    root, cohort_dir = cohort
    out = tmp_path / "b_only"
    extra = {} if selection is None else {"selection": selection}
    metrics = _logreg_run(root, cohort_dir, "b", out, "b_only", **extra)
    preds = pl.read_parquet(out / "predictions.parquet")
    split = pl.read_parquet(root / "split.parquet")
    for part in ("val", "test"):
        rows = preds.filter(pl.col("split") == part)
        if part == "test":  # the whole-set rows, not a modality subset's
            rows = rows.filter(pl.col("evaluation") == "scenario")
        expected = (split.filter(pl.col("split") == "test") if part == "test" else
                    split.filter(pl.col("split").is_in(
                        ["val"] if selection is None else ["train", "val"])))
        assert sorted(rows["subject_id"]) == sorted(expected["subject_id"]), part
        assert rows["no_input"].any(), part  # b is absent for some of them
        assert metrics[part]["n"] == len(rows)
        proba = rows.select(pl.col("^score_.*$")).to_numpy()
        again = classification_metrics(rows["label"].to_numpy(), proba)
        assert again["balanced_accuracy"] == pytest.approx(metrics[part]["balanced_accuracy"])
        assert again["auc"] == pytest.approx(metrics[part]["auc"])


@pytest.mark.parametrize("normalize", ["zscore", "none"])
def test_features_zeroed_as_constant_are_counted(tmp_path, normalize):
    """A feature constant over the training subjects is zeroed for every subject (its
    weight never trains); only a modality zeroed whole was said, and only in the log."""
    (tmp_path / "const").mkdir()
    root, cohort_dir = _cohort(tmp_path / "const", constant_a0=True)
    out = tmp_path / "run"
    metrics = run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y",
                             {"type": "logreg"}, root / "split.parquet", root / "mask.parquet",
                             out, seed=0, normalize=normalize,
                             meta={"cohort": "toy", "feature_set": "all", "method": "logreg",
                                   "scenario": "mcar", "rate": 0.4})
    zeroed = [n for n in metrics["notes"] if "zero for every subject" in n]
    assert zeroed == ([] if normalize == "none" else [
        "features constant over the subjects the normaliser was fitted on are zero for every "
        "subject (no weight trains on them): a 1 of 6"])


def test_a_label_without_a_subject_in_a_part_is_noted(cohort, tmp_path):
    """A label the validation split lacks (too rare for the split to give each part one,
    or taken by the mask) leaves its AUC NaN and early stopping blind; it was said only
    in the split job's log, if at all."""
    root, cohort_dir = cohort
    _mask_out(cohort, "val", 1, tmp_path / "no_val_1.parquet")
    metrics = run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y",
                             {"type": "logreg"}, root / "split.parquet",
                             tmp_path / "no_val_1.parquet", tmp_path / "run", seed=0,
                             meta={"cohort": "toy", "feature_set": "all", "method": "logreg",
                                   "scenario": "mcar", "rate": 0.4})
    assert [n for n in metrics["notes"] if n.startswith("no ")] == [
        "no validation subject has label 1"]


def _mask_parts(cohort, parts: tuple[str, ...], modalities: tuple[str, ...], out):
    """The cohort's mask with ``modalities`` taken from every subject of ``parts``."""
    from mmpipe.bench.missingness import read_mask, write_mask
    from mmpipe.bench.splits import read_split

    root, _ = cohort
    ids, mask, names = read_mask(root / "mask.parquet")
    split = dict(read_split(root / "split.parquet").select("subject_id", "split").iter_rows())
    rows = np.array([split[i] in parts for i in ids])
    for m in modalities:
        mask[rows, names.index(m)] = False
    write_mask(ids, mask, names, out)
    return out



def test_a_run_with_no_training_input_scores_the_training_label_prior(cohort, tmp_path):
    """No training subject keeps a modality: the prior of those with an input was empty,
    so every test subject was scored with zeros where its note promised the prior."""
    from mmpipe.bench.splits import read_split

    root, cohort_dir = cohort
    mask = _mask_parts(cohort, ("train",), tuple(MODALITIES), tmp_path / "no_train.parquet")
    out = tmp_path / "run"
    metrics = run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y",
                             {"type": "deepsets", "max_epochs": 2}, root / "split.parquet",
                             mask, out, seed=0, tuning={"trials": 1},
                             meta={"cohort": "toy", "feature_set": "all",
                                   "method": "deepsets", "scenario": "mcar", "rate": 0.4})
    assert metrics["trained"] is False
    split = read_split(root / "split.parquet")
    train_ids = set(split.filter(pl.col("split") == "train")["subject_id"])
    y = pl.read_csv(root / "cohort.csv").filter(pl.col("id").is_in(train_ids))["y"].to_numpy()
    prior = np.bincount(y, minlength=2) / len(y)
    preds = pl.read_parquet(out / "predictions.parquet").filter(pl.col("split") == "test")
    scores = preds.select("score_0", "score_1").to_numpy()
    np.testing.assert_allclose(scores, np.tile(prior, (len(scores), 1)), rtol=1e-6)

@pytest.mark.parametrize("normalize", ["zscore", "l2"])
def test_a_part_the_mask_empties_is_not_trained_or_pooled_under_cross_validation(
        cohort, tmp_path, normalize):
    """A validation split with no input left (a small cohort, a one-modality feature set,
    MCAR) crashed the whole job on a reshape of zero rows, losing every seed of the cell;
    under cross-validation, where validation is pooled with training, it is no loss."""
    root, cohort_dir = cohort
    mask = _mask_parts(cohort, ("val",), tuple(MODALITIES), tmp_path / "no_val.parquet")
    meta = {"cohort": "toy", "feature_set": "all", "method": "deepsets", "scenario": "mcar",
            "rate": 0.4}
    for method, selection, trained in (
            ({"type": "deepsets", "max_epochs": 2}, {"strategy": "validation"}, False),
            ({"type": "deepsets", "max_epochs": 2}, {"strategy": "cv", "folds": 3}, True),
            # a scikit-learn method stops on nothing: it trains without validation
            ({"type": "hgb", "max_iter": 5}, {"strategy": "validation"}, True),
            ({"type": "logreg"}, {"strategy": "validation"}, True)):
        out = tmp_path / f"{method['type']}_{selection['strategy']}"
        metrics = run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y",
                                 method, root / "split.parquet", mask, out, seed=0,
                                 normalize=normalize, selection=selection,
                                 tuning={"trials": 1}, meta=meta)
        assert metrics["trained"] is trained, (method, selection)
        if not trained:
            assert "not trained: no validation subject has an input" in " ".join(
                metrics["notes"])


@pytest.mark.parametrize("selection", [{"strategy": "validation"}, {"strategy": "cv",
                                                                    "folds": 3}])
def test_a_modality_no_training_subject_has_is_absent_for_every_subject(cohort, tmp_path,
                                                                         selection):
    """A modality that only validation and test subjects have (a cohort's test period
    that alone collected it) went, unscaled, through its encoder's untrained weights
    into their scores: the scores moved with that modality alone."""
    root, cohort_dir = cohort
    parts = ("train",) if selection["strategy"] == "validation" else ("train", "val")
    mask = _mask_parts(cohort, parts, ("c",), tmp_path / "no_train_c.parquet")
    out = tmp_path / "run"
    metrics = run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y",
                             {"type": "deepsets", "max_epochs": 5}, root / "split.parquet",
                             mask, out, seed=0, selection=selection, tuning={"trials": 1},
                             meta={"cohort": "toy", "feature_set": "all",
                                   "method": "deepsets", "scenario": "mcar", "rate": 0.4})
    assert metrics["trained"]
    assert any(n.startswith("no subject the model is fitted on has c: absent for every "
                            "subject") for n in metrics["notes"])
    stores = {m: cohort_dir / "features" / m / "precomputed.zarr" for m in MODALITIES}
    with_c = predict_stores(out, stores)
    without_c = predict_stores(out, {m: s for m, s in stores.items() if m != "c"})
    assert with_c["score_1"].to_list() == without_c["score_1"].to_list()
    # and says so: the store given was dropped without a word
    assert "c: no subject the run trained on had it, so the model has no weights for it " \
           "and its store is not read" in with_c["notes"][0]


def test_validation_subjects_only_an_unseen_modality_reaches_are_scored_at_the_prior(
        cohort, tmp_path):
    """A validation subject whose one modality no training subject has is left without
    input by the normaliser: scored at the training prior, as the test split's are, and
    said so (the note said "left out")."""
    root, cohort_dir = cohort
    mask = _mask_parts(cohort, ("train",), ("c",), tmp_path / "no_train_c.parquet")
    out = tmp_path / "run"
    metrics = run_experiment(cohort_dir, {"b": "precomputed", "c": "precomputed"}, "y",
                             {"type": "logreg"}, root / "split.parquet", mask, out, seed=0,
                             meta={"cohort": "toy", "feature_set": "bc", "method": "logreg",
                                   "scenario": "mcar", "rate": 0.4})
    (note,) = [n for n in metrics["notes"] if n.startswith("no subject the model is fitted")]
    lost = int(note.split("; ")[1].split(" ")[0])
    assert lost > 0 and note.endswith("validation subject(s) left without input were scored "
                                      "with the training prior"), note
    val = pl.read_parquet(out / "predictions.parquet").filter(pl.col("split") == "val")
    split = pl.read_parquet(root / "split.parquet").filter(pl.col("split") == "val")
    assert sorted(val["subject_id"]) == sorted(split["subject_id"])
    assert metrics["val"]["n"] == len(split) and val["no_input"].sum() >= lost


def test_an_untrained_cv_run_writes_its_validation_split_at_the_prior(cohort, tmp_path):
    """Under cross-validation, a run that could not train wrote the whole training part
    as its validation rows (split "val", evaluation "scenario")."""
    root, cohort_dir = cohort
    mask = _mask_parts(cohort, ("train", "val"), tuple(MODALITIES), tmp_path / "none.parquet")
    out = tmp_path / "run"
    metrics = run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y",
                             {"type": "deepsets", "max_epochs": 2}, root / "split.parquet",
                             mask, out, seed=0, selection={"strategy": "cv", "folds": 3},
                             meta={"cohort": "toy", "feature_set": "all",
                                   "method": "deepsets", "scenario": "mcar", "rate": 0.4})
    assert not metrics["trained"]
    val = pl.read_parquet(out / "predictions.parquet").filter(pl.col("split") == "val")
    split = pl.read_parquet(root / "split.parquet").filter(pl.col("split") == "val")
    assert sorted(val["subject_id"]) == sorted(split["subject_id"])
    assert metrics["val"]["n"] == len(split)


def test_cross_validation_folds_keep_the_split_files_groups(cohort, tmp_path, monkeypatch):
    """The split file's groups reach the folds of cross-validation (one patient's rows
    in training and held-out folds scored a trial on a patient it trained on), and the
    run says so."""
    import mmpipe.bench.selection as selection

    root, cohort_dir = cohort
    split = pl.read_parquet(root / "split.parquet")
    grouped = tmp_path / "split.parquet"
    split.with_columns(split_group=pl.Series([f"p{i // 2}" for i in range(split.height)])
                       ).write_parquet(grouped)
    seen = []
    real = selection._fit_cv

    def spy(*args, **kwargs):
        seen.append(args[7])  # split_groups
        return real(*args, **kwargs)

    monkeypatch.setattr(selection, "_fit_cv", spy)
    metrics = run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y",
                             {"type": "logreg"}, grouped, root / "mask.parquet",
                             tmp_path / "run", seed=0, selection={"strategy": "cv", "folds": 3},
                             tuning={"trials": 1},
                             meta={"cohort": "toy", "feature_set": "all", "method": "logreg",
                                   "scenario": "mcar", "rate": 0.4})
    assert metrics["trained"]
    assert seen and seen[0] == dict(zip(split["subject_id"],
                                        [f"p{i // 2}" for i in range(split.height)],
                                        strict=True))
    assert any("cross-validation keeps each of the training part's" in n
               for n in metrics["notes"])


def test_keep_models_best_keeps_a_model_when_no_seed_has_a_validation_auc(tmp_path):
    """A validation split of one class has no AUC on any seed: every seed's model.pt was
    deleted though every seed trained, and `mmpipe predict` had nothing to score with."""
    from mmpipe.bench.run import _keep_best_model

    nan = float("nan")
    results = [{"seed": s, "trained": t, "val": {"auc": nan, "balanced_accuracy": b}}
               for s, t, b in ((0, True, 0.5), (1, True, 0.75), (2, False, nan))]
    for r in results:
        (tmp_path / f"seed{r['seed']}").mkdir()
        (tmp_path / f"seed{r['seed']}" / "model.pt").write_bytes(b"w")
    _keep_best_model(tmp_path, results)
    assert sorted(p.parent.name for p in tmp_path.glob("seed*/model.pt")) == ["seed1"]
    saved = json.loads((tmp_path / "seed0" / "metrics.json").read_text())
    assert (saved["model_seed"], saved["model_seed_by"]) == (1, "validation balanced_accuracy")
    for r in results:
        r["val"]["balanced_accuracy"] = nan
    (tmp_path / "seed0" / "model.pt").write_bytes(b"w")
    _keep_best_model(tmp_path, results)
    assert sorted(p.parent.name for p in tmp_path.glob("seed*/model.pt")) == ["seed0"]
    assert results[2]["model_seed_by"].startswith("the lowest trained seed")


def _clinical_cohort(root, moved_age: float | None = None):
    """60 subjects: a clinical table (age, stage) through the stage-1 tabular encoder and
    a feature modality ``a``; with ``moved_age`` subject s000's age is that."""
    rng = np.random.default_rng(3)
    n = 60
    y = rng.integers(0, 2, n)
    rows = ["id,y,age,stage,a"]
    for i in range(n):
        np.save(root / f"a{i}.npy", (rng.normal(size=4) + y[i]).astype(np.float32))
        age = round(50 + 8 * y[i] + rng.normal() * 6, 1)
        age = moved_age if i == 0 and moved_age is not None else age
        rows.append(f"s{i:03d},{y[i]},{age},{'I II III'.split()[i % 3]},a{i}.npy")
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    cohort_cfg = {"adapter": "csv", "csv": str(root / "cohort.csv"), "subject_column": "id",
                  "labels": ["y"],
                  "modalities": {"a": {"kind": "features", "column": "a",
                                       "encoders": ["precomputed"]},
                                 "clinical": {"kind": "table", "fields": ["age", "stage"],
                                              "encoders": ["tabular"]}}}
    cfg = load_config(REPO / "config.yaml")
    cfg["cohorts"] = {"toy": cohort_cfg}
    cfg["encoders"]["tabular"]["categorical"] = ["stage"]
    cohort_dir = root / "results" / "toy"
    build_manifest("toy", cohort_cfg, cohort_dir)
    for m, e in (("a", "precomputed"), ("clinical", "tabular")):
        encode_store(cohort_dir, m, encoder_params(cfg, "toy", m, e),
                     cohort_dir / "features" / m / f"{e}.zarr", device="cpu")
    make_split(cohort_dir, "y", 0, (0.6, 0.2, 0.2), root / "split.parquet")
    make_mask(cohort_dir, "natural", 0.0, 0, root / "mask.parquet")
    return cohort_dir


@pytest.mark.parametrize("method,final", [({"type": "deepsets", "max_epochs": 6}, "refit"),
                                          ({"type": "logreg"}, "ensemble")])
def test_l2_cross_validation_folds_fit_their_tabular_statistics_without_the_held_out_fold(
        tmp_path, monkeypatch, method, final):
    """Under `l2` a tabular store's fields are standardised from training rows, then each
    row scaled to unit norm. Under cv those statistics were the training part's for every
    fold: one held-out subject's age moved its fold-mates' features (by 0.87 on unit
    vectors) and their out-of-fold scores, which choose the trial. The folds now fit
    their own on the raw training folds; a fold ensemble's members read raw features,
    and `mmpipe predict` scores as the run did."""
    import mmpipe.bench.selection as selection_mod

    # folds dealt in the training part's order, which the out-of-fold rows keep
    monkeypatch.setattr(selection_mod, "stratified_folds",
                        lambda y, k, seed, groups=None: np.arange(len(y)) % k)
    feature_set = {"a": "precomputed", "clinical": "tabular"}
    scores = []
    for name, age in (("base", None), ("moved", 500.0)):
        root = tmp_path / name
        root.mkdir()
        cohort_dir = _clinical_cohort(root, age)
        out = root / "run"
        run_experiment(cohort_dir, feature_set, "y", method, root / "split.parquet",
                       root / "mask.parquet", out, seed=0, normalize="l2",
                       meta={"cohort": "toy", "feature_set": "fs", "method": method["type"],
                             "scenario": "natural", "rate": 0.0},
                       selection={"strategy": "cv", "folds": 3, "final": final},
                       tuning={"trials": 1})
        preds = pl.read_parquet(out / "predictions.parquet")
        oof = preds.filter(pl.col("evaluation") == "out_of_fold")
        scores.append(dict(zip(oof["subject_id"], oof["score_1"], strict=True)))
        order = oof["subject_id"].to_list()
        if final == "ensemble":
            test = preds.filter((pl.col("split") == "test") & (pl.col("evaluation") == "scenario"))
            scored = predict_stores(out, {m: cohort_dir / "features" / m / f"{e}.zarr"
                                          for m, e in feature_set.items()})
            again = dict(zip(scored["subject_id"], scored["score_1"], strict=True))
            np.testing.assert_allclose([again[s] for s in test["subject_id"]],
                                       test["score_1"].to_numpy(), rtol=0, atol=1e-5)
            # the members read raw features: the run's own normalisation is none, and
            # its test scores are the members' on raw features (not l2 then the folds')
            from mmpipe.bench.data import load_feature_set
            from mmpipe.bench.predict import load_run
            from mmpipe.bench.trainer import predict_proba

            model, bundle = load_run(out)
            assert bundle["normalizer"]["mode"] == "none"
            data, _ = load_feature_set(cohort_dir, feature_set, "y")
            rows = [list(data.subject_id).index(s) for s in test["subject_id"]]
            np.testing.assert_allclose(predict_proba(model, data.subset(rows))[:, 1],
                                       test["score_1"].to_numpy(), rtol=0, atol=1e-6)
    assert "s000" in order  # in the training part: its fold is its row's
    mates = [s for i, s in enumerate(order) if i % 3 == order.index("s000") % 3 and s != "s000"]
    assert len(mates) >= 10
    np.testing.assert_allclose([scores[1][s] for s in mates], [scores[0][s] for s in mates],
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("strategy", ["validation", "cv"])
def test_the_run_fits_its_normaliser_on_the_subjects_it_may_read(cohort, tmp_path, monkeypatch,
                                                                 strategy):
    """The training split under `validation`, the training part (train + val) under `cv`;
    never a test subject. (A test that fitted two normalisers on the same training rows
    could not fail: this one watches what the run hands to the normaliser.)"""
    from mmpipe.bench.data import Normalizer

    root, cohort_dir = cohort
    fitted = []
    real = Normalizer.fit

    def spy(self, data):
        fitted.append(set(data.subject_id.tolist()))
        return real(self, data)

    monkeypatch.setattr(Normalizer, "fit", spy)
    metrics = run_experiment(cohort_dir, {m: "precomputed" for m in MODALITIES}, "y",
                             {"type": "concat_zero", "max_epochs": 2}, root / "split.parquet",
                             root / "mask.parquet", tmp_path / "run", seed=0,
                             selection={"strategy": strategy, "folds": 3},
                             tuning={"trials": 1},
                             meta={"cohort": "toy", "feature_set": "all", "method": "concat_zero",
                                   "scenario": "mcar", "rate": 0.4})
    assert metrics["trained"]
    split = pl.read_parquet(root / "split.parquet")
    train = set(split.filter(pl.col("split") == "train")["subject_id"].to_list())
    val = set(split.filter(pl.col("split") == "val")["subject_id"].to_list())
    run_level = fitted[0]
    assert run_level <= (train if strategy == "validation" else train | val)
    assert not run_level & set(split.filter(pl.col("split") == "test")["subject_id"].to_list())
    assert len(run_level) > len(train) // 2
    # the folds' own normalisers read no subject outside the training part either
    assert all(f <= train | val for f in fitted)


@pytest.mark.parametrize("configured, slots, expected", [
    ("auto", 0, "cpu"), ("cuda", 0, "cpu"), ("cuda", 1, "cuda"), ("cuda:0", 1, "cuda:0"),
    ("cpu", 0, "cpu")])
def test_a_training_job_trains_on_cuda_only_in_a_gpu_slot_of_its_own(configured, slots,
                                                                      expected):
    """Under ``auto`` a training job holds no GPU slot and took the node's GPU anyway:
    eight of them beside an encoder on one workstation GPU."""
    from mmpipe.bench.run import training_device

    assert training_device(configured, slots) == expected


@pytest.mark.parametrize("resources, slots", [
    ({"gpu": 1}, 1), ({}, 0), ({"gpu": 0, "gres": "gpu:2"}, 2), ({"gres": "gpu:a100:1"}, 1),
    ({"gres": "gpu"}, 1), ({"gres": "tmpdisk:100"}, 0), ({"gres": "tmpdisk:1,gpu:1"}, 1)])
def test_a_gpu_held_as_a_gres_is_a_gpu_slot(resources, slots):
    # a site that takes GPUs only as a gres sets gpu 0 (the plugin refuses both): its
    # training jobs held a GPU and trained on the CPU
    from types import SimpleNamespace

    from mmpipe.bench.run import gpu_slots

    assert gpu_slots(SimpleNamespace(**resources)) == slots


def test_the_validation_collapse_flag_reads_every_validation_subject_as_the_test_flag_does(
        cohort, tmp_path):
    """The test flag read every test subject, those scored at the prior too; the
    validation flag read only those with an input, so a run whose validation predictions
    held both classes was flagged single_class_val."""
    root, cohort_dir = cohort
    meta = {"cohort": "toy", "feature_set": "b", "method": "concat_zero",
            "scenario": "natural", "rate": 0.0}
    mask = tmp_path / "natural.parquet"
    make_mask(cohort_dir, "natural", 0.0, 0, mask)
    split = {"val": [], "with_input": []}
    for seed in range(20):
        out = tmp_path / f"seed{seed}"
        metrics = run_experiment(cohort_dir, {"b": "precomputed"}, "y",
                                 {"type": "concat_zero", "max_epochs": 1, "lr": 1e-6},
                                 root / "split.parquet", mask, out, seed=seed, meta=meta,
                                 tuning={"trials": 1})
        val = pl.read_parquet(out / "predictions.parquet").filter(
            (pl.col("split") == "val") & (pl.col("evaluation") == "scenario"))
        flagged = "single_class_val" in {f["flag"] for f in metrics["flags"]}
        assert flagged == (val["predicted"].n_unique() == 1), (seed, metrics["flags"])
        split["val"].append(val["predicted"].n_unique())
        split["with_input"].append(val.filter(~pl.col("no_input"))["predicted"].n_unique())
    # the case that was flagged: one class on the subjects with input, two on all of them
    assert any(a == 2 and b == 1 for a, b in zip(split["val"], split["with_input"],
                                                 strict=True)), split
