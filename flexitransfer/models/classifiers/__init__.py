from .distill import FlexiDistiller
from .image_classifier import FlexiImageClassifier

__all__ = ['FlexiDistiller', 'FlexiImageClassifier']
