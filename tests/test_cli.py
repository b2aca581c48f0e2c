"""The ``mmpipe`` commands: ``encode`` reads what the ``encode`` rule reads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from mmpipe import cli
from mmpipe.encode import run as encode_run
from mmpipe.errors import MmpipeError
from tests.conftest import REPO, mask_mri_t1_by_totalsegmentator


def _encode_without_encoding(cfg: dict, tmp_path, monkeypatch):
    """``cfg`` written with its results in ``tmp_path``, and ``encode_store`` recording
    its calls instead of encoding: (the config file, the calls)."""
    cfg["results"] = str(tmp_path / "results")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    calls = []
    monkeypatch.setattr(encode_run, "encode_store",
                        lambda *args, **kwargs: calls.append((args, kwargs)))
    # a command's own process blocks modules it never uses (pandas among them): not here,
    # in the test session's process
    monkeypatch.setattr(encode_run, "skip_unused_imports", lambda: None)
    # nor the command's thread count, which stayed 1 for every later test of the worker
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)
    return config, calls


def test_encode_passes_the_inputs_the_rule_gives(tmp_path, monkeypatch):
    """A modality masked by TotalSegmentator: without its masks every subject of the
    store was rejected ("no mask file"), and the complete store looked up to date."""
    cfg = mask_mri_t1_by_totalsegmentator(yaml.safe_load((REPO / "config.yaml").read_text()),
                                          tmp_path / "weights")
    config, calls = _encode_without_encoding(cfg, tmp_path, monkeypatch)
    # what the inputs were made with is checked below; none are built here
    monkeypatch.setattr(cli, "_check_inputs_made_for", lambda *args: None)
    for modality, encoder in (("mri_t1", "med3d_roi"), ("clinical", "text_minilm"),
                              ("mri_t1", "med3d_demo")):
        assert cli.main(["encode", "--config", str(config), "--cohort", "demo",
                         "--modality", modality, "--encoder", encoder]) == 0
    (_, masked), (_, text), (_, unmasked) = (kwargs for kwargs in calls)
    # an encoder that reads no mask is not given them: it rejected every subject without
    # one, and reran whenever the masks did
    assert unmasked["masks"] is None
    # one torch thread, as the rule runs (a store of the machine's every core differed
    # by float rounding from the workflow's), unless asked
    threads = []
    monkeypatch.setattr("torch.set_num_threads", threads.append)
    for extra in ([], ["--threads", "4"]):
        assert cli.main(["encode", "--config", str(config), "--cohort", "demo",
                         "--modality", "clinical", "--encoder", "text_minilm", *extra]) == 0
    assert threads == [1, 4]
    cohort = tmp_path / "results" / "demo"
    assert masked["masks"] == cohort / "preprocess" / "mri_t1" / "masks"
    assert masked["prompts"] is None and text["masks"] is None
    assert text["prompts"] == cohort / "preprocess" / "clinical" / "prompts.parquet"


def test_a_config_is_laid_over_config_yaml_as_snakemake_lays_it(monkeypatch, tmp_path, capsys):
    """The experiments are `--configfile` layers over config.yaml: the workflow ran them,
    while every command read the file alone and refused it ("'encoders' is a required
    property")."""
    monkeypatch.chdir(REPO)
    for experiment in sorted((REPO / "experiments").glob("*.yaml")):
        # as shipped, each asks only for the weights a user must bring
        code = cli.main(["check-config", "--config", str(experiment)])
        problems = [line.strip() for line in capsys.readouterr().err.splitlines()
                    if line.strip().startswith("config.")]
        assert code == 0 or (problems and all(
            re.match(r"config\.(encoders\.\w+|preprocess\.totalsegmentator)\.weights: ", p)
            for p in problems)), (experiment, problems)
        # given them, it passes
        given = tmp_path / f"weights_{experiment.name}"
        exp = yaml.safe_load(experiment.read_text())
        encoders = exp.setdefault("encoders", {})
        for name in re.findall(r"config\.encoders\.(\w+)\.weights", "\n".join(problems)):
            encoders[name] = {**encoders.get(name, {}), "allow_random_init": True}
        # a folder holding the models its masks need (an empty one is refused)
        from mmpipe.preprocess.segment import MODELS

        weights = tmp_path / "totalsegmentator"
        for model in {m for models in MODELS.values() for m in models}:
            (weights / f"Dataset{model}_TotalSegmentator").mkdir(parents=True, exist_ok=True)
        exp.setdefault("preprocess", {}).setdefault("totalsegmentator", {})["weights"] = \
            str(weights)
        given.write_text(yaml.safe_dump(exp))
        assert cli.main(["check-config", "--config", str(given)]) == 0, (
            experiment, capsys.readouterr().err)
    # a layer's value wins; the rest is config.yaml's
    layer = tmp_path / "layer.yaml"
    layer.write_text(yaml.safe_dump({"results": str(tmp_path / "elsewhere")}))
    cfg = cli._config(cli.build_parser().parse_args(["check-config", "--config", str(layer)]))
    assert cfg["results"] == str(tmp_path / "elsewhere") and "demo" in cfg["cohorts"]
    # ... and the message names both files read, where it named the layer alone
    capsys.readouterr()
    assert cli.main(["check-config", "--config", str(layer)]) == 0
    assert capsys.readouterr().out.startswith(f"config.yaml + {layer}: valid; ")
    # malformed YAML is a named error, not a traceback
    bad = tmp_path / "bad.yaml"
    bad.write_text("cohorts: [unclosed\n")
    assert cli.main(["check-config", "--config", str(bad)]) == 1
    assert f"{bad}: not valid YAML" in capsys.readouterr().err


def test_a_hand_run_manifest_does_not_replace_one_built_otherwise(tmp_path, monkeypatch,
                                                                    capsys):
    """A hand-run ``mmpipe manifest`` on another config replaced the workflow's manifest,
    which the checkpoint (its record unchanged) then took as its own and up to date."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["cohorts"]["demo"]["demo"].update({"n_subjects": 6, "volume_shape": [8, 16, 16],
                                           "slide_size": [256, 256]})
    mine, other = tmp_path / "mine.yaml", tmp_path / "other.yaml"
    mine.write_text(yaml.safe_dump(cfg))
    fields = cfg["cohorts"]["demo"]["modalities"]["clinical"]["fields"]
    cfg["cohorts"]["demo"]["modalities"]["clinical"]["fields"] = fields[:-1]
    cfg["cohorts"]["demo"]["modalities"]["clinical"]["prompt"]["phrases"].pop(fields[-1])
    other.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--config", str(mine)]) == 0
    manifest = tmp_path / "results/demo/manifest.parquet"
    assert cli.main(["manifest", "--config", str(mine), "--cohort", "demo"]) == 0
    built = manifest.read_bytes()
    assert cli.main(["manifest", "--config", str(mine), "--cohort", "demo"]) == 0
    assert "6 subjects, as it was" in capsys.readouterr().out
    assert cli.main(["manifest", "--config", str(other), "--cohort", "demo"]) == 1
    assert "(or its adapter QC) differs from what this config builds (6 subjects there, 6 " \
        "now)" in capsys.readouterr().err
    assert manifest.read_bytes() == built
    assert not list((tmp_path / "results/demo").glob(".manifest-*"))
    assert cli.main(["manifest", "--config", str(other), "--cohort", "demo", "--force"]) == 0
    assert manifest.read_bytes() != built
    # a manifest a killed build left (its JSON gone, or not a manifest's) cannot be compared:
    # a named error, not a traceback, and --force rebuilds it
    for broken in ("gone", "{}", "[]"):
        meta = tmp_path / "results/demo/manifest.json"
        meta.unlink() if broken == "gone" else meta.write_text(broken)
        assert cli.main(["manifest", "--config", str(mine), "--cohort", "demo"]) == 1
        assert "is there but cannot be read" in capsys.readouterr().err
        assert cli.main(["manifest", "--config", str(mine), "--cohort", "demo",
                         "--force"]) == 0
        assert manifest.read_bytes() == built
    # the same manifest without its adapter QC gets it back; another config's is refused
    qc = tmp_path / "results/demo/qc/adapter.parquet"
    qc.unlink()
    assert cli.main(["manifest", "--config", str(other), "--cohort", "demo"]) == 1
    assert cli.main(["manifest", "--config", str(mine), "--cohort", "demo"]) == 0
    assert qc.is_file() and manifest.read_bytes() == built
    # a --force build that fails on its last write (a full disk) leaves the manifest as it
    # was: built in place, the new JSON stood beside the old parquet and read as valid
    from mmpipe.cohorts import manifest_files

    meta = tmp_path / "results/demo/manifest.json"
    before = {p: p.read_bytes() for p in (manifest, meta, qc)}
    write = manifest_files.write_parquet

    def full_disk(frame, path, *args, **kwargs):
        if Path(path).name == "manifest.parquet":
            raise OSError(28, "No space left on device")
        return write(frame, path, *args, **kwargs)

    monkeypatch.setattr(manifest_files, "write_parquet", full_disk)
    assert cli.main(["manifest", "--config", str(other), "--cohort", "demo", "--force"]) == 1
    assert {p: p.read_bytes() for p in before} == before
    assert not list((tmp_path / "results/demo").glob(".manifest-*"))


def test_demo_writes_the_configs_demo_cohort_where_the_workflow_reads_it(tmp_path, monkeypatch,
                                                                         capsys):
    """``mmpipe demo`` with a config makes what the ``demo_cohort`` rule makes: the config's
    settings, into the cohort's raw folder; flags change them only into another folder
    (the workflow's record of its folder would disagree with the files)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["cohorts"]["demo"]["demo"].update({"n_subjects": 9, "seed": 5,
                                           "volume_shape": [8, 16, 16], "slide_size": [256, 256]})
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)  # no config.yaml here: only the given one
    assert cli.main(["demo", "--config", str(config)]) == 0
    made = json.loads((tmp_path / "results/demo/raw/summary.json").read_text())["params"]
    assert made["n_subjects"] == 9 and made["seed"] == 5 and made["volume_shape"] == [8, 16, 16]
    assert "cohorts.demo.demo of" in capsys.readouterr().err
    assert cli.main(["demo", "--config", str(config), "--seed", "6"]) == 1
    assert "give OUT" in capsys.readouterr().err
    # the workflow's own folder named as OUT is still the workflow's own folder
    assert cli.main(["demo", "--config", str(config), "--seed", "6",
                     str(tmp_path / "results/demo/raw")]) == 1
    assert "is the workflow's own folder" in capsys.readouterr().err
    assert json.loads((tmp_path / "results/demo/raw/summary.json").read_text()
                      )["params"]["seed"] == 5
    assert cli.main(["demo", "--config", str(config), "--seed", "6", "elsewhere"]) == 0
    made = json.loads((tmp_path / "elsewhere/summary.json").read_text())["params"]
    assert made["seed"] == 6 and made["n_subjects"] == 9
    # another config's demo block over the workflow's finished folder: replaced without a
    # word, and the workflow took the new files as its own job's
    cfg["cohorts"]["demo"]["demo"]["n_subjects"] = 10
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert cli.main(["demo", "--config", str(other)]) == 1
    assert ("holds the demo cohort of other settings (n_subjects 9 there, 10 in the config)"
            in capsys.readouterr().err)
    assert json.loads((tmp_path / "results/demo/raw/summary.json").read_text()
                      )["params"]["n_subjects"] == 9
    # nor a demo cohort's settings into another demo cohort's workflow folder
    cfg["cohorts"]["demo2"] = {**cfg["cohorts"]["demo"], "demo": {"n_subjects": 5, "seed": 3}}
    other.write_text(yaml.safe_dump(cfg))
    assert cli.main(["demo", "--config", str(other), str(tmp_path / "results/demo2/raw")]) == 1
    assert "the workflow's own folder of cohort 'demo2', and the settings are cohorts.demo.demo" in \
        capsys.readouterr().err
    assert cli.main(["demo", "--config", str(other), "--force"]) == 0
    assert json.loads((tmp_path / "results/demo/raw/summary.json").read_text()
                      )["params"]["n_subjects"] == 10
    cfg["cohorts"]["demo"]["demo"]["n_subjects"] = 9
    del cfg["cohorts"]["demo2"]
    assert cli.main(["demo", "--config", str(config), "--cohort", "mmist_ccrcc"]) == 1
    assert "not a demo cohort" in capsys.readouterr().err
    assert cli.main(["demo"]) == 1  # no config here, no OUT
    capsys.readouterr()
    # OUT given, a cohort named and no config: the message had said "give OUT"
    assert cli.main(["demo", "--cohort", "demo", "out"]) == 1
    assert "--cohort demo names a demo cohort of a config, and there is no config.yaml" in \
        capsys.readouterr().err
    (tmp_path / "a_file").write_text("")  # a traceback (FileExistsError) before
    assert cli.main(["demo", "--config", str(config), "--seed", "6", "a_file"]) == 1
    assert "a_file is a file: the demo cohort is a folder" in capsys.readouterr().err
    # the generator's refusal, and a folder given as the config, are named errors
    assert cli.main(["demo", "--n-subjects", "0", "zero"]) == 1
    assert "demo cohort: n_subjects must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "zero").exists()  # refused before the folder was made
    assert cli.main(["demo", "--seed", "-1", "negative"]) == 1  # numpy's words before
    assert "demo cohort: seed must be >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "negative").exists()
    assert cli.main(["check-config", "--config", str(tmp_path)]) == 1
    assert "cannot read the config" in capsys.readouterr().err
    # a project whose config has no demo cohort: OUT gets the generator's defaults
    del cfg["cohorts"]["demo"]
    cfg["run_cohorts"] = ["mmist_ccrcc"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["demo", "--n-subjects", "4", "plain"]) == 0
    assert "generator's defaults" in capsys.readouterr().err
    assert json.loads((tmp_path / "plain/summary.json").read_text())["params"]["n_subjects"] == 4


def test_encode_by_hand_refuses_inputs_or_a_store_of_other_settings(tmp_path, monkeypatch,
                                                                    capsys):
    """A hand-run encode read prompts made with another template (the store recorded the
    config's), and replaced a finished store made with other settings, which the
    workflow then took as its own and up to date."""
    import numpy as np
    import polars as pl

    from mmpipe.made_with import made_with
    from mmpipe.params import encoder_params, manifest_view, prompt_params
    from mmpipe.store import FeatureStoreWriter

    config, calls = _encode_without_encoding(yaml.safe_load((REPO / "config.yaml").read_text()),
                                             tmp_path, monkeypatch)
    prompts = tmp_path / "results/demo/preprocess/clinical/prompts.parquet"
    prompts.parent.mkdir(parents=True)
    table = pl.DataFrame({"subject_id": ["s1"], "prompt": ["Clinical record. Age 50."]})
    text = ["encode", "--config", str(config), "--cohort", "demo", "--modality", "clinical",
            "--encoder", "text_minilm"]
    ct = ["encode", "--config", str(config), "--cohort", "demo", "--modality", "ct",
          "--encoder", "med3d_demo"]
    manifest = tmp_path / "results/demo/manifest.parquet"
    manifest.write_bytes(b"PAR1 cut short")  # a polars traceback naming no file before
    (manifest.parent / "manifest.json").write_text("{}")
    assert cli.main(ct) == 1
    assert f"{manifest} cannot be read (" in capsys.readouterr().err
    for name in ("manifest.parquet", "manifest.json"):
        (manifest.parent / name).unlink()
    assert cli.main(ct) == 1  # read as a shard "made by an older mmpipe" before
    assert "ct/volumes/shard0 is not built (2 of 2 shards missing): run its preprocessing " \
        "first (snakemake " in capsys.readouterr().err
    assert cli.main(text) == 1  # a traceback (FileNotFoundError) before
    assert "prompts.parquet is not built: run the clinical_prompts rule" in \
        capsys.readouterr().err
    prompts.write_bytes(b"PAR1 cut short")  # a damaged copy: a polars traceback before
    assert cli.main(text) == 1
    assert "prompts.parquet cannot be read (" in capsys.readouterr().err
    table.write_parquet(prompts)  # made by hand, or by an older mmpipe: nothing recorded
    assert cli.main(text) == 1
    assert ("records nothing of what it was made with (an older mmpipe): rebuild it with "
            f"`snakemake --force {prompts}`") in capsys.readouterr().err
    loaded = cli._config(cli.build_parser().parse_args(["check-config", "--config",
                                                        str(config)]))
    view = manifest_view(loaded, "demo", "clinical")
    table.write_parquet(prompts, metadata=made_with({"header": "Another header."}, view))
    assert cli.main(text) == 1
    assert "prompts.parquet was made with other settings" in capsys.readouterr().err
    table.write_parquet(prompts, metadata=made_with(
        prompt_params(loaded, "demo", "clinical"), manifest_view(loaded, "demo", "clinical")))
    assert cli.main(text) == 0 and len(calls) == 1
    # a finished store of another transform is not replaced without --force
    params = encoder_params(loaded, "demo", "mri_t1", "med3d_demo")
    store = tmp_path / "results/demo/features/mri_t1/med3d_demo.zarr"
    other = {**params["config"], "transform": {**params["config"]["transform"],
                                               "resize": [4, 8, 8]}}
    with FeatureStoreWriter(store, ["s1"], (2,), {"encoder_config": other, "preprocessing": {
            "transform": other["transform"]}}) as w:
        w.write("s1", np.zeros(2))
        w.commit()
    image = ["encode", "--config", str(config), "--cohort", "demo", "--modality", "mri_t1",
             "--encoder", "med3d_demo"]
    assert cli.main(image) == 1
    assert "a finished store made with other encoder settings and transform" in \
        capsys.readouterr().err
    assert cli.main([*image, "--force"]) == 0 and len(calls) == 2
    # the same settings, the workflow's own store: replaced without a word; pretrained
    # weights where it was random-init: refused
    for random_init, refused in ((True, False), (False, True)):
        with FeatureStoreWriter(store, ["s1"], (2,), {
                "encoder_config": params["config"], "weights_random_init": random_init,
                "preprocessing": {"transform": params["config"]["transform"]}}) as w:
            w.write("s1", np.zeros(2))
            w.commit()
        assert cli.main(image) == int(refused)
        assert ("other weights" in capsys.readouterr().err) == refused


def test_demo_does_not_write_over_a_folder_of_other_files(tmp_path, monkeypatch, capsys):
    """The generator replaces clinical.csv and README.txt and removes files of its
    modality folders: a folder of the user's was overwritten, exit status 0."""
    monkeypatch.chdir(tmp_path)  # no config.yaml: the generator's defaults
    mine = tmp_path / "mydata"
    (mine / "ct").mkdir(parents=True)
    (mine / "clinical.csv").write_text("P1,50\n")
    (mine / "ct" / "P1.nii.gz").write_bytes(b"scan")
    assert cli.main(["demo", str(mine), "--n-subjects", "2"]) == 1
    assert "holds files and no demo cohort (summary.json)" in capsys.readouterr().err
    assert (mine / "clinical.csv").read_text() == "P1,50\n"
    assert (mine / "ct" / "P1.nii.gz").read_bytes() == b"scan"
    # a run killed before the generator's summary.json is the demo's to finish
    killed = tmp_path / "killed"
    assert cli.main(["demo", str(killed), "--n-subjects", "2"]) == 0
    (killed / "summary.json").unlink()  # as a killed run leaves it: the mark, no summary
    (killed / cli.DEMO_MARK).touch()
    assert cli.main(["demo", str(killed), "--n-subjects", "2"]) == 0
    assert (killed / "summary.json").is_file()
    # a finished or refused run leaves no mark: emptied, or never written, the folder is
    # the user's again
    for name in [p.name for p in killed.iterdir()]:
        shutil.rmtree(killed / name) if (killed / name).is_dir() else (killed / name).unlink()
    refused = tmp_path / "refused"
    assert cli.main(["demo", str(refused), "--n-subjects", "0"]) == 1
    # refused over a finished demo: the mark it had left claimed the folder once emptied
    over = tmp_path / "over"
    assert cli.main(["demo", str(over), "--n-subjects", "2"]) == 0
    assert cli.main(["demo", str(over), "--n-subjects", "0"]) == 1
    for name in [p.name for p in over.iterdir() if not p.name.startswith(".")]:  # rm over/*
        shutil.rmtree(over / name) if (over / name).is_dir() else (over / name).unlink()
    assert not refused.exists()  # refused before the folder was made
    refused.mkdir()
    for folder in (killed, refused, over):
        (folder / "clinical.csv").write_text("P1,50\n")
        assert cli.main(["demo", str(folder), "--n-subjects", "2"]) == 1, folder
        assert (folder / "clinical.csv").read_text() == "P1,50\n"


def test_a_path_that_cannot_be_written_is_an_error_not_a_traceback(tmp_path, monkeypatch,
                                                                   capsys):
    """An OSError ended in a traceback; under predict, after every subject was scored."""
    from mmpipe.bench import predict

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    assert cli.main(["demo", str(tmp_path / "a_file" / "sub"), "--n-subjects", "2"]) == 1
    assert "mmpipe: error: NotADirectoryError" in capsys.readouterr().err

    def no_scoring(*args, **kwargs):
        raise AssertionError("the run was loaded before the output's folder was checked")

    monkeypatch.setattr(predict, "load_run", no_scoring)
    (tmp_path / "run").mkdir()
    assert cli.main(["predict", str(tmp_path / "run"), "--store", "ct=x.zarr",
                     "--out", str(tmp_path / "a_file" / "p.parquet")]) == 1
    assert "mmpipe: error: FileExistsError" in capsys.readouterr().err
    # the run's own folder: it wrote over model.pt, or the predictions the report reads
    (tmp_path / "run" / "model.pt").write_bytes(b"weights")
    for run, out in (("run", "run/model.pt"), ("run", "run/sub/p.parquet"),
                     ("run/model.pt", "run/model.pt"),
                     ("run/model.pt", "run/predictions.parquet"),
                     ("run/model.pt", "run/metrics.json")):
        assert cli.main(["predict", str(tmp_path / run), "--store", "ct=x.zarr",
                         "--out", str(tmp_path / out)]) == 1
        assert "is inside the run's folder" in capsys.readouterr().err
    assert not (tmp_path / "run" / "sub").exists()
    # a model file given by itself: scores beside it are the user's to write (the
    # command goes on to load the run)
    with pytest.raises(AssertionError, match="the run was loaded before"):
        cli.main(["predict", str(tmp_path / "run" / "model.pt"), "--store", "ct=x.zarr",
                  "--out", str(tmp_path / "run" / "scores.parquet")])


def test_predict_refuses_scores_named_as_another_format(tmp_path, capsys):
    """`--out scores.csv` wrote a parquet file under a CSV's name, without a word."""
    (tmp_path / "run").mkdir()
    for name in ("scores.csv", "scores"):
        assert cli.main(["predict", str(tmp_path / "run"), "--store", "ct=x.zarr",
                         "--out", str(tmp_path / name)]) == 1
        assert "the scores are written as parquet" in capsys.readouterr().err
        assert not (tmp_path / name).exists()


def test_a_failed_predict_leaves_no_folder_behind(tmp_path, monkeypatch, capsys):
    """The output's folders were made before scoring and stayed, empty, when it failed."""
    from mmpipe.bench import predict

    def unreadable_run(*args, **kwargs):
        raise MmpipeError("not a run folder")

    monkeypatch.setattr(predict, "load_run", unreadable_run)
    (tmp_path / "kept").mkdir()
    (tmp_path / "run").mkdir()
    out = tmp_path / "kept" / "new" / "deeper" / "p.parquet"
    assert cli.main(["predict", str(tmp_path / "run"), "--store", "ct=x.zarr",
                     "--out", str(out)]) == 1
    assert "not a run folder" in capsys.readouterr().err
    assert list((tmp_path / "kept").iterdir()) == []


def _three_subject_store(path):
    """A store of subjects a and b (ones) and c (rejected)."""
    import numpy as np

    from mmpipe.store import FeatureStoreWriter

    with FeatureStoreWriter(path, ["a", "b", "c"], (4,), {"encoder": "e"}) as w:
        for sid in ("a", "b"):
            w.write(sid, np.ones(4, np.float32))
        w.mark("c", "rejected", "unreadable")
        w.commit()
    return path


@pytest.mark.parametrize("array", ["emb", "present", "status", "reason", "subject_id"])
def test_inspect_names_a_store_with_a_damaged_chunk(tmp_path, capsys, array):
    """A chunk cut short (an interrupted copy) of emb, subject_id or reason was summarised
    as a healthy store; of present or status, a decompressor's traceback named no store."""
    path = _three_subject_store(tmp_path / "s.zarr")
    assert cli.main(["inspect", str(path)]) in (0, None)
    assert "subjects  3, present 2" in capsys.readouterr().out
    chunk = next(p for p in (path / array).rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:5])
    assert cli.main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "a damaged copy" in err and "Traceback" not in err


@pytest.mark.parametrize("damage", ["lost_ids", "twice", "nan"])
def test_inspect_names_rows_stage2_cannot_use(tmp_path, capsys, damage):
    """A lost subject_id chunk reads as empty IDs (a one-subject store was then scored
    under ''), a copy can list one ID twice, and a present row of NaN or inf is read as
    absent by stage 2: inspect called each a healthy store."""
    import numpy as np
    import zarr

    path = _three_subject_store(tmp_path / "s.zarr")
    group = zarr.open_group(path, mode="r+")
    if damage == "lost_ids":
        for chunk in (path / "subject_id").rglob("*"):
            if chunk.is_file() and chunk.name != "zarr.json":
                chunk.unlink()
    elif damage == "twice":
        group["subject_id"][2] = "a"
    else:
        group["emb"][1] = np.full(4, np.nan, np.float32)
    assert cli.main(["inspect", str(path), "-v"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "a damaged copy" in err
    assert {"lost_ids": "3 subject(s) without an ID", "twice": "more than once: ['a']",
            "nan": "1 present subject(s) with NaN or inf features"}[damage] in err


@pytest.mark.parametrize("lost", ["bag/emb/c/1/0", "bag/offsets/c/0"])
def test_inspect_names_a_store_whose_bag_lost_a_chunk(tmp_path, capsys, lost):
    """A lost chunk of the bag read as zeros (an empty bag for offsets), and the store
    opened and was summarised as healthy; stage 2 reads no bag, a MIL reader would."""
    import numpy as np

    from mmpipe.store import FeatureStoreWriter

    path = tmp_path / "s.zarr"
    with FeatureStoreWriter(path, ["a", "b", "c"], (2,), {"encoder": "e"},
                            bag_item_shape=(2,), bag_coord_dim=2, bag_rows_per_chunk=2) as w:
        for k, sid in enumerate(("a", "b")):
            w.write(sid, np.ones(2, np.float32), bag=np.full((3, 2), k + 5, np.float32),
                    coords=np.arange(6).reshape(3, 2) + 10 * k)
        w.mark("c", "rejected", "unreadable")
        w.commit()
    assert cli.main(["inspect", str(path)]) in (0, None)
    assert "bag: True" in capsys.readouterr().out
    (path / lost).unlink()
    assert cli.main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "a damaged copy" in err and "bag" in err


def test_inspect_keeps_a_bag_whose_coordinates_are_all_zero(tmp_path, capsys):
    """VGG11's one slice a subject has coordinate 0, a chunk zarr never writes: the bag
    check called such a store damaged, and encoding it again wrote the same."""
    import numpy as np

    from mmpipe.store import FeatureStoreWriter

    path = tmp_path / "s.zarr"
    with FeatureStoreWriter(path, ["a", "b", "c"], (2,), {"encoder": "e"},
                            bag_item_shape=(2,), bag_coord_dim=1) as w:
        for sid in ("a", "b", "c"):
            w.write(sid, np.ones(2, np.float32), bag=np.ones((1, 2), np.float32),
                    coords=np.zeros((1, 1)))
        w.commit()
    assert cli.main(["inspect", str(path)]) in (0, None)
    assert "bag: True" in capsys.readouterr().out


def test_encode_by_hand_refuses_shards_older_than_their_files(tmp_path):
    """A shard records its settings, not its files: after a series was replaced (a
    regenerated demo), a hand-run encode read the old shards into a store, exit code 0."""
    import os

    import polars as pl

    from mmpipe.cohorts import read_manifest, write_manifest
    from mmpipe.cohorts.manifest import AdapterOutput, ModalitySpec, finalize_manifest
    from mmpipe.layout import SHARD_SETTINGS

    series = tmp_path / "raw" / "a"
    series.mkdir(parents=True)
    (series / "1.dcm").write_bytes(b"dicom")
    single = tmp_path / "raw" / "b.nii.gz"
    single.write_bytes(b"nifti")
    frame = pl.DataFrame({"subject_id": ["a", "b"], "y": [0, 1],
                          "ct_path": [str(series), str(single)]})
    out = tmp_path / "results" / "c"
    write_manifest(finalize_manifest("c", "csv", AdapterOutput(
        frame=frame, modalities={"ct": ModalitySpec("ct", "dicom")}, labels=["y"], qc=[],
        source=str(tmp_path / "raw"))), out)
    shards = [out / "preprocess" / "ct" / f"shard{i}" for i in range(2)]
    for shard in shards:
        shard.mkdir(parents=True)
        (shard / SHARD_SETTINGS).write_text("{}")
    past = (series.stat().st_mtime_ns // 10**9 - 60) * 10**9
    for path in (series, single):
        os.utime(path, ns=(past, past))
    cli.refuse_shards_older_than_their_files(read_manifest(out), "ct", shards)  # made after: fine
    for path in (single, series):
        os.utime(path, None)  # replaced now, after the shards
        # both shards before it (shard1 written on the tick of "now" would be no older)
        for shard in shards:
            os.utime(shard / SHARD_SETTINGS, ns=(past + 1, past + 1))
        with pytest.raises(MmpipeError, match=f"shard0 \\(and 1 more of 2 shards\\) was made "
                                              f"before {path} changed: run the preprocessing "
                                              "again .* or pass --force"):
            cli.refuse_shards_older_than_their_files(read_manifest(out), "ct", shards)
        os.utime(path, ns=(past, past))
    # dated in the future (a copy from a host whose clock runs ahead): said, as no rerun of
    # the shards can make them newer
    ahead = (series.stat().st_mtime_ns // 10**9 + 3600) * 10**9
    os.utime(series, ns=(ahead, ahead))
    with pytest.raises(MmpipeError, match="shard0 \\(and 1 more of 2 shards\\).*dated in the "
                                          "future"):
        cli.refuse_shards_older_than_their_files(read_manifest(out), "ct", shards)


def test_a_killed_manifest_build_leaves_a_folder_the_sweep_removes(tmp_path):
    """`mmpipe manifest` builds beside the cohort's folder: a ``tempfile`` folder a killed
    command left (``.manifest-x1y2``) was no debris to the sweep and stayed for good."""
    import os
    import shutil

    from mmpipe.fsutil import sweep_debris
    from mmpipe.layout import CohortLayout

    layout = CohortLayout.of(tmp_path, "c")
    layout.root.mkdir(parents=True)
    with cli._aside(layout) as tmp:
        assert tmp.parent == layout.root
        # the folder of a command killed while it built: this host's, its process gone
        left = tmp.with_name(tmp.name.replace(f"-{os.getpid()}", "-999999999"))
        shutil.copytree(tmp, left)
    assert not tmp.exists()
    assert sweep_debris(tmp_path) == [left] and not left.exists()


def test_encode_help_says_all_that_force_skips(capsys):
    """``--force`` also encodes from shards older than their inputs (the refusal's own
    message offers it), which ``encode --help`` did not say."""
    from mmpipe import cli

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["encode", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "replace a finished store made with other settings" in text
    assert "shards older than the files they were made from" in text
