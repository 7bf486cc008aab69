"""Weight converters, one file per source: big_vision .npz, timm, open_clip / OpenAI-CLIP and
transformers' OWL-ViT -> FlexiViT. ``reader.py`` reads every checkpoint layout (torch files,
safetensors, .npz, hub directories, shards) into a ``Checkpoint``; ``loading.py`` detects the
format, converts, loads into a FlexiViT and saves; ``fit.py`` says what a load or a conversion did to
the kernel and the position grid (one line) and warns when the store loses what the checkpoint holds.

Each ``convert_*`` returns ``(state_dict, backbone_kwargs, extras)``:
``state_dict`` uses FlexiViT's parameter names (no prefix), ``backbone_kwargs``
the FlexiViT arguments that reproduce the source network, and ``extras`` the
tensors that belong to a head (classifier, CLIP projection).
Kernel and grid resizing go through ``flexitransfer.ops``.
"""
from .big_vision import convert_big_vision
from .fit import StoreFit, store_fit
from .loading import (
                      convert_checkpoint,
                      convert_file,
                      detect_format,
                      format_of,
                      load_checkpoint_file,
                      load_pretrained,
                      load_state_into,
                      save_converted,
)
from .open_clip import convert_open_clip
from .owlvit import convert_owlvit, save_owlvit
from .reader import Checkpoint, CheckpointError, read_checkpoint
from .timm import convert_timm

__all__ = ['Checkpoint', 'CheckpointError', 'StoreFit', 'convert_big_vision', 'convert_checkpoint', 'convert_file',
           'convert_open_clip', 'convert_owlvit', 'convert_timm', 'detect_format', 'format_of', 'load_checkpoint_file',
           'load_pretrained', 'load_state_into', 'read_checkpoint', 'save_converted', 'save_owlvit', 'store_fit']
