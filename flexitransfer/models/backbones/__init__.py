from .flexivit import ARCH_SETTINGS, DEFAULT_PATCH_SIZES, FlexiViT, check_patch_size

__all__ = ['ARCH_SETTINGS', 'DEFAULT_PATCH_SIZES', 'FlexiViT', 'check_patch_size']
