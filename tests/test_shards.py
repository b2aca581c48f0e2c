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
