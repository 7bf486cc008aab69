from .backbones import FlexiViT  # noqa: F401
from .classifiers import FlexiDistiller, FlexiImageClassifier  # noqa: F401
from .retrieval import LiT  # noqa: F401
from .text import OpenCLIPTextTower  # noqa: F401
