"""ImageNet normalisation shared by every encoder pretrained on ImageNet (VGG11 slices,
CLAM ResNet50): the torchvision statistics their weights were trained with."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
