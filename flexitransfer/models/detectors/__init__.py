"""Detectors (mmdet registry): the OWL-ViT style open-vocabulary detector."""
from .owl_vit import OWLViTDetector
from .text_queries import DEFAULT_TEMPLATES, TextQueryEncoder

__all__ = ['OWLViTDetector', 'DEFAULT_TEMPLATES', 'TextQueryEncoder']
