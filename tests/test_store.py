"""Feature store contract: atomic writes, provenance, refusal of incomplete stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from mmpipe.errors import StoreError
from mmpipe.store import FeatureStore, FeatureStoreWriter, read_features


def _write(path, ids=("a", "b", "c"), **kw):
    with FeatureStoreWriter(path, list(ids), (4,), {"encoder": "test"}, **kw) as w:
        w.write("a", np.arange(4))
        w.mark("b", "rejected", "corrupt series")
        w.write("c", np.ones(4))
        w.commit()


def test_roundtrip_keeps_order_status_and_nan_for_missing(tmp_path):
    path = tmp_path / "s.zarr"
    _write(path)
    f = read_features(path)
    assert f.subject_id.tolist() == ["a", "b", "c"]
    assert f.present.tolist() == [True, False, True]
    assert f.status.tolist() == ["ok", "rejected", "ok"]
    assert f.reason[1] == "corrupt series"
    np.testing.assert_array_equal(f.emb[0], np.arange(4))
    assert np.isnan(f.emb[1]).all()
    assert f.attrs["complete"] is True
    assert f.attrs["status_counts"] == {"ok": 2, "absent": 0, "rejected": 1}
    assert "torch" in f.attrs["package_versions"]
    # zarr v3 on disk
    assert zarr.open_group(str(path), mode="r").metadata.zarr_format == 3


def test_dask_view_matches_numpy(tmp_path):
    path = tmp_path / "s.zarr"
    _write(path)
    store = FeatureStore(path)
    np.testing.assert_array_equal(store.to_dask().compute(), store.to_numpy().emb)


def test_unwritten_subjects_are_absent_not_silently_present(tmp_path):
    path = tmp_path / "s.zarr"
    with FeatureStoreWriter(path, ["a", "b"], (2,), {}) as w:
        w.write("a", np.zeros(2))
        w.commit()
    f = read_features(path)
    assert f.status.tolist() == ["ok", "absent"]
    assert f.reason[1] == "not processed"


def test_bags_are_sliced_per_subject(tmp_path):
    path = tmp_path / "bag.zarr"
    with FeatureStoreWriter(path, ["a", "b", "c"], (3,), {}, bag_item_shape=(3,),
                            bag_coord_dim=2) as w:
        w.write("a", np.zeros(3), bag=np.zeros((2, 3)), coords=[[0, 0], [1, 1]])
        w.mark("b", "absent", "no slide")
        w.write("c", np.ones(3), bag=np.ones((4, 3)), coords=np.arange(8).reshape(4, 2))
        w.commit()
    store = FeatureStore(path)
    emb, coords = store.bag("c")
    assert emb.shape == (4, 3) and coords.tolist()[-1] == [6, 7]
    assert store.bag("b")[0].shape == (0, 3)


@pytest.mark.parametrize("bag, coords, says", [
    (np.full((2, 1), 7.0), [[0, 0], [1, 1]], r"bag items of shape \(1,\), the store holds \(3,\)"),
    (np.zeros((2, 3)), [[0, 0]], "bag coordinates missing or not 2 x 2"),
    (np.zeros((2, 3)), [0, 1], "bag coordinates missing or not 2 x 2"),
    (np.zeros((3, 3)), [[0, 1, 2], [3, 4, 5]], "bag coordinates missing or not 3 x 2"),
    (np.zeros((2, 3)), None, "bag coordinates missing"),
])
def test_a_bag_of_the_wrong_shape_is_refused_before_anything_is_appended(
        tmp_path, bag, coords, says):
    """Zarr broadcast a (2, 1) bag into items of (3,) and stored [[7, 7, 7], [7, 7, 7]];
    a bag appended before its coordinates were refused shifted every later bag."""
    path = tmp_path / "bag.zarr"
    with FeatureStoreWriter(path, ["a", "b"], (3,), {}, bag_item_shape=(3,),
                            bag_coord_dim=2) as w:
        with pytest.raises(StoreError, match=says):
            w.write("a", np.zeros(3), bag=bag, coords=coords)
        w.write("b", np.ones(3), bag=np.ones((1, 3)), coords=[[5, 6]])
        w.commit()
    emb, got = FeatureStore(path).bag("b")
    assert emb.tolist() == [[1, 1, 1]] and got.tolist() == [[5, 6]]


@pytest.mark.parametrize("bad", [np.zeros(3), np.array([0, 1, np.nan, 2])])
def test_wrong_shape_or_nonfinite_is_refused(tmp_path, bad):
    with FeatureStoreWriter(tmp_path / "s.zarr", ["a"], (4,), {}) as w, \
            pytest.raises(StoreError, match="subject 'a'"):
        w.write("a", bad)


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(StoreError, match="duplicate subject IDs"):
        FeatureStoreWriter(tmp_path / "s.zarr", ["a", "a"], (1,), {})


def test_exception_leaves_nothing_behind(tmp_path):
    path = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError), FeatureStoreWriter(path, ["a"], (1,), {}) as w:
        w.write("a", [1.0])
        raise RuntimeError("encoder crashed")
    assert not path.exists()
    assert not list(tmp_path.iterdir())


def test_store_without_complete_flag_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    _write(path)
    g = zarr.open_group(str(path), mode="r+")
    del g.attrs["complete"]
    with pytest.raises(StoreError, match="incomplete"):
        FeatureStore(path)




KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from mmpipe.store import FeatureStoreWriter
    w = FeatureStoreWriter(sys.argv[1], [f"s{i}" for i in range(100)], (8,), {"encoder": "x"})
    for i in range(100):
        w.write(f"s{i}", np.full(8, i))
        if i == 40:
            print("halfway", flush=True)
            time.sleep(60)
    w.commit()
""")


def test_killed_writer_leaves_no_store_that_opens(tmp_path):
    path = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "halfway"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not path.exists()
    with pytest.raises(StoreError):
        FeatureStore(path)
    leftovers = list(tmp_path.glob("killed.zarr.tmp-*"))
    assert leftovers, "the writer should have been killed while writing its temporary store"
    with pytest.raises(StoreError, match="incomplete"):
        FeatureStore(leftovers[0])
    # rerun: a complete store appears
    start = time.time()
    _write(path)
    assert FeatureStore(path).attrs["complete"] and time.time() - start < 30
    assert not list(tmp_path.glob("killed.zarr.tmp-*")), "debris of the killed run is cleaned"


def test_rows_and_bags_reach_zarr_a_chunk_at_a_time(tmp_path, monkeypatch):
    """Zarr re-encodes a whole chunk per write into it: writing row by row compressed a
    16 MB chunk once per subject. Each chunk must be written once, whatever the order of
    writes and marks, and read back the same."""
    writes = []
    original = zarr.Array.__setitem__

    def counting(self, key, value):
        writes.append(self.path)
        return original(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", counting)
    ids = [f"s{i}" for i in range(10)]
    rng = np.random.default_rng(0)
    rows = {s: rng.normal(size=3).astype(np.float32) for s in ids}
    bags = {s: rng.normal(size=(i % 4 + 1, 2)).astype(np.float32) for i, s in enumerate(ids)}
    path = tmp_path / "s.zarr"
    with FeatureStoreWriter(path, ids, (3,), {}, rows_per_chunk=4, bag_item_shape=(2,),
                            bag_coord_dim=1, bag_rows_per_chunk=4) as w:
        for s in ids:  # bags go in subject order; s3 and s7 are marked
            if s in ("s3", "s7"):
                w.mark(s, "rejected", "unreadable")
                continue
            w.write(s, rows[s], bag=bags[s], coords=np.arange(len(bags[s]))[:, None])
        w.commit()
    emb_writes = writes.count("emb")
    assert emb_writes == 3, f"{emb_writes} writes into 'emb' for 3 chunks"
    bag_rows = sum(len(bags[s]) for s in ids if s not in ("s3", "s7"))
    assert writes.count("bag/emb") <= -(-bag_rows // 4)
    f = read_features(path)
    for i, s in enumerate(ids):
        if s in ("s3", "s7"):
            assert np.isnan(f.emb[i]).all() and f.status[i] == "rejected"
        else:
            np.testing.assert_array_equal(f.emb[i], rows[s])
            emb, coords = FeatureStore(path).bag(s)
            np.testing.assert_array_equal(emb, bags[s])
            assert coords[:, 0].tolist() == list(range(len(bags[s])))


def test_out_of_order_writes_and_a_late_rewrite_land_in_their_rows(tmp_path):
    path = tmp_path / "s.zarr"
    ids = [f"s{i}" for i in range(7)]
    with FeatureStoreWriter(path, ids, (2,), {}, rows_per_chunk=3) as w:
        for i in (6, 0, 4, 2, 1, 5):
            w.write(ids[i], np.full(2, i))
        w.write("s0", np.full(2, 10))  # its chunk is already on disk
        w.commit()
    f = read_features(path)
    assert f.emb[:, 0].tolist()[:3] == [10, 1, 2]
    assert np.isnan(f.emb[3]).all() and f.status[3] == "absent"
    assert f.emb[4:, 0].tolist() == [4, 5, 6]


def test_a_kill_while_a_rerun_replaces_the_store_leaves_no_complete_store_without_data(
        tmp_path, monkeypatch):
    """The old store used to be removed in place before the new one was renamed in: a kill
    part-way through that removal (chunks gone, root ``zarr.json`` with ``complete`` not
    yet) left a store that opened as complete with NaN rows for present subjects."""
    import shutil

    path = tmp_path / "s.zarr"
    _write(path)
    real_rmtree = shutil.rmtree

    def killed_while_removing(target, *args, **kwargs):
        target = Path(target)
        if target == path or ".old.tmp-" in target.name:  # the old store, where it lies
            for chunk in [p for p in target.rglob("*") if p.is_file() and p.name != "zarr.json"]:
                chunk.unlink()  # rmtree reaches the chunks before the root zarr.json
            raise KeyboardInterrupt("killed")
        return real_rmtree(target, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_while_removing)
    with pytest.raises(KeyboardInterrupt):
        with FeatureStoreWriter(path, ["a", "b"], (4,), {"encoder": "test"}) as w:
            w.write("a", np.full(4, 2.0))
            w.write("b", np.full(4, 3.0))
            w.commit()
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    f = read_features(path)  # the new store, whole
    assert f.attrs["complete"] and f.present.all()
    np.testing.assert_array_equal(f.emb, [[2.0] * 4, [3.0] * 4])


def test_a_subject_marked_then_written_keeps_its_row(tmp_path):
    """mark() then write() of one subject, its chunk still open: the row went straight to
    the array, and the chunk's block, made later for its neighbours, covered it with NaN
    while the store said the subject was present."""
    path = tmp_path / "mw.zarr"
    with FeatureStoreWriter(path, ["a", "b", "c", "d"], (2,), {}, rows_per_chunk=4) as w:
        w.mark("a", "rejected", "first attempt failed")
        w.write("a", np.array([1.0, 2.0]))
        for s in "bcd":
            w.write(s, np.array([3.0, 4.0]))
        w.commit()
    f = read_features(path)
    assert f.present.tolist() == [True] * 4
    assert f.emb[0].tolist() == [1.0, 2.0]


def test_bag_chunks_are_sized_by_their_items(tmp_path):
    """4096 items a chunk whatever their size: VGG's [512, 7, 7] blocks made 411 MB
    chunks, read whole for one subject's bag."""
    import zarr

    for item, rows in (((1024,), 4096), ((512, 7, 7), 167)):
        path = tmp_path / f"b{len(item)}.zarr"
        with FeatureStoreWriter(path, ["a"], item, {}, bag_item_shape=item) as w:
            w.write("a", np.zeros(item, np.float32), bag=np.zeros((2, *item), np.float32))
            w.commit()
        assert zarr.open_group(str(path), mode="r")["bag/emb"].chunks[0] == rows


@pytest.mark.parametrize("damage", ["present chunk lost", "emb chunk lost",
                                    "emb of another length", "emb of another type"])
def test_a_store_whose_arrays_disagree_with_its_record_is_refused(tmp_path, damage):
    """A copy that lost a chunk (an interrupted cp -r or rsync) reads it as its fill
    value: a lost `present` chunk opened as a store whose modality no subject has, and
    stage 2 trained without it, silently; arrays of another length were paired up row
    by row."""
    import shutil

    import zarr

    path = tmp_path / "s.zarr"
    _write(path)
    assert FeatureStore(path).present.sum() > 0
    if damage == "present chunk lost":
        shutil.rmtree(path / "present" / "c")
    elif damage == "emb chunk lost":  # had opened, its subjects read as absent
        shutil.rmtree(path / "emb" / "c")
    else:
        g = zarr.open_group(str(path), mode="r+", zarr_format=3)
        emb = np.asarray(g["emb"][:])
        del g["emb"]
        if damage == "emb of another length":
            g.create_array("emb", data=np.concatenate([emb, emb]))
        else:
            g.create_array("emb", data=emb.astype(np.float64))
    with pytest.raises(StoreError, match="disagree with its 3 subjects or with what its "
                                         "writer recorded .* a damaged copy"):
        FeatureStore(path)


def test_a_store_that_lost_its_subject_id_chunk_is_refused(tmp_path):
    """A lost subject_id chunk reads every ID as '' (one chunk holds them all): the store
    opened, training refused it as listing '' "more than once", and a store of one new
    subject was scored under ''."""
    import numpy as np

    from mmpipe.errors import StoreError
    from mmpipe.store import FeatureStore, FeatureStoreWriter

    path = tmp_path / "s.zarr"
    with FeatureStoreWriter(path, ["a", "b"], (2,), {"encoder": "e"}) as w:
        w.write("a", np.ones(2))
        w.mark("b", "absent", "no file")
        w.commit()
    FeatureStore(path)
    for chunk in (path / "subject_id").rglob("*"):
        if chunk.is_file() and chunk.name != "zarr.json":
            chunk.unlink()
    with pytest.raises(StoreError, match=r"2 subject\(s\) without an ID.*a damaged copy"):
        FeatureStore(path)
    with pytest.raises(StoreError, match="an empty subject ID"):
        FeatureStoreWriter(tmp_path / "t.zarr", ["a", ""], (2,), {})
