from .amp import CPUAmpOptimWrapper, amp_optim_wrapper
from .checkpoint import allow_mmengine_checkpoints, check_checkpoint, load_weights, read_state_dict
from .dist import choose_backend, init_distributed
from .hooks import RandomPatchSizeHook
from .loops import MultiPatchTestLoop, MultiPatchValLoop, format_patch_table
from .mixed_hook import MixedPartitionHook, draw_mixed_policy
from .patch_size import (
                         draw_patch_size,
                         flexi_modules,
                         get_patch_size,
                         record_tokens,
                         set_patch_size,
                         walk_backbone_cfgs,
)
from .preempt import PreemptibleCheckpointHook, find_resumable_checkpoint, make_preemptible, preemptible
from .preflight import PreflightMemoryError, device_memory, memory_preflight
from .validate import check_datasets_nonempty, check_patch_fits, check_patch_value, validate_patch_config

__all__ = ['check_patch_fits', 'CPUAmpOptimWrapper', 'amp_optim_wrapper', 'allow_mmengine_checkpoints',
           'check_checkpoint', 'load_weights', 'read_state_dict', 'choose_backend', 'init_distributed',
           'RandomPatchSizeHook', 'MultiPatchTestLoop', 'MultiPatchValLoop', 'format_patch_table', 'draw_patch_size',
           'flexi_modules', 'get_patch_size', 'set_patch_size',
           'check_datasets_nonempty', 'check_patch_value', 'validate_patch_config', 'walk_backbone_cfgs',
           'MixedPartitionHook', 'draw_mixed_policy', 'record_tokens',
           'PreemptibleCheckpointHook', 'find_resumable_checkpoint', 'make_preemptible', 'preemptible',
           'PreflightMemoryError', 'device_memory', 'memory_preflight']
