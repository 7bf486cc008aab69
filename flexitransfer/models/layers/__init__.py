"""Layers that mmcv / mmdet provide but that we need to behave differently (kept out of
``import flexitransfer``: importing ``mmcv.ops`` loads its compiled extension)."""
