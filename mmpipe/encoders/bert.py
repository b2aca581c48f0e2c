"""BERT, as the text encoder runs it: the network in torch, the tokenizer in ``tokenizers``.

A Hugging Face BERT folder (``config.json``, ``model.safetensors`` or
``pytorch_model.bin``, ``tokenizer.json`` or ``vocab.txt``) is read without
``transformers``: importing it costs an encoding job about 3 s of start-up (it pulls in
its whole model zoo), for a network of a few dozen lines. The module names mirror
``transformers.BertModel`` (``embeddings``, ``encoder.layer.N.attention.self.query``, ...)
so the official weight files load strictly, key for key; ``tests/encoders/test_bert.py``
checks the outputs against ``transformers.BertModel`` and its fast tokenizer.

What a checkpoint may hold beyond the encoder is named, not guessed: the ``bert.``
prefix and the pre-training heads (``cls.*``) of a ``BertForMaskedLM`` /
``BertForPreTraining`` file (BiomedBERT ships one), the pooler (the text encoder pools
itself) and the ``position_ids`` buffer of older files. Every other key, and every
missing one, is a :class:`~mmpipe.errors.WeightsError` naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmpipe.errors import WeightsError

# the activations BERT checkpoints name in config.json (transformers' ACT2FN): exact GELU,
# and its tanh approximation under the two names transformers gives it
_ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
# keys a BERT checkpoint may hold that the encoder does not use (see the module docstring)
_UNUSED_PREFIXES = ("cls.", "pooler.")
_UNUSED_KEYS = ("embeddings.position_ids",)


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    gelu_approximate: str  # "none" (exact, erf) or "tanh"

    @classmethod
    def from_folder(cls, folder: Path) -> BertConfig:
        path = folder / "config.json"
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise WeightsError(f"{path}: cannot read the model configuration: {exc}") from exc
        if cfg.get("model_type") != "bert":
            raise WeightsError(f"{path}: model_type {cfg.get('model_type')!r}; the text encoder "
                               "runs BERT checkpoints (model_type 'bert')")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise WeightsError(f"{path}: position_embedding_type "
                               f"{cfg['position_embedding_type']!r} is not supported (absolute)")
        act = cfg.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS:
            raise WeightsError(f"{path}: hidden_act {act!r} is not one of {sorted(_ACTIVATIONS)}")
        try:
            return cls(vocab_size=int(cfg["vocab_size"]), hidden_size=int(cfg["hidden_size"]),
                       num_hidden_layers=int(cfg["num_hidden_layers"]),
                       num_attention_heads=int(cfg["num_attention_heads"]),
                       intermediate_size=int(cfg["intermediate_size"]),
                       max_position_embeddings=int(cfg["max_position_embeddings"]),
                       type_vocab_size=int(cfg.get("type_vocab_size", 2)),
                       layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
                       gelu_approximate=_ACTIVATIONS[act])
        except KeyError as exc:
            raise WeightsError(f"{path}: {exc.args[0]} missing from the model configuration") from exc


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # one segment: every token has token type 0, as the tokenizer gives a single text
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.token_type_embeddings.weight[0])
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        if c.hidden_size % c.num_attention_heads:
            raise WeightsError(f"hidden_size {c.hidden_size} is not a multiple of "
                               f"num_attention_heads {c.num_attention_heads}")
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        # keep [b, 1, 1, n]: padding keys are masked out, scaled by 1/sqrt(head dim)
        out = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)),
                                             heads(self.value(x)), attn_mask=keep,
                                             scale=1.0 / math.sqrt(d // self.heads))
        return out.transpose(1, 2).reshape(b, n, d)


class _DenseNorm(nn.Module):
    """``LayerNorm(dense(x) + residual)``: BertSelfOutput and BertOutput."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, keep), x)


class _Intermediate(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.approximate = c.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x), approximate=self.approximate)


class _Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, keep)
        return self.output(self.intermediate(a), a)


class _Encoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))


class Bert(nn.Module):
    """BERT's encoder stack: ``(input_ids, attention_mask) -> last hidden state``
    ``[b, n, hidden_size]`` (what ``BertModel(...).last_hidden_state`` returns; dropout is
    left out: the network is frozen)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, keep)
        return x


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        # a pickle: tensors only, nothing else is unpickled (no code from a model file)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read the weights: {exc}") from exc
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state_dict, found {type(obj).__name__}")
    return obj


def load_bert(folder: Path, weights: Path) -> Bert:
    """The BERT of ``folder`` with the weights of ``weights`` loaded strictly."""
    net = Bert(BertConfig.from_folder(folder))
    state = {}
    for key, value in _read_weights(weights).items():
        key = key.removeprefix("bert.")
        if key.startswith(_UNUSED_PREFIXES) or key in _UNUSED_KEYS:
            continue
        state[key] = value
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{weights}: not the weights of the BERT in {folder / 'config.json'}: "
                           f"{exc}") from exc
    return net.eval().requires_grad_(False)


class BertTokenizer:
    """WordPiece tokenisation of single texts: ``[CLS] text [SEP]``, truncated to
    ``max_length`` tokens as transformers' tokenizer truncates (the text's tokens cut, the
    closing ``[SEP]`` kept), padded to the longest text of the batch."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        # a fast tokenizer's full recipe (normaliser, pre-tokeniser, vocabulary, template),
        # else a slow tokenizer's vocabulary
        path = next((folder / n for n in ("tokenizer.json", "vocab.txt") if (folder / n).is_file()),
                    None)
        if path is None:
            raise WeightsError(f"{folder}: no tokenizer.json or vocab.txt")
        try:
            self._tok = (Tokenizer.from_file(str(path)) if path.name == "tokenizer.json"
                         else _from_vocab(folder))
        except WeightsError:
            raise
        except Exception as exc:
            raise WeightsError(f"{path}: cannot read the tokenizer: {exc}") from exc
        # the file may carry a fixed padding / truncation (all-MiniLM-L6-v2's pads to 128):
        # transformers' tokenizer ignores it per call, so does this one
        self._tok.no_truncation()
        self._tok.no_padding()
        ids = {t: self._tok.token_to_id(t) for t in ("[SEP]", "[PAD]")}
        if None in ids.values():
            raise WeightsError(f"{folder}: the tokenizer has no {[t for t, i in ids.items() if i is None]}")
        self.sep_id, self.pad_id = ids["[SEP]"], ids["[PAD]"]

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(input_ids, attention_mask, n_truncated)`` for ``texts``."""
        rows = [e.ids for e in self._tok.encode_batch(texts)]
        n_truncated = sum(len(r) > max_length for r in rows)
        rows = [r if len(r) <= max_length else [*r[:max_length - 1], self.sep_id] for r in rows]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        return ids, mask, n_truncated


def _from_vocab(folder: Path) -> Any:
    """A BERT WordPiece tokenizer from ``vocab.txt`` and ``tokenizer_config.json`` (a slow
    tokenizer's folder), built as transformers converts a slow BertTokenizer to a fast one."""
    from tokenizers.implementations import BertWordPieceTokenizer

    cfg_path = folder / "tokenizer_config.json"
    try:
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    except ValueError as exc:
        raise WeightsError(f"{cfg_path}: {exc}") from exc
    lowercase = bool(cfg.get("do_lower_case", True))
    return BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=lowercase,
                                  strip_accents=cfg.get("strip_accents"),
                                  handle_chinese_chars=bool(cfg.get("tokenize_chinese_chars", True)),
                                  clean_text=True)
