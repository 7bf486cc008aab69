"""flexitransfer: one FlexiViT backbone for many downstream tasks, at any patch size.

Importing the package registers its modules with the OpenMMLab registries
(``type='FlexiViT'`` from mmseg, mmdet and mmengine configs) and makes
mmengine checkpoints loadable on torch >= 2.6.
"""
__version__ = '0.1.0'

from . import ops  # noqa: F401
from .datasets import *  # noqa: F403
from .engine import *  # noqa: F403
from .engine.checkpoint import allow_mmengine_checkpoints
from .engine.registry import declare_function_registries
from .evaluation import *  # noqa: F403
from .models import *  # noqa: F403

allow_mmengine_checkpoints()
declare_function_registries()  # mmseg / mmdet inferencers find their scope's collate function without a warning
