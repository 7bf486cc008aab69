"""OWL-ViT heads: box prior, box / class heads, set-prediction loss (mmdet registry)."""
from .box_prior import box_bias
from .owl_heads import OWLBoxHead, OWLClassHead
from .owl_loss import OWLSetLoss

__all__ = ['box_bias', 'OWLBoxHead', 'OWLClassHead', 'OWLSetLoss']
