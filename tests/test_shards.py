import pytest

from mmpipe.shards import in_shard, safe_name, shard_of


def test_shards_partition_subjects_stably():
    ids = [f"P{i:04d}" for i in range(500)]
    parts = [in_shard(ids, k, 4) for k in range(4)]
    assert sorted(sum(parts, [])) == ids
    assert all(len(p) > 80 for p in parts)  # roughly balanced
    # adding subjects never moves existing ones
    assert in_shard(ids + ["new"], 2, 4)[: len(parts[2])] == parts[2]
    assert shard_of("P0001", 4) == shard_of("P0001", 4)


def test_safe_name_keeps_distinct_ids_distinct():
    assert safe_name("TCGA-AB-1234") == "TCGA-AB-1234"
    assert safe_name("a/b") != safe_name("a_b")
    assert "/" not in safe_name("../../etc")


def test_a_shard_is_read_only_with_the_settings_that_made_it(tmp_path):
    from mmpipe.errors import StoreError
    from mmpipe.shards import check_shard_settings, write_shard_settings

    made = {"tile_size": 256, "code": "abc"}
    write_shard_settings(tmp_path, made)
    check_shard_settings([tmp_path], dict(made), "tiling")
    with pytest.raises(StoreError, match=r"\(code: 'abc' there, 'abd' now\)"):
        check_shard_settings([tmp_path], {**made, "code": "abd"}, "tiling")
    (tmp_path / "settings.json").unlink()
    with pytest.raises(StoreError, match="records no tiling settings"):
        check_shard_settings([tmp_path], made, "tiling")
