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
from dataclasses import dataclass, field
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import QuickGELU, trunc_normal_
from timm.models.vision_transformer import Block
from torch.utils.checkpoint import checkpoint

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


@dataclass
class TokenSequence:
    """A token sequence before the blocks, and how its outputs are laid on a grid.

    ``FlexiViT.patchify`` gives the uniform one (the patch tokens are the grid in raster order);
    ``flexitransfer.adaptive.mixed_tokens`` a mixed partition's (tokens of several patch sizes).
    """
    tokens: torch.Tensor                         # (B, P + N, D): P prefix (class) tokens first
    grid: Tuple[int, int]                        # (Gh, Gw) of the output maps (the finest grid)
    num_tokens: Optional[torch.Tensor] = None    # (B,) patch tokens per image; None: Gh * Gw each
    attn_mask: Optional[torch.Tensor] = None     # (B, 1, 1, P + N) bool key mask (True = attend)
    cell_index: Optional[torch.Tensor] = None    # (B, Gh, Gw) sequence index of the token over each cell

    def tokens_per_image(self) -> torch.Tensor:
        """Patch tokens per image, (B,) long."""
        if self.num_tokens is not None:
            return self.num_tokens
        return torch.full((self.tokens.shape[0],), self.grid[0] * self.grid[1], dtype=torch.long,
                          device=self.tokens.device)


@dataclass
class TokenRecord:
    """What the forwards it was passed to ran: created by the caller, filled by ``FlexiViT.forward``
    (``record=``) or by every FlexiViT of a task model inside ``engine.record_tokens(model)``."""
    grids: List[Tuple[int, int]] = field(default_factory=list)      # per forward, the output grid
    num_tokens: List[torch.Tensor] = field(default_factory=list)    # per forward, (B,) patch tokens

    def add(self, seq: TokenSequence) -> None:
        """Record one forward's grid and tokens per image."""
        self.grids.append(tuple(seq.grid))
        self.num_tokens.append(seq.tokens_per_image().detach())

    def tokens_per_image(self) -> torch.Tensor:
        """Patch tokens per image over every recorded forward, in call order, (sum of B,) long."""
        if not self.num_tokens:
            raise ValueError('nothing recorded: no FlexiViT forward was given this record')
        return torch.cat([n.cpu() for n in self.num_tokens])


@MODELS.register_module()
class FlexiViT(BaseModule):
    """FlexiViT backbone.

    In eval / no-grad forwards the resized kernel and position embedding are
    cached per (patch, grid, device, dtype), at most ``max_cached_sizes`` of them.

    Two settings choose what a forward without an explicit ``patch_size`` runs, set by the
    engine's patch policy as a hook sets a training step's p: ``patch_size`` (uniform
    patches) and ``mixed_policy`` (None, or an object whose ``embed(backbone, x)`` returns
    the ``TokenSequence`` of a mixed partition: ``flexitransfer.adaptive.MixedPatchPolicy``,
    set by ``set_mixed_policy`` / ``use_mixed_patches``). Nothing about a forward is left
    on the module: its grid and token counts go to the ``TokenRecord`` the caller passes.

    The converters (``tools/convert_weights.py``, a converted checkpoint's
    ``meta['flexitransfer_backbone']``) return the arguments marked (converter) below: with all
    of them the backbone reproduces the source network.

    Args:
        arch (str | dict): 'tiny' | 'small' | 'base' | 'large' or a dict with ``embed_dims``,
            ``num_layers``, ``num_heads`` (and optionally ``mlp_ratio``, the MLP width over
            ``embed_dims``; default 4). (converter)
        in_channels (int): input channels. Default: 3.
        patch_size (int | tuple[int, int]): patch size used when ``forward`` is given none.
            Hooks and loops set this attribute to change it. (owlvit converter: its own patch)
        base_patch_size (int | tuple[int, int]): size of the stored kernel (32 in the paper). A
            checkpoint's kernel of another size is PI-resized into it on load; unless that store
            gives the kernel back at the checkpoint's patch (16 -> 32 -> 16 does not), the load
            warns with the output error it causes: set it to the checkpoint's patch to load exactly.
            (converter: the source's patch, or ``--base-patch``)
        base_pos_grid (int | tuple[int, int]): size of the stored position grid (7 in the
            paper). A checkpoint's grid of another size is resized bilinearly on load (a smaller
            store warns as above): set it to the checkpoint's grid to load exactly. (converter)
        kernel_resize (str): 'pi' (default), 'pi_aa' (PI-resize against an antialiased basis: each
            smaller kernel reads every stored pixel), or a naive baseline 'bilinear' | 'bilinear_aa' | 'area'.
        pos_resize_antialias (bool): antialias when shrinking the position grid. Default: True.
        with_cls_token (bool): prepend a class token. (converter)
        pos_embed_cls (bool): the class token has its own position embedding (CLIP, classic
            timm ViT: ``cls_pos_embed``); FlexiViT / big_vision add none to it. (converter)
        patch_bias (bool): bias in the patch embedding (False for CLIP). (converter)
        pre_norm (bool): LayerNorm before the blocks (CLIP's ``ln_pre``). (converter)
        final_norm (bool): LayerNorm after the last block, applied to every output (False for a
            timm ViT that pools through ``fc_norm``). (converter)
        act (str): 'gelu' | 'gelu_tanh' | 'quick_gelu' (OpenAI CLIP, OWL-ViT). (converter)
        mlp_ratio (float, optional): MLP width over ``embed_dims``; overrides ``arch``'s.
        qkv_bias (bool): bias in the attention's qkv projection. Default: True. (converter)
        norm_eps (float): LayerNorm epsilon (1e-6 for big_vision / timm, 1e-5 for CLIP).
            (converter)
        drop_rate (float): dropout after the position embedding and in the blocks. Default: 0.
        attn_drop_rate (float): attention dropout. Default: 0.
        drop_path_rate (float): stochastic depth, rising linearly to this over the blocks. Default: 0.
        out_indices (int | Sequence[int]): block indices (negative from the end) whose outputs
            are returned. Default: -1.
        out_type (str): 'featmap' (NCHW maps, mmseg convention), 'cls_token', 'avg'
            (mean of patch tokens) or 'raw' (all tokens, (B, L, D)).
        output_cls_token (bool): with 'featmap', return ``[featmap, cls]`` per index (mmseg).
        pretrained (str, optional): path of a checkpoint to load in ``init_weights`` (FlexiViT
            state dict, big_vision .npz, timm or open_clip file or hub directory,
            .safetensors or torch; see ``flexitransfer.converters.load_pretrained``). The load
            logs one line (file, format, what was resized from what to what).
        with_cp (bool): activation checkpointing: in training with autograd on, each block's
            activations are recomputed in backward instead of stored (same outputs and
            gradients, less memory).
        init_cfg (dict, optional): mmengine's initialisation config, used when ``pretrained`` is None.
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
                             'patch token would be returned as "cls"); set with_cls_token=True or drop '
                             'output_cls_token')
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
        self.mixed_policy = None  # see the class docstring

    # ------------------------------------------------------------------ init
    def init_weights(self):
        """Load ``pretrained`` (one logged line says the file, its format and what was resized into the
        store; a ``UserWarning`` names the output error of a store that loses what the checkpoint holds,
        and the argument that avoids it), else mmengine's ``init_cfg``, else ViT's initialisation."""
        if self.pretrained is not None:
            from ...converters import load_pretrained  # lazy: avoids a cycle at import
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

    def embed_patches(self, x: torch.Tensor, patch_size=None) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patch + position embedding at one patch size, no prefix token.

        Args:
            x (Tensor): images (B, C, H, W).
            patch_size (int | tuple[int, int], optional): the patch; default ``self.patch_size``.

        Returns:
            tuple[Tensor, tuple[int, int]]: the patch tokens (B, Gh*Gw, D) in raster order and the grid.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}')
        patch = to_2tuple(patch_size) if patch_size is not None else self.patch_size
        grid = check_patch_size(tuple(x.shape[-2:]), patch)
        weight, pos = self._resized(patch, grid)
        x = F.conv2d(x, weight, self.patch_embed.bias, stride=patch)
        return x.flatten(2).transpose(1, 2) + pos, grid

    def add_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        """The sequence the blocks take from embedded patch tokens.

        Args:
            tokens (Tensor): patch tokens (B, N, D), in any order and of any patch sizes.

        Returns:
            Tensor: (B, P + N, D): the class token first (if any), then dropout and the pre-norm.
        """
        if self.cls_token is not None:
            cls = self.cls_token if self.cls_pos_embed is None else self.cls_token + self.cls_pos_embed
            tokens = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.norm_pre(self.pos_drop(tokens))

    def patchify(self, x: torch.Tensor, patch_size=None) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patch + position embedding: tokens (B, [1+]N, D) before the blocks, and the grid."""
        tokens, grid = self.embed_patches(x, patch_size)
        return self.add_prefix(tokens), grid

    def embed(self, x: torch.Tensor, patch_size=None) -> TokenSequence:
        """The sequence a forward runs: at ``patch_size`` when given, else the mixed partition of
        ``mixed_policy`` when one is set, else at ``self.patch_size``.

        Args:
            x (Tensor): images (B, C, H, W).
            patch_size (int | tuple[int, int], optional): an explicit patch (uniform tokens).

        Returns:
            TokenSequence: the tokens before the blocks and how their outputs are laid on the grid.
        """
        if patch_size is None and self.mixed_policy is not None:
            return self.mixed_policy.embed(self, x)
        tokens, grid = self.patchify(x, patch_size)
        return TokenSequence(tokens, grid)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.cls_token is not None)

    # --------------------------------------------------------------- forward
    def _run_block(self, blk: nn.Module, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None):
        args = (x,) if attn_mask is None else (x, attn_mask)
        if self.with_cp and self.training and torch.is_grad_enabled():
            return checkpoint(blk, *args, use_reentrant=False)
        return blk(*args)

    def run_blocks(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                   out_indices: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        """Every block over a token sequence (activation checkpointing as configured).

        Args:
            x (Tensor): tokens (B, L, D).
            attn_mask (Tensor, optional): bool key mask (B, 1, 1, L), True = attend (padded batches).
            out_indices (Sequence[int], optional): blocks whose outputs are kept; default ``out_indices``.

        Returns:
            list[Tensor]: the tokens after each kept block, (B, L, D); the last block's output
            passes through the final norm when ``final_norm``.
        """
        keep = self.out_indices if out_indices is None else out_indices
        last = self.num_layers - 1
        ys = []
        for i, blk in enumerate(self.blocks):
            x = self._run_block(blk, x, attn_mask)
            if i in keep:
                ys.append(self.norm(x) if (self.final_norm and i == last) else x)
        return ys

    def tokens_to_outputs(self, ys: Sequence[torch.Tensor], grid: Tuple[int, int],
                          cell_index: Optional[torch.Tensor] = None) -> tuple:
        """The forward's outputs (``out_type``) from block outputs.

        Args:
            ys (Sequence[Tensor]): tokens (B, P + N, D) per out index (``run_blocks``).
            grid (tuple[int, int]): (Gh, Gw) of the output maps.
            cell_index (Tensor, optional): (B, Gh, Gw) sequence index of the token covering each cell (a
                mixed partition: a coarse token fills its cells); None: the N = Gh*Gw patch tokens in raster
                order.

        Returns:
            tuple: one entry per out index: the class token (B, D) ('cls_token'); the mean of the grid's
            tokens (B, D) ('avg'); the prefix and the grid's tokens (B, P + Gh*Gw, D) ('raw'); or the map
            (B, D, Gh, Gw) ('featmap'), with the class token as ``[map, cls]`` when ``output_cls_token``.
        """
        npt, outs = self.num_prefix_tokens, []
        for y in ys:
            if self.out_type == 'cls_token':
                outs.append(y[:, 0])
                continue
            if cell_index is None:
                fmap = y[:, npt:].transpose(1, 2).reshape(y.shape[0], y.shape[-1], *grid)
            else:
                b, gh, gw = cell_index.shape
                cells = torch.gather(y, 1, cell_index.flatten(1)[..., None].expand(-1, -1, y.shape[-1]))
                fmap = cells.transpose(1, 2).reshape(b, y.shape[-1], gh, gw)
            if self.out_type == 'featmap':
                outs.append([fmap, y[:, 0]] if self.output_cls_token else fmap)
                continue
            cells = fmap.flatten(2).transpose(1, 2)  # (B, Gh*Gw, D); the patch tokens when uniform
            if self.out_type == 'avg':
                outs.append(cells.mean(1))
            else:
                outs.append(y if cell_index is None else torch.cat([y[:, :npt], cells], 1))
        return tuple(outs)

    def forward_tokens(self, seq: TokenSequence, record: Optional[TokenRecord] = None) -> tuple:
        """The blocks and the outputs over an embedded sequence (``embed``, or a mixed partition's).

        Args:
            seq (TokenSequence): the sequence and its layout.
            record (TokenRecord, optional): gets the sequence's grid and tokens per image.

        Returns:
            tuple: as ``forward``.
        """
        if record is not None:
            record.add(seq)
        ys = self.run_blocks(seq.tokens, seq.attn_mask)
        return self.tokens_to_outputs(ys, seq.grid, seq.cell_index)

    def forward_features(self, x: torch.Tensor, patch_size=None) -> torch.Tensor:
        """All tokens after the last block and the final norm, (B, [1+]N, D) (timm's name)."""
        x, _ = self.patchify(x, patch_size)
        return self.run_blocks(x, out_indices=(self.num_layers - 1,))[0]

    def forward(self, x: torch.Tensor, patch_size=None, record: Optional[TokenRecord] = None) -> tuple:
        """Embed (``embed``), run the blocks and return the outputs (``tokens_to_outputs``).

        Args:
            x (Tensor): images (B, C, H, W).
            patch_size (int | tuple[int, int], optional): the patch; default the module's settings
                (``mixed_policy`` if set, else ``patch_size``).
            record (TokenRecord, optional): gets this forward's grid and patch tokens per image.

        Returns:
            tuple: one entry per ``out_indices`` (see ``tokens_to_outputs``).
        """
        return self.forward_tokens(self.embed(x, patch_size), record)

    # ----------------------------------------------------------------- utils
    def bake(self, patch_size, img_size) -> 'FlexiViT':
        """This network with kernel and position embedding stored at one patch/image size.

        The copy does no resize work in forward; at ``patch_size`` on
        ``img_size`` images it computes exactly what this model computes there.

        Args:
            patch_size (int | tuple[int, int]): the patch to store the kernel at.
            img_size (int | tuple[int, int]): the input size (H, W) the position grid is stored for;
                each side must be a multiple of the patch.

        Returns:
            FlexiViT: a copy (this model is unchanged) whose ``patch_embed`` is a plain p x p convolution
            and whose ``pos_embed`` is the (H/p, W/p) grid.
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

    def baked(self, *args, **kwargs):
        """The old name of :meth:`bake`: raises, naming the new one."""
        raise AttributeError('FlexiViT.baked was renamed: use FlexiViT.bake(patch_size, img_size)')
