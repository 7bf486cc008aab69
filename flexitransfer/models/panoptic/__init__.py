"""Panoptic segmentation on mmdet (Mask2Former on FlexiViT + StrideAwareSimpleFPN).

Imports mmdet, so it is not imported by ``import flexitransfer``: configs name it in
``custom_imports`` (``flexitransfer.models.panoptic``).
"""
from .mask2former import FlexiMask2Former

__all__ = ['FlexiMask2Former']
