"""mmseg's EncoderDecoder whose neck learns the padded input size, so a pyramid neck is exact at any patch size."""
from __future__ import annotations

from typing import List

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class FlexiEncoderDecoder(EncoderDecoder):
    """mmseg's ``EncoderDecoder`` for a FlexiViT backbone (stride p, any p) and a ``StrideAwareSimpleFPN``
    neck (e.g. under mmseg's ``UPerHead``).

    The only change: ``extract_feat`` passes the input's (H, W) (the padded batch, or the window
    in slide inference) to the neck, which places pyramid level s at ``ceil(H/s) x ceil(W/s)``
    whatever the backbone's stride is; the same change as ``FlexiMask2Former`` on mmdet.
    Everything else (losses, auxiliary heads, whole / slide inference) is mmseg's.
    """

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        x = self.backbone(inputs)
        if self.with_neck:
            x = self.neck(x, img_size=tuple(inputs.shape[-2:]))
        return x
