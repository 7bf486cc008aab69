"""Weight converters: big_vision .npz, timm and open_clip / OpenAI-CLIP -> FlexiViT.

Each ``convert_*`` returns ``(state_dict, backbone_kwargs, extras)``:
``state_dict`` uses FlexiViT's parameter names (no prefix), ``backbone_kwargs``
the FlexiViT arguments that reproduce the source network, and ``extras`` the
tensors that belong to a head (classifier, CLIP projection).
Kernel and grid resizing go through ``flexitransfer.ops``.
"""
from .core import (convert_big_vision, convert_open_clip, convert_timm, detect_format,
                   load_checkpoint_file, load_pretrained, load_state_into, save_converted)
from .owlvit import convert_owlvit, save_owlvit  # noqa: F401

__all__ = ['convert_big_vision', 'convert_open_clip', 'convert_timm', 'detect_format',
           'load_checkpoint_file', 'load_pretrained', 'load_state_into', 'save_converted']
