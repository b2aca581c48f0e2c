"""UniLMMV-style masked attention: masking, modality dropout, invariance, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mmpipe.methods import method_class
from mmpipe.methods.attention import MaskedAttention

N_CLASSES = 3
SMALL = {"width": 16, "depth": 2, "heads": 4, "decoder_depth": 2}


def build(shapes, n_classes=N_CLASSES, **hp):
    torch.manual_seed(0)
    return MaskedAttention(list(shapes), shapes, n_classes, **{**SMALL, **hp}).eval()


def test_registry_and_official_defaults():
    assert method_class("unilmmv") is MaskedAttention
    d = MaskedAttention.defaults
    assert (d["width"], d["depth"], d["heads"], d["mlp_ratio"]) == (512, 6, 8, 4)
    assert (d["dropout"], d["bias"], d["modality_dropout"]) == (0.1, False, 0.5)
    assert d["decoder_depth"] == 6   # TransDecoder: attention.n_layers
    assert (d["optimizer"], d["weight_decay"], d["class_weights"]) == ("adamw", 1e-3, True)
    assert MaskedAttention.permutation_invariant


def test_bad_hparams_rejected(shapes):
    with pytest.raises(ValueError, match="dropout_scope"):
        MaskedAttention(list(shapes), shapes, 2, dropout_scope="token")
    with pytest.raises(ValueError, match="modality_dropout"):
        MaskedAttention(list(shapes), shapes, 2, modality_dropout=1.0)
    with pytest.raises(ValueError, match="divisible"):
        MaskedAttention(list(shapes), shapes, 2, width=10, heads=4)
    with pytest.raises(ValueError, match="unknown hyper-parameters"):
        MaskedAttention(list(shapes), shapes, 2, n_layers=2)


def test_output_shape_and_no_modality_row(shapes, batch, assert_no_modality_rows_identical):
    x, present, _ = batch
    model = build(shapes)
    out = model(x, present)
    assert out.shape == (len(present), N_CLASSES) and torch.isfinite(out).all()
    # no modality: the summary token attends to itself only, the same output for all
    out = assert_no_modality_rows_identical(model, x)
    with torch.no_grad():
        seq, only = model.summary, torch.ones(1, 1, dtype=torch.bool)
        for block in model.blocks:
            seq, _ = block(seq, only)
        alone = model.classify(model.norm(seq[:, 0]))
    torch.testing.assert_close(out[:1], alone)


def test_two_modalities_two_classes_and_flattening(make_batch):
    shapes = {"a": (2, 5), "b": (1, 7)}
    x, present, _ = make_batch(shapes, batch=8, n_classes=2)
    model = build(shapes, n_classes=2, head=[8])
    assert model(x, present).shape == (8, 2)
    flat = {m: v.reshape(len(v), -1) for m, v in x.items()}
    torch.testing.assert_close(model(x, present), model(flat, present))


@pytest.mark.parametrize("scope", ["subject", "batch"])
def test_masked_values_ignored(shapes, batch, scope, assert_masking):
    x, present, _ = batch
    model = build(shapes, dropout_scope=scope)
    assert_masking(model, x, present)


def test_permutation_invariant(shapes, batch, assert_permutation_invariant):
    x, present, _ = batch
    assert_permutation_invariant(build(shapes), x, present)


def test_modality_embeddings_are_keyed_by_name(shapes, batch):
    """Each modality has its own embedding, and it matters: swapping two modalities'
    embeddings changes the output where both are present."""
    x, present, _ = batch
    model = build(shapes)
    assert set(model.modality_embeddings) == set(shapes)
    ref = model(x, present)
    with torch.no_grad():
        ct = model.modality_embeddings["ct"].clone()
        model.modality_embeddings["ct"].copy_(model.modality_embeddings["mri"])
        model.modality_embeddings["mri"].copy_(ct)
    both = present[:, 0] & present[:, 1]
    out = model(x, present)
    assert not torch.allclose(out[both], ref[both])
    neither = ~present[:, 0] & ~present[:, 1]
    torch.testing.assert_close(out[neither], ref[neither])


def test_attention_weights_on_absent_modalities_are_exactly_zero(shapes, batch,
                                                                 assert_attention_masked):
    x, present, _ = batch
    model = build(shapes)
    _, maps = model.encode(x, present)
    tokens = torch.cat([torch.ones(len(present), 1, dtype=torch.bool), present], 1)
    assert len(maps) == 2
    for att in maps:                                    # [B, h, M+1, M+1]
        assert_attention_masked(att, tokens)
        torch.testing.assert_close(att[:, :, 0].sum(-1), torch.ones(len(present), 4))


def test_modality_dropout_off_in_eval_and_never_empties(shapes, batch):
    _, present, _ = batch
    model = build(shapes)
    assert torch.equal(model.modality_dropout(present), present)
    model.train()
    torch.manual_seed(0)
    dropped, total = 0, 0
    for _ in range(200):
        keep = model.modality_dropout(present)
        assert not (keep & ~present).any()            # only present modalities survive
        assert torch.equal(keep.any(1), present.any(1))  # no subject emptied
        dropped += int((present & ~keep).sum())
        total += int(present.sum())
    # p = 0.5 per present modality, minus the ones given back to emptied subjects
    assert 0.3 < dropped / total < 0.5
    single = present.sum(1) == 1                      # a lone modality is never dropped
    assert torch.equal(model.modality_dropout(present)[single], present[single])
    none = torch.zeros_like(present)
    assert not model.modality_dropout(none).any()
    off = build(shapes, modality_dropout=0.0).train()
    assert torch.equal(off.modality_dropout(present), present)


def test_batch_scope_drops_whole_modalities(shapes, batch):
    _, present, _ = batch
    model = build(shapes, dropout_scope="batch").train()
    torch.manual_seed(0)
    for _ in range(20):
        keep = model.modality_dropout(present)
        assert not (keep & ~present).any()
        for j in range(len(shapes)):                  # a column is kept whole or dropped
            col = keep[:, j][present[:, j]]
            assert col.all() or not col.any()


def test_dropout_randomness_does_not_depend_on_values(shapes, batch):
    x, present, _ = batch
    model = build(shapes).train()
    torch.manual_seed(3)
    a = model(x, present)
    torch.manual_seed(3)
    b = model({m: v * 2 for m, v in x.items()}, present)
    torch.manual_seed(3)
    c = model(x, present)
    torch.testing.assert_close(a, c)
    assert not torch.allclose(a, b)


def test_dropped_modality_behaves_as_absent(shapes, batch):
    x, present, _ = batch
    model = build(shapes, dropout=0.0).train()
    torch.manual_seed(5)
    keep = model.modality_dropout(present)
    torch.manual_seed(5)
    out = model(x, present)
    with torch.no_grad():
        expected = model.eval()(x, keep)
    torch.testing.assert_close(out, expected)


def test_the_decoder_is_the_official_one_at_one_time_point(shapes, batch):
    """``TransDecoder`` over one visit: position 0 added, each block's causal attention over
    the one token is ``c_proj(v)`` (softmax of one score), and ``fc`` reads the blocks'
    output before the final norm. Written out here with the official layers' arithmetic."""
    x, present, _ = batch
    model = build(shapes)
    with torch.no_grad():
        h = model.encode(x, present)[0] + model.decoder_position
        for block in model.decoder:
            attn = block.attn
            v = attn.c_attn(block.ln1(h)).split(h.shape[-1], dim=-1)[2]
            h = h + attn.c_proj(v)
            h = h + block.mlp(block.ln2(h))
        expected = F.linear(h, model.head[0].weight)  # fc: bias=False (attention.bias)
        torch.testing.assert_close(model(x, present), expected)
    assert model.head[0].bias is None and len(model.decoder) == 2
    # decoder_depth 0: the head on the summary token, as before this version
    flat = build(shapes, decoder_depth=0)
    assert flat.decoder_position is None and len(flat.decoder) == 0
    with torch.no_grad():
        torch.testing.assert_close(flat(x, present), flat.head(flat.encode(x, present)[0]))
    with pytest.raises(ValueError, match="decoder_depth"):
        build(shapes, decoder_depth=-1)


def test_gpt2_init():
    shapes = {"a": (8,), "b": (8,)}
    torch.manual_seed(0)
    model = MaskedAttention(list(shapes), shapes, 2, width=256, depth=4, heads=4)
    block = model.blocks[0]
    assert block.attn.c_attn.bias is None and block.ln1.bias is None  # bias=False
    assert abs(float(block.attn.c_attn.weight.detach().std()) - 0.02) < 2e-3
    for layer in (block.attn.c_proj, block.mlp[2]):
        assert abs(float(layer.weight.detach().std()) - 0.02 / np.sqrt(8)) < 1e-3
    # the decoder's blocks and fc as TransDecoder._init_weights (6 layers by default)
    block = model.decoder[0]
    assert abs(float(block.mlp[0].weight.detach().std()) - 0.02) < 2e-3
    assert abs(float(block.attn.c_proj.weight.detach().std()) - 0.02 / np.sqrt(12)) < 1e-3
    assert abs(float(model.head[0].weight.detach().std()) - 0.02) < 5e-3


def test_fit_with_the_shared_trainer(shapes, tmp_path, bench_draws, fit_and_score):
    train, val = bench_draws(shapes, n=90, n_classes=2, p_present=0.6, mean_scale=1.5,
                             noise=1.0, means_seed=10)
    torch.manual_seed(0)
    model = MaskedAttention(list(shapes), shapes, 2, width=32, depth=2, heads=4)
    cfg = {"optimizer": "adamw", "schedule": "cosine", "lr": 3e-3, "weight_decay": 1e-3,
           "class_weights": True, "sampler": "none", "max_epochs": 10, "patience": 10,
           "batch_size": 16, "noise_p": 0.0}
    assert fit_and_score(model, train, val, cfg, log_path=tmp_path / "train.log") > 0.8


def test_loss_is_cross_entropy_and_backward_works(shapes, batch):
    x, present, y = batch
    model = build(shapes).train()
    torch.manual_seed(0)
    loss, logits = model.loss(x, present, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    loss.backward()
    assert model.summary.grad is not None and torch.isfinite(model.summary.grad).all()


def test_report_notes_give_the_recipe_that_ran(shapes):
    """The notes said "lr 1e-4, batches of 64" whatever ran: a tuning trial's lr × 3 or
    the config's own settings contradicted the run's own note."""
    notes = " ".join(build(shapes, lr=3e-4, batch_size=32, max_epochs=60,
                           optimizer="adam", weight_decay=0.0).report_notes())
    assert "adam (wd 0), lr 0.0003, batches of 32, 60 epochs" in notes
    assert "official: AdamW (wd 1e-3)" in notes
