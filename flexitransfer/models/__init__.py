from .backbones import FlexiViT  # noqa: F401
from .classifiers import FlexiDistiller, FlexiImageClassifier  # noqa: F401
