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
itself) and the ``position_ids`` buffer of older files; the ``LayerNorm.gamma`` /
``beta`` names of files written before transformers 2 are renamed, as transformers
renames them. Every other key, and every missing one, is a
:class:`~mmpipe.errors.WeightsError` naming the file.
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

from mmpipe.encoders.weights import for_strict_load
from mmpipe.errors import WeightsError, read_error_words

# the activations BERT checkpoints name in config.json (transformers' ACT2FN): exact GELU,
# and its tanh approximation under the two names transformers gives it
_ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
# keys a BERT checkpoint may hold that the encoder does not use (see the module docstring)
_UNUSED_PREFIXES = ("cls.", "pooler.")
_UNUSED_KEYS = ("embeddings.position_ids",)
_LEGACY_NAMES = ((".LayerNorm.gamma", ".LayerNorm.weight"), (".LayerNorm.beta", ".LayerNorm.bias"))


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read it: {exc}") from exc
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


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
        cfg = _read_json_object(path)
        if cfg.get("model_type") != "bert":
            raise WeightsError(f"{path}: model_type {cfg.get('model_type')!r}; the text encoder "
                               "runs BERT checkpoints (model_type 'bert')")
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise WeightsError(f"{path}: position_embedding_type "
                               f"{cfg['position_embedding_type']!r} is not supported (absolute)")
        act = cfg.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS:
            raise WeightsError(f"{path}: hidden_act {act!r} is not one of {sorted(_ACTIVATIONS)}")
        sizes = {}
        for key, default in (("vocab_size", None), ("hidden_size", None),
                             ("num_hidden_layers", None), ("num_attention_heads", None),
                             ("intermediate_size", None), ("max_position_embeddings", None),
                             ("type_vocab_size", 2)):
            value = cfg.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WeightsError(f"{path}: {key} must be a positive integer, found {value!r}"
                                   + (" (missing)" if key not in cfg else ""))
            sizes[key] = value
        if sizes["hidden_size"] % sizes["num_attention_heads"]:
            raise WeightsError(f"{path}: hidden_size {sizes['hidden_size']} is not a multiple of "
                               f"num_attention_heads {sizes['num_attention_heads']}")
        eps = cfg.get("layer_norm_eps", 1e-12)
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
            raise WeightsError(f"{path}: layer_norm_eps must be a positive number, found {eps!r}")
        return cls(**sizes, layer_norm_eps=float(eps), gelu_approximate=_ACTIVATIONS[act])


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
        raise WeightsError(f"{path}: cannot read the weights: {read_error_words(exc)}") from exc
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state_dict, found {type(obj).__name__}")
    return obj


def bert_key(key: str) -> str | None:
    """A checkpoint's key as :class:`Bert` names it, or None for a tensor it does not use
    (the pre-training heads, the pooler, the position ids)."""
    key = key.removeprefix("bert.")
    # the LayerNorm names of files written before transformers 2 (gamma, beta), which
    # transformers still renames when it loads them
    for old, new in _LEGACY_NAMES:
        if key.endswith(old):
            key = key[:-len(old)] + new
    return None if key.startswith(_UNUSED_PREFIXES) or key in _UNUSED_KEYS else key


def load_bert(folder: Path, weights: Path) -> Bert:
    """The BERT of ``folder`` with the weights of ``weights`` loaded strictly (built
    without its random init, which the load would overwrite: about 0.2 s of a MiniLM
    job's start-up)."""
    config = BertConfig.from_folder(folder)
    net = for_strict_load(lambda: Bert(config))
    state, named = {}, {}
    for key, value in _read_weights(weights).items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(f"{weights}: not a state_dict (entry {key!r} of type "
                               f"{type(value).__name__})")
        ours = bert_key(key)
        if ours is None:
            continue
        if ours in state:  # bert.X beside X: the later one was loaded, the other unread
            raise WeightsError(f"{weights}: {named[ours]!r} and {key!r} are both the "
                               f"network's {ours!r}; a file holds each tensor once")
        state[ours], named[ours] = value, key
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{weights}: not the weights of the BERT in {folder / 'config.json'}: "
                           f"{exc}") from exc
    return net.eval().requires_grad_(False)


class BertTokenizer:
    """WordPiece tokenisation of single texts: ``[CLS] text [SEP]``, truncated to
    ``max_length`` tokens as transformers' tokenizer truncates (the text's tokens cut, the
    closing ``[SEP]`` kept), padded to the longest text of the batch.

    From the folder's ``tokenizer.json`` (a fast tokenizer's full recipe: normaliser,
    pre-tokeniser, vocabulary, added tokens, template), else from ``vocab.txt`` and
    ``tokenizer_config.json`` (a slow tokenizer's folder, BiomedBERT's layout). What
    transformers would read differently is refused, not guessed: a ``tokenizer.json``
    whose lowercasing, accent stripping or CJK handling contradicts
    ``tokenizer_config.json`` (:func:`_check_normaliser`), or whose
    template does not frame a text as ``[CLS] ... [SEP]``; a slow tokenizer's tokens added
    beyond ``vocab.txt`` (save the tokenizer with transformers to get its
    ``tokenizer.json``)."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        path = next((folder / n for n in ("tokenizer.json", "vocab.txt") if (folder / n).is_file()),
                    None)
        if path is None:
            raise WeightsError(f"{folder}: no tokenizer.json or vocab.txt")
        config_path = folder / "tokenizer_config.json"
        config = _read_json_object(config_path) if config_path.is_file() else {}
        try:
            if path.name == "tokenizer.json":
                self._tok = Tokenizer.from_file(str(path))
                _check_normaliser(path, self._tok, config)
            else:
                self._tok = _from_vocab(path, config)
        except WeightsError:
            raise
        except Exception as exc:
            raise WeightsError(f"{path}: cannot read the tokenizer: {exc}") from exc
        # the file may carry a fixed padding / truncation (all-MiniLM-L6-v2's pads to 128):
        # transformers' tokenizer ignores it per call, so does this one
        self._tok.no_truncation()
        self._tok.no_padding()
        ids = {t: self._tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
        if None in ids.values():
            raise WeightsError(f"{path}: the tokenizer has no "
                               f"{[t for t, i in ids.items() if i is None]}")
        self.sep_id, self.pad_id = ids["[SEP]"], ids["[PAD]"]
        framed = self._tok.encode("").ids
        if framed != [ids["[CLS]"], ids["[SEP]"]]:
            raise WeightsError(f"{path}: the tokenizer frames an empty text as {framed}, not "
                               "[CLS] [SEP]; the text encoder needs BERT's single-text template")

    def __call__(self, texts: list[str], max_length: int
                 ) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """``(input_ids, attention_mask, truncated)`` for ``texts``; ``truncated[i]``: text
        ``i`` was longer than ``max_length`` tokens and lost its end."""
        rows = [e.ids for e in self._tok.encode_batch(texts)]
        truncated = [len(r) > max_length for r in rows]
        rows = [r if len(r) <= max_length else [*r[:max_length - 1], self.sep_id] for r in rows]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        return ids, mask, truncated


# tokenizer_config.json's key for each BertNormalizer setting, and the default
# transformers' BertTokenizer takes when the key is absent
_NORMALISER_KEYS = {"lowercase": ("do_lower_case", True), "strip_accents": ("strip_accents", None),
                    "handle_chinese_chars": ("tokenize_chinese_chars", True)}
# a BertNormalizer's own defaults, for a key its JSON leaves out
_BERT_NORMALISER_DEFAULTS = {"clean_text": True, "lowercase": True, "strip_accents": None,
                             "handle_chinese_chars": True}


def _check_normaliser(path: Path, tok: Any, config: dict[str, Any]) -> None:
    """Refuse a ``tokenizer.json`` that transformers would not tokenise as it says: its
    BertTokenizer (5.x) builds a BertNormalizer and BertPreTokenizer of its own from
    ``tokenizer_config.json`` (that file's defaults where it says nothing), whatever the
    file holds, so the model's own tokens differ from this file's where its lowercasing,
    accent stripping, CJK handling or cleaning disagree, or where it normalises or
    splits otherwise. Only lowercasing was compared, and only when the config stated it.
    A folder whose ``tokenizer_class`` is ``PreTrainedTokenizerFast`` (``TokenizersBackend``
    as transformers 5 saves it) is read by transformers as the file says."""
    if config.get("tokenizer_class") in ("PreTrainedTokenizerFast", "TokenizersBackend"):
        return
    recipe = json.loads(tok.to_str())
    problems = []
    for part, want in (("normalizer", "BertNormalizer"), ("pre_tokenizer", "BertPreTokenizer")):
        kind = (recipe.get(part) or {}).get("type")
        if kind != want:
            problems.append(f"its {part} is {kind or 'none'}, not a {want}")
    if not problems:
        normalizer = recipe["normalizer"]
        for setting, (key, default) in _NORMALISER_KEYS.items():
            mine = normalizer.get(setting, _BERT_NORMALISER_DEFAULTS[setting])
            want = config.get(key, default)
            if mine != want:
                how = "says" if key in config else "leaves to its default"
                problems.append(f"its normaliser's {setting} is {mine!r}, "
                                f"tokenizer_config.json's {key} {how} {want!r}")
        if not normalizer.get("clean_text", True):
            problems.append("its normaliser does not clean text, transformers' does")
    if problems:
        raise WeightsError(f"{path}: " + "; ".join(problems)
                           + ": transformers' BertTokenizer would tokenise with its own "
                           "BertNormalizer and BertPreTokenizer from tokenizer_config.json; "
                           "make them agree")


def _from_vocab(vocab: Path, config: dict[str, Any]) -> Any:
    """A BERT WordPiece tokenizer from ``vocab.txt`` and ``tokenizer_config.json``, built
    as transformers converts a slow BertTokenizer to a fast one."""
    from tokenizers.implementations import BertWordPieceTokenizer

    folder = vocab.parent
    tok = BertWordPieceTokenizer(str(vocab), lowercase=bool(config.get("do_lower_case", True)),
                                 strip_accents=config.get("strip_accents"),
                                 handle_chinese_chars=bool(config.get("tokenize_chinese_chars",
                                                                      True)),
                                 clean_text=True)
    n_vocab = tok.get_vocab_size(with_added_tokens=False)
    added = [t.get("content") for i, t in (config.get("added_tokens_decoder") or {}).items()
             if not str(i).isdigit() or int(i) >= n_vocab]
    if (folder / "added_tokens.json").is_file():
        added += list(_read_json_object(folder / "added_tokens.json"))
    smap_path = folder / "special_tokens_map.json"
    smap = _read_json_object(smap_path) if smap_path.is_file() else {}
    added += list(smap.get("additional_special_tokens") or [])
    added += list(config.get("additional_special_tokens") or [])
    if added:
        raise WeightsError(f"{folder}: the tokenizer adds tokens beyond vocab.txt "
                           f"({sorted(map(str, added))[:5]}); save it with transformers "
                           "(tokenizer.save_pretrained) so its tokenizer.json holds them")
    return tok
