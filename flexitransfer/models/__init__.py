from .backbones import FlexiViT  # noqa: F401
