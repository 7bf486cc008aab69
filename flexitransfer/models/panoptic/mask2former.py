"""Mask2Former whose neck learns the padded input size, so the pyramid is exact at any patch size."""
from __future__ import annotations

from typing import Tuple

from mmdet.models.detectors import Mask2Former
from mmdet.registry import MODELS
from torch import Tensor

from ..layers.deform_attn import use_portable_deform_attn


@MODELS.register_module()
class FlexiMask2Former(Mask2Former):
    """mmdet's ``Mask2Former`` for a FlexiViT backbone (stride p, any p) and a ``StrideAwareSimpleFPN``.

    The only change: ``extract_feat`` passes the padded batch size (H, W) to the neck, which
    places pyramid level s at ``ceil(H/s) x ceil(W/s)`` whatever the backbone's stride is.
    Everything else (losses, Hungarian matching, fusion, ``mode='tensor'`` without data samples)
    is mmdet's.

    The pixel decoder's mmcv ``MultiScaleDeformableAttention`` modules are replaced by
    ``FlexiMSDeformAttn`` (same weights): the compiled kernel only on devices where it exists, the
    PyTorch implementation elsewhere, so the model also runs on a GPU with a CPU-only mmcv build.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        use_portable_deform_attn(self)

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        x = self.backbone(batch_inputs)
        if self.with_neck:
            x = self.neck(x, img_size=tuple(batch_inputs.shape[-2:]))
        return x
