"""Run flags: collapse to one class, first-epoch checkpoints, runs that could not train."""

from __future__ import annotations

import numpy as np

from mmpipe.bench.flags import FLAGS, run_flags


def _flags(**kw):
    args = {"trained": True, "val_predicted": np.array([0, 1, 1]),
            "test_predicted": np.array([0, 1, 0, 1]), "n_classes": 2,
            "best_epoch": {"train": 7}, "epochs": {"train": 20}}
    return run_flags(**{**args, **kw})


def test_a_healthy_run_has_no_flags():
    assert _flags() == []


def test_single_class_predictions_per_split():
    flags = _flags(test_predicted=np.zeros(26, int))
    assert [f["flag"] for f in flags] == ["single_class_test"]
    assert flags[0]["reason"] == "every test prediction (26 subjects) is class 0"
    both = _flags(test_predicted=np.full(5, 2), val_predicted=np.full(3, 2), n_classes=5)
    assert [f["flag"] for f in both] == ["single_class_test", "single_class_val"]
    assert "class 2" in both[1]["reason"]


def test_one_subject_is_not_a_collapse():
    assert _flags(test_predicted=np.array([1]), val_predicted=np.array([], int)) == []


def test_first_epoch_per_phase_only_when_more_were_run():
    flags = _flags(best_epoch={"pretrain": 1, "train": 1, "refit": 1},
                   epochs={"pretrain": 26, "train": 1, "refit": 10})
    assert [f["flag"] for f in flags] == ["first_epoch", "first_epoch"]
    assert flags[0]["reason"] == "phase 'pretrain' kept its epoch-1 checkpoint of 26 epochs"
    assert "'refit'" in flags[1]["reason"]
    # methods without epochs (gradient boosting) record none
    assert _flags(best_epoch={}, epochs={}) == []


def test_not_trained_is_the_only_flag_of_an_untrained_run():
    flags = _flags(trained=False, test_predicted=np.zeros(10, int), best_epoch={}, epochs={})
    assert [f["flag"] for f in flags] == ["not_trained"]
    assert all(f["flag"] in FLAGS and f["reason"] for f in
               _flags(test_predicted=np.zeros(4, int), best_epoch={"train": 1},
                      epochs={"train": 3}))


def test_cross_validation_flags_the_folds_that_kept_epoch_one():
    mixed = np.array([0, 1, 0, 1])
    flags = run_flags(trained=True, val_predicted=mixed, test_predicted=mixed, n_classes=2,
                      best_epoch={"train": [1, 7, 1]}, epochs={"train": 12})
    assert [f["flag"] for f in flags] == ["first_epoch"]
    assert "2 of 3 folds" in flags[0]["reason"]
    assert run_flags(trained=True, val_predicted=mixed, test_predicted=mixed, n_classes=2,
                     best_epoch={"train": [4, 7, 9]}, epochs={"train": 12}) == []


def test_a_phase_that_diverged_after_a_checkpoint_is_flagged_per_fit_and_per_fold():
    flags = _flags(diverged={"train": 9})
    assert [f["flag"] for f in flags] == ["diverged"]
    assert flags[0]["reason"] == ("phase 'train' diverged (a non-finite training loss or "
                                  "validation output, at epoch 9) and kept its checkpoint "
                                  "of an earlier epoch")
    folds = _flags(diverged={"train": [None, 12, 4]})
    assert "diverged on 2 of 3 folds" in folds[0]["reason"] and "epoch 12, 4" in folds[0]["reason"]


def test_early_stopping_on_a_validation_split_of_one_class_is_flagged():
    # the loss of one class kept the checkpoint most confident in it, with nothing said
    flags = _flags(judged_y=np.ones(18, int))
    assert flags == [{"flag": "one_class_validation",
                      "reason": "the 18 validation subjects it was judged on are all of "
                                "class 1: its early stopping could not tell the classes "
                                "apart"}]
    assert _flags(judged_y=np.array([0, 1, 1])) == []
    # a method without epochs stopped on nothing
    assert _flags(judged_y=np.ones(18, int), best_epoch={}, epochs={}) == []


def test_the_summary_has_words_for_every_flag():
    from mmpipe.report.summary import FLAG_WORDS

    assert set(FLAG_WORDS) == set(FLAGS)
