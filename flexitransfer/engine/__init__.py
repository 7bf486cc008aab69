from .checkpoint import allow_mmengine_checkpoints
from .dist import choose_backend, init_distributed
from .hooks import RandomPatchSizeHook
from .loops import MultiPatchTestLoop, MultiPatchValLoop, format_patch_table
from .patch import draw_patch_size, flexi_modules, get_patch_size, set_patch_size

__all__ = ['allow_mmengine_checkpoints', 'choose_backend', 'init_distributed', 'RandomPatchSizeHook', 'MultiPatchTestLoop', 'MultiPatchValLoop',
           'format_patch_table', 'draw_patch_size', 'flexi_modules', 'get_patch_size', 'set_patch_size']
