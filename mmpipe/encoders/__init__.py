"""Frozen encoders (VGG11 slices, Med3D, CLAM ResNet50, text, tabular, pre-extracted
features), their weights resolution and the registry the orchestration looks them up in."""
