"""mmpipe: a two-stage feature-cache pipeline for multimodal medical learning
with missing modalities."""

__version__ = "0.1.0"
