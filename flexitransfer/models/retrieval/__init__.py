from .lit import LiT

__all__ = ['LiT']
