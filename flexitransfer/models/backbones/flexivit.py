"""FlexiViT backbone: a plain ViT whose patch size is chosen per forward.

Stored parameters are a patch-embedding kernel at ``base_patch_size`` (default
32x32) and a position-embedding grid at ``base_pos_grid`` (default 7x7), as in
big_vision. A forward at patch ``p`` PI-resizes the kernel to p x p and
bilinearly resizes the position grid to (H/p, W/p) (see ``flexitransfer.ops``),
then runs an ordinary ViT. Transformer blocks are timm's, so timm state dicts
load by name and timm serves as the test oracle.

Outputs follow mmseg's ``VisionTransformer`` convention: a tuple of NCHW maps
(stride = the patch size in use) at ``out_indices``.
"""
from __future__ import annotations

import os
from functools import partial
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch.utils.checkpoint import checkpoint
from timm.layers import QuickGELU, trunc_normal_
from timm.models.vision_transformer import Block

from ...ops import KERNEL_RESIZE_MODES, plain_tensors, resize_patch_embed, resize_pos_embed, to_2tuple

ARCH_SETTINGS: Dict[str, Dict[str, int]] = {
    'tiny': dict(embed_dims=192, num_layers=12, num_heads=3),
    'small': dict(embed_dims=384, num_layers=12, num_heads=6),
    'base': dict(embed_dims=768, num_layers=12, num_heads=12),
    'large': dict(embed_dims=1024, num_layers=24, num_heads=16),
}

#: The training distribution of the paper (grid 5..30 at 240 px).
DEFAULT_PATCH_SIZES = (48, 40, 30, 24, 20, 16, 15, 12, 10, 8)

_ACTS = {'gelu': nn.GELU, 'gelu_tanh': partial(nn.GELU, approximate='tanh'), 'quick_gelu': QuickGELU}
_OUT_TYPES = ('featmap', 'cls_token', 'avg', 'raw')


def check_patch_size(img_hw: Tuple[int, int], patch: Tuple[int, int]) -> Tuple[int, int]:
    """Grid size for an image at a patch size, or a clear error."""
    (h, w), (ph, pw) = img_hw, patch
    if ph > h or pw > w:
        raise ValueError(f'patch size {ph}x{pw} is larger than the image ({h}x{w}): choose a patch '
                         f'size <= the image side, or feed a larger image')
    if h % ph or w % pw:
        fix_h, fix_w = -(-h // ph) * ph, -(-w // pw) * pw
        raise ValueError(f'image size {h}x{w} is not divisible by the patch size {ph}x{pw}: resize or '
                         f'pad the input to {fix_h}x{fix_w} (e.g. size_divisor / crop size a multiple '
                         f'of the patch in the pipeline), or choose a patch size that divides it')
    return h // ph, w // pw


@MODELS.register_module()
class FlexiViT(BaseModule):
    """FlexiViT backbone.

    In eval / no-grad forwards the resized kernel and position embedding are
    cached per (patch, grid, device, dtype), at most ``max_cached_sizes`` of them.

    Args:
        arch: 'tiny' | 'small' | 'base' | 'large' or a dict with ``embed_dims``,
            ``num_layers``, ``num_heads`` (and optionally ``mlp_ratio``).
        patch_size: patch size used when ``forward`` is given none (int or (h, w)).
            Hooks and loops set this attribute to change it.
        base_patch_size: size of the stored kernel (32 in the paper).
        base_pos_grid: size of the stored position grid (7 in the paper).
        kernel_resize: 'pi' (default), or a naive baseline 'bilinear' | 'bilinear_aa' | 'area'.
        pos_resize_antialias: antialias when shrinking the position grid.
        with_cls_token: prepend a class token.
        pos_embed_cls: the class token has its own position embedding (CLIP, classic
            timm ViT); FlexiViT / big_vision add none to it.
        patch_bias: bias in the patch embedding (False for CLIP).
        pre_norm: LayerNorm before the blocks (CLIP's ``ln_pre``).
        final_norm: LayerNorm after the last block, applied to every output.
        act: 'gelu' | 'gelu_tanh' | 'quick_gelu'.
        out_indices: block indices (negative from the end) whose outputs are returned.
        out_type: 'featmap' (NCHW maps, mmseg convention), 'cls_token', 'avg'
            (mean of patch tokens) or 'raw' (all tokens, (B, L, D)).
        output_cls_token: with 'featmap', return ``[featmap, cls]`` per index (mmseg).
        pretrained: path of a checkpoint to load in ``init_weights`` (FlexiViT
            state dict, big_vision .npz, timm or open_clip file or hub directory,
            .safetensors or torch; see ``flexitransfer.converters.load_pretrained``).
        with_cp: activation checkpointing: in training with autograd on, each block's activations
            are recomputed in backward instead of stored (same outputs and gradients, less memory).
    """

    max_cached_sizes = 32

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 in_channels: int = 3,
                 patch_size: Union[int, Sequence[int]] = 16,
                 base_patch_size: Union[int, Sequence[int]] = 32,
                 base_pos_grid: Union[int, Sequence[int]] = 7,
                 kernel_resize: str = 'pi',
                 pos_resize_antialias: bool = True,
                 with_cls_token: bool = True,
                 pos_embed_cls: bool = False,
                 patch_bias: bool = True,
                 pre_norm: bool = False,
                 final_norm: bool = True,
                 act: str = 'gelu',
                 mlp_ratio: Optional[float] = None,
                 qkv_bias: bool = True,
                 norm_eps: float = 1e-6,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'featmap',
                 output_cls_token: bool = False,
                 pretrained: Optional[str] = None,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in ARCH_SETTINGS:
                raise ValueError(f'unknown arch {arch!r}; choose one of {sorted(ARCH_SETTINGS)} or give a dict')
            arch = ARCH_SETTINGS[arch]
        missing = {'embed_dims', 'num_layers', 'num_heads'} - set(arch)
        if missing:
            raise ValueError(f'arch dict misses {sorted(missing)}')
        if kernel_resize not in KERNEL_RESIZE_MODES:
            raise ValueError(f'kernel_resize must be one of {KERNEL_RESIZE_MODES}, got {kernel_resize!r}')
        if out_type not in _OUT_TYPES:
            raise ValueError(f'out_type must be one of {_OUT_TYPES}, got {out_type!r}')
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError("out_type='cls_token' needs with_cls_token=True")
        if output_cls_token and not with_cls_token:
            raise ValueError('output_cls_token=True needs with_cls_token=True (without a class token the first '
                             'patch token would be returned as "cls"); set with_cls_token=True or drop output_cls_token')
        if act not in _ACTS:
            raise ValueError(f'act must be one of {sorted(_ACTS)}, got {act!r}')

        self.arch = dict(arch)
        self.embed_dims = d = int(arch['embed_dims'])
        self.num_layers = int(arch['num_layers'])
        self.num_heads = int(arch['num_heads'])
        mlp_ratio = float(mlp_ratio or arch.get('mlp_ratio', 4.0))
        self.in_channels = in_channels
        self.patch_size = to_2tuple(patch_size)
        self.base_patch_size = to_2tuple(base_patch_size)
        self.base_pos_grid = to_2tuple(base_pos_grid)
        self.kernel_resize = kernel_resize
        self.pos_resize_antialias = pos_resize_antialias
        self.with_cls_token = with_cls_token
        self.pos_embed_cls = pos_embed_cls and with_cls_token
        self.final_norm = final_norm
        self.out_type = out_type
        self.output_cls_token = output_cls_token
        self.pretrained = pretrained
        self.with_cp = with_cp

        self.patch_embed = nn.Conv2d(in_channels, d, kernel_size=self.base_patch_size,
                                     stride=self.base_patch_size, bias=patch_bias)
        gh, gw = self.base_pos_grid
        self.pos_embed = nn.Parameter(torch.zeros(1, gh * gw, d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if with_cls_token else None
        self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, d)) if self.pos_embed_cls else None
        self.pos_drop = nn.Dropout(drop_rate)
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.norm_pre = norm(d) if pre_norm else nn.Identity()
        dpr = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.blocks = nn.ModuleList([
            Block(d, self.num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop_rate,
                  attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=norm, act_layer=_ACTS[act])
            for i in range(self.num_layers)])
        self.norm = norm(d) if final_norm else nn.Identity()

        if isinstance(out_indices, int):
            out_indices = [out_indices]
        self.out_indices = []
        for i in out_indices:
            j = i + self.num_layers if i < 0 else i
            if not 0 <= j < self.num_layers:
                raise ValueError(f'out index {i} out of range for {self.num_layers} layers')
            self.out_indices.append(j)
        self._resize_cache: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ init
    def init_weights(self):
        if self.pretrained is not None:
            from ...converters import load_pretrained  # noqa: avoid a cycle at import
            if not os.path.exists(self.pretrained):  # a file or a hub directory (config.json + weights)
                raise FileNotFoundError(
                    f'FlexiViT pretrained checkpoint not found: {self.pretrained!r}. Download the '
                    f'released weights (a file or a hub directory) and point `pretrained` at them, or convert '
                    f'them with `python tools/convert_weights.py SRC DST --from big_vision|timm|open_clip`, '
                    f'then point `pretrained` (or load_from) at DST.')
            load_pretrained(self, self.pretrained)
            return
        if self.init_cfg is not None:
            super().init_weights()
            return
        trunc_normal_(self.pos_embed, std=.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.cls_pos_embed is not None:
            trunc_normal_(self.cls_pos_embed, std=.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ------------------------------------------------------------- embedding
    def _resize_now(self, patch: Tuple[int, int], grid: Tuple[int, int]):
        return (resize_patch_embed(self.patch_embed.weight, patch, self.kernel_resize),
                resize_pos_embed(self.pos_embed, self.base_pos_grid, grid, self.pos_resize_antialias))

    def _resized(self, patch: Tuple[int, int], grid: Tuple[int, int]):
        """Kernel at ``patch`` and position embedding at ``grid``.

        Without autograd (eval, inference, locked towers) the result is cached
        until the stored parameters change (tracked by their version counters),
        so a forward at a fixed p does no resize work. Cached tensors are plain
        tensors even when first built under ``torch.inference_mode()``.
        """
        w, pos = self.patch_embed.weight, self.pos_embed
        if torch.is_grad_enabled() and (w.requires_grad or pos.requires_grad):
            return self._resize_now(patch, grid)
        key = (patch, grid, w.device, w.dtype)
        version = (w._version, pos._version, w.data_ptr(), pos.data_ptr())
        hit = self._resize_cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        out = plain_tensors(self._resize_now)(patch, grid)  # usable later in any autograd mode
        self._resize_cache.pop(key, None)
        self._resize_cache[key] = (version, out)
        while len(self._resize_cache) > self.max_cached_sizes:  # variable image sizes: drop the oldest
            self._resize_cache.pop(next(iter(self._resize_cache)))
        return out

    def _apply(self, fn, *args, **kwargs):
        self._resize_cache.clear()  # .to()/.cuda()/.half(): cached tensors are stale
        return super()._apply(fn, *args, **kwargs)

    def grid_size(self, img_hw, patch_size=None) -> Tuple[int, int]:
        """The token grid of an (H, W) input at ``patch_size`` (default: the current one), or a clear error.
        Heads that depend on the grid (OWL-ViT's box prior) compute it here from their input."""
        patch = to_2tuple(patch_size) if patch_size is not None else self.patch_size
        return check_patch_size(tuple(img_hw), patch)

    def patchify(self, x: torch.Tensor, patch_size=None) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patch + position embedding: tokens (B, [1+]N, D) before the blocks, and the grid."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}')
        patch = to_2tuple(patch_size) if patch_size is not None else self.patch_size
        grid = check_patch_size(tuple(x.shape[-2:]), patch)
        # the grid of the last forward, for one reader: the multi-patch test loop's token count (every
        # other user computes it from its input with ``grid_size``)
        self.last_grid = grid
        weight, pos = self._resized(patch, grid)
        x = F.conv2d(x, weight, self.patch_embed.bias, stride=patch)
        x = x.flatten(2).transpose(1, 2) + pos
        if self.cls_token is not None:
            cls = self.cls_token if self.cls_pos_embed is None else self.cls_token + self.cls_pos_embed
            x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm_pre(self.pos_drop(x)), grid

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.cls_token is not None)

    # --------------------------------------------------------------- forward
    def _run_block(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and self.training and torch.is_grad_enabled():
            return checkpoint(blk, x, use_reentrant=False)
        return blk(x)

    def forward_features(self, x: torch.Tensor, patch_size=None) -> torch.Tensor:
        """All tokens after the last block and the final norm, (B, [1+]N, D) (timm's name)."""
        x, _ = self.patchify(x, patch_size)
        for blk in self.blocks:
            x = self._run_block(blk, x)
        return self.norm(x)

    def forward(self, x: torch.Tensor, patch_size=None):
        b = x.shape[0]
        x, (gh, gw) = self.patchify(x, patch_size)
        npt, last = self.num_prefix_tokens, self.num_layers - 1
        outs = []
        for i, blk in enumerate(self.blocks):
            x = self._run_block(blk, x)
            if i not in self.out_indices:
                continue
            y = self.norm(x) if (self.final_norm and i == last) else x
            if self.out_type == 'raw':
                outs.append(y)
            elif self.out_type == 'cls_token':
                outs.append(y[:, 0])
            elif self.out_type == 'avg':
                outs.append(y[:, npt:].mean(dim=1))
            else:
                fmap = y[:, npt:].transpose(1, 2).reshape(b, self.embed_dims, gh, gw)
                outs.append([fmap, y[:, 0]] if self.output_cls_token else fmap)
        return tuple(outs)

    # ----------------------------------------------------------------- utils
    def baked(self, patch_size, img_size) -> 'FlexiViT':
        """This network with kernel and position embedding stored at one patch/image size.

        The copy does no resize work in forward; at ``patch_size`` on
        ``img_size`` images it computes exactly what this model computes there.
        """
        import copy
        patch = to_2tuple(patch_size)
        grid = check_patch_size(to_2tuple(img_size), patch)
        with torch.no_grad():
            w, pos = self._resize_now(patch, grid)
        other = copy.deepcopy(self)
        other._resize_cache = {}
        other.patch_size = other.base_patch_size = patch
        other.base_pos_grid = grid
        conv = nn.Conv2d(self.in_channels, self.embed_dims, patch, patch,
                         bias=self.patch_embed.bias is not None).to(w)
        conv.weight.data.copy_(w)
        if conv.bias is not None:
            conv.bias.data.copy_(self.patch_embed.bias.data)
        other.patch_embed = conv
        other.pos_embed = nn.Parameter(pos.detach().clone())
        return other
