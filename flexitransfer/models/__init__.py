from .backbones import FlexiViT  # noqa: F401
from .classifiers import FlexiDistiller, FlexiImageClassifier  # noqa: F401
from .detectors import OWLViTDetector  # noqa: F401
from .heads import OWLBoxHead, OWLClassHead, OWLSetLoss  # noqa: F401
from .necks import StrideAwareSimpleFPN  # noqa: F401
from .retrieval import LiT  # noqa: F401
from .text import OpenCLIPTextTower  # noqa: F401
