"""Resolving the official pretrained weights of an encoder, never silently random.

Every encoder reads its weights from the config (``weights``: a local path or an
http(s) URL). The file's SHA-256 is computed and recorded in the feature store,
and checked against ``sha256`` when the config gives one. When no weights can be
had the encoder stops with an error that names the file and where to get it;
only ``allow_random_init: true`` lets it run on random weights, and then the
log, the :class:`WeightsInfo` and so the store say ``random-init`` plainly. Random
weights are drawn from a fixed seed (:func:`seeded_init`), so a random-init store is the
same on every run and a rerun changes no downstream result.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from mmpipe.encoders.urls import file_url, without_credentials
from mmpipe.errors import WeightsError, read_error_words
from mmpipe.fsutil import atomic_write_text
from mmpipe.hashing import sha256_file

log = logging.getLogger(__name__)

RANDOM_INIT = "random-init"
RANDOM_INIT_SEED = 0  # recorded in a random-init store as weights_init_seed


@contextlib.contextmanager
def seeded_init(seed: int = RANDOM_INIT_SEED) -> Iterator[None]:
    """Build a network inside this block: its initial weights are a function of ``seed``
    alone, and the caller's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass
class WeightsInfo:
    """Where an encoder's weights came from, for the store's provenance."""

    source: str  # file path, URL, "package:<name>" or "random-init"
    sha256: str | None
    random_init: bool
    extra: dict[str, Any] | None = None  # further files, e.g. a text projection and its hash

    def to_attrs(self) -> dict[str, Any]:
        """Flat JSON-able attributes for a feature store:
        ``weights_source``, ``weights_sha256``, ``weights_random_init`` (+ ``weights_<extra>``)."""
        attrs = {"weights_source": self.source, "weights_sha256": self.sha256,
                 "weights_random_init": self.random_init}
        for key, value in (self.extra or {}).items():
            attrs[f"weights_{key}"] = value
        return attrs


def _is_url(spec: str) -> bool:
    return urlparse(spec).scheme in ("http", "https")


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The tensor state_dict inside a checkpoint: unwrap ``state_dict``/``model``, strip ``module.``.

    MedicalNet saves ``{"state_dict": {"module.conv1.weight": ...}}`` (a DataParallel
    model); torchvision saves the bare state_dict.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: not a state_dict (found {type(obj).__name__})")
    # a fresh dict (no _metadata): BatchNorm then fills num_batches_tracked that
    # checkpoints saved before PyTorch 0.4.1 lack, as torch does for old versions
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = str(key)
        name = key[len("module."):] if key.startswith("module.") else key
        if name in out:  # the file's order chose the copy that loaded, without a word
            raise WeightsError(f"{source}: holds {name!r} twice, with and without the "
                               "'module.' prefix: a file holds each tensor once")
        out[name] = value
    if not out:
        raise WeightsError(f"{source}: the checkpoint holds no tensors")
    return out


def _check_hash(actual: str, expected: str | None, source: str) -> None:
    if expected and actual.lower() != expected.lower():
        raise WeightsError(f"{source}: SHA-256 mismatch: the file has {actual}, the config "
                           f"expects {expected.lower()} (wrong or corrupt weights file)")


def _load_file(path: Path, expected_sha: str | None, source: str) -> tuple[dict, str]:
    actual = sha256_file(path)
    _check_hash(actual, expected_sha, source)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle with code objects, truncated file ...
        raise WeightsError(f"{source}: cannot read the weights file: "
                           f"{read_error_words(exc)}") from exc
    return _unwrap(obj, source), actual


def _hub_cached_file(url: str) -> Path:
    # the path torch.hub.load_state_dict_from_url uses for this URL
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


# torch hub's convention: a file name's "-<hex>." is the start of its SHA-256
_HUB_HASH = re.compile(r"-([a-f0-9]+)\.")
# beside a file mmpipe downloaded into the hub cache: the URL it came from
_SOURCE_SUFFIX = ".source-url"


def _check_cached(cached: Path, url: str, sha: str, encoder: str) -> None:
    """The hub cache keys a file by its name alone, so another URL's file of that name (a
    second host, a v2 folder) would be loaded and recorded as this URL's: refused when
    the name's hash prefix or the URL mmpipe recorded on download (the query keys that
    name no file aside: ``?download=1``, a signed URL's signature) says so. Not called
    when the config pins the file's SHA-256, which says it all."""
    named = _HUB_HASH.search(cached.name)
    if named and not sha.startswith(named.group(1)):
        raise WeightsError(f"encoder {encoder}: the cached {cached} is not the file its name "
                           f"promises (SHA-256 {sha[:12]}..., the name says {named.group(1)}): "
                           "delete it and download again")
    record = cached.with_name(cached.name + _SOURCE_SUFFIX)
    if record.is_file() and file_url(came := record.read_text().strip()) != \
            file_url(url):
        raise WeightsError(f"encoder {encoder}: the cached {cached} was downloaded from {came}, "
                           f"not from {url} (the hub cache keys a file by its name): set "
                           "encoders.<name>.weights to a local path, or move the cached file")


def resolve_state_dict(cfg: Mapping[str, Any], *, encoder: str, expected_file: str,
                       how_to_get: str) -> tuple[dict[str, torch.Tensor] | None, WeightsInfo]:
    """Find, check and load the weights an encoder's config names.

    ``cfg`` keys: ``weights`` (local path, http(s) URL or None), ``sha256`` (expected,
    optional), ``allow_random_init`` (default False: applies only when no weights are
    configured; a configured file that is missing is always an error), ``download``
    (default False).
    Returns ``(state_dict, info)``; ``state_dict`` is None only for random init.
    A URL is fetched only with ``download: true``; a copy already in the torch hub
    cache is used without network access.
    """
    spec = cfg.get("weights")
    expected_sha = cfg.get("sha256") or None
    allow_random = bool(cfg.get("allow_random_init", False))

    if spec:
        spec = str(spec)
        if _is_url(spec):
            cached = _hub_cached_file(spec)
            if cached.is_file():
                sd, sha = _load_file(cached, expected_sha, f"encoder {encoder}: {cached} (cache of "
                                                          f"{without_credentials(spec)})")
                if not expected_sha:
                    _check_cached(cached, spec, sha, encoder)
                return sd, WeightsInfo(without_credentials(spec), sha, False)
            if cfg.get("download", False):
                return _download(spec, expected_sha, encoder)
            raise WeightsError(
                f"encoder {encoder}: weights URL {without_credentials(spec)} is not in the "
                f"torch hub cache "
                f"({cached}) and download is false; set encoders.{encoder}.download: true "
                f"or download {expected_file} ({how_to_get}) and set encoders.{encoder}.weights "
                "to the local path")
        path = Path(spec).expanduser()
        if path.is_file():
            sd, sha = _load_file(path, expected_sha, f"encoder {encoder}: {path}")
            return sd, WeightsInfo(str(path), sha, False)
        # a configured file that is not there is a mistake, never a reason to go random
        raise WeightsError(
            f"encoder {encoder}: weights file not found: {path} (encoders.{encoder}.weights); "
            f"get {expected_file} ({how_to_get}) and put it there, or remove the weights "
            "entry to run without pretrained weights under allow_random_init: true")

    if allow_random:
        log.warning("RANDOM WEIGHTS: encoder %s runs with random-init weights; features are NOT "
                    "pretrained (no weights configured)", encoder)
        return None, WeightsInfo(RANDOM_INIT, None, True, {"init_seed": RANDOM_INIT_SEED})
    raise WeightsError(
        f"encoder {encoder}: no weights configured; get {expected_file} ({how_to_get}) and set "
        f"encoders.{encoder}.weights in config.yaml, or set allow_random_init: true to run "
        "without pretrained weights")


def _download(url: str, expected_sha: str | None, encoder: str) -> tuple[dict, WeightsInfo]:
    shown = without_credentials(url)
    log.info("encoder %s: downloading weights from %s", encoder, shown)
    try:
        obj = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                                 check_hash=True, weights_only=True)
    except Exception as exc:
        raise WeightsError(f"encoder {encoder}: cannot download weights from {shown}: "
                           f"{exc}") from exc
    cached = _hub_cached_file(url)
    sha = sha256_file(cached) if cached.is_file() else None
    if sha is not None:
        _check_hash(sha, expected_sha, f"encoder {encoder}: {cached} (downloaded from {shown})")
        atomic_write_text(cached.with_name(cached.name + _SOURCE_SUFFIX), shown + "\n")
    return _unwrap(obj, f"encoder {encoder}: {shown}"), WeightsInfo(shown, sha, False)


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                drop_prefixes: Iterable[str] = (), encoder: str = "?",
                source: str | None = None) -> nn.Module:
    """Drop the keys of heads the encoder does not use, then load with ``strict=True``.

    Strict loading is what proves the architecture here matches the official one.
    ``source``: the weights file, which the refusal names.
    """
    of = f" ({source})" if source else ""
    prefixes = tuple(drop_prefixes)
    sd = {k: v for k, v in state_dict.items() if not (prefixes and k.startswith(prefixes))}
    dropped = len(state_dict) - len(sd)
    if prefixes:
        log.info("encoder %s: dropped %d checkpoint keys under %s", encoder, dropped, list(prefixes))
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        raise WeightsError(
            f"encoder {encoder}: the weights{of} do not match the architecture "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(shape)} shape mismatches); "
            f"missing: {missing[:10]}; unexpected: {unexpected[:10]}; shapes: {shape[:10]}")
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"encoder {encoder}: the weights{of} do not match the architecture: "
                           f"{exc}") from exc
    return module


def _checkpoint_holds_all_state(module: nn.Module) -> bool:
    """No non-persistent buffer and no tensor kept as a plain attribute: state that a
    checkpoint does not carry and the empty allocation would leave uninitialised or on meta."""
    unsaved = {name for name, _ in module.named_buffers()} - set(module.state_dict())
    plain = any(isinstance(value, torch.Tensor) for m in module.modules()
                for value in vars(m).values())
    return not unsaved and not plain


def build_pretrained(factory: Callable[[], nn.Module], cfg: Mapping[str, Any], *,
                     encoder: str, expected_file: str, how_to_get: str,
                     drop_prefixes: Iterable[str] = ()) -> tuple[nn.Module, WeightsInfo]:
    """``factory()``'s network with the weights ``cfg`` names (:func:`resolve_state_dict`,
    :func:`load_strict`), or with its seeded random init when the config allows that.

    With weights, the network is built on the meta device and its storage allocated
    uninitialised: every parameter is then overwritten by the strict load, so the random
    init (about 0.2 s of a Med3D-18 job, more for deeper networks) would be thrown away.
    Buffers start at zero, then the load overwrites them (a batch norm's
    ``num_batches_tracked``, which :func:`load_strict` lets an old checkpoint lack, stays
    0 as in a fresh network). A network holding a buffer that no checkpoint carries (a
    non-persistent one) or a tensor as a plain attribute (which the allocation leaves on the
    meta device) is built and initialised as usual instead: nothing is left
    uninitialised."""
    sd, info = resolve_state_dict(cfg, encoder=encoder, expected_file=expected_file,
                                  how_to_get=how_to_get)
    if sd is None:
        with seeded_init():  # random-init stores must not change between runs
            return factory(), info
    return load_strict(for_strict_load(factory), sd, drop_prefixes=drop_prefixes,
                       encoder=encoder, source=info.source), info


class _NoInitOnMeta(TorchFunctionMode):
    """A network's init functions (``torch.nn.init``, a tensor's ``normal_`` and
    ``uniform_``) return a meta tensor untouched: it has no data to fill, and torch's meta
    kernel of ``normal_`` (``nn.Embedding``'s init, the Kaiming-normal init of every
    convolution) is a Python reference whose first call imports ``torch._dynamo``, 1.8 s
    of an encoding job's start-up here."""

    DRAWS = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.DRAWS or getattr(func, "__module__", None) == "torch.nn.init":
            # torch.nn.init hands its tensor over by keyword
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.device.type == "meta":
                return target
        return func(*args, **kwargs)


def for_strict_load(factory: Callable[[], nn.Module]) -> nn.Module:
    """``factory()``'s network, for a strict load to overwrite every parameter: built on
    the meta device with its storage allocated uninitialised and its buffers at zero, so
    no random init is drawn and thrown away; built and seeded as usual when it holds state
    no checkpoint carries (see :func:`build_pretrained`)."""
    with torch.device("meta"), _NoInitOnMeta():
        module = factory()
    if _checkpoint_holds_all_state(module):
        # to_empty's empty_like on a meta tensor runs a Python reference that imports
        # torch's symbolic shapes (0.5 s); an empty tensor of the same size does not
        module = module._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device="cpu"))
        for buffer in module.buffers():
            buffer.zero_()
        return module
    with seeded_init():
        return factory()


def encoder_name(cfg: Mapping[str, Any], default: str) -> str:
    """The encoder's config name for messages: ``cfg["name"]`` when the caller set it
    (the key under ``encoders:``), else its type."""
    return str(cfg.get("name") or cfg.get("type") or default)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the encoders are frozen feature extractors."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
