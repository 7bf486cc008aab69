from .simple_fpn import LayerNorm2d, StrideAwareSimpleFPN, level_sizes

__all__ = ['LayerNorm2d', 'StrideAwareSimpleFPN', 'level_sizes']
