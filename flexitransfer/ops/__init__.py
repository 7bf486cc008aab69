from .resize import (
                     KERNEL_RESIZE_MODES,
                     bilinear_matrix,
                     clear_caches,
                     kernel_resize_matrix,
                     pi_resize_matrix,
                     plain_tensors,
                     resize_patch_embed,
                     resize_pos_embed,
                     to_2tuple,
)

__all__ = ['KERNEL_RESIZE_MODES', 'bilinear_matrix', 'clear_caches', 'kernel_resize_matrix',
           'pi_resize_matrix', 'plain_tensors', 'resize_patch_embed', 'resize_pos_embed', 'to_2tuple']
