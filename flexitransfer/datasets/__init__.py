from .toy import SHAPE_COLORS, TOY_SEG_CLASSES, TOY_SEG_PALETTE, make_ade20k_like, render_scene

__all__ = ['SHAPE_COLORS', 'TOY_SEG_CLASSES', 'TOY_SEG_PALETTE', 'make_ade20k_like', 'render_scene']
