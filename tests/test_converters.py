import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, randomize
from timm.models.vision_transformer import VisionTransformer, _load_weights

from flexitransfer.converters import (
    convert_big_vision,
    convert_open_clip,
    convert_timm,
    detect_format,
    load_pretrained,
    save_converted,
)
from flexitransfer.models.backbones import FlexiViT

D, L, H, MLP = 64, 2, 4, 128


def write_big_vision_npz(path, patch=32, grid=7, num_classes=10, seed=0):
    """A FlexiViT checkpoint exactly as big_vision saves it: flat '/'-joined names, HWIO kernels."""
    rng = np.random.default_rng(seed)
    r = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)
    p = {'embedding/kernel': r(patch, patch, 3, D), 'embedding/bias': r(D), 'cls': r(1, 1, D),
         'pos_embedding': r(1, grid * grid, D), 'Transformer/encoder_norm/scale': 1 + r(D),
         'Transformer/encoder_norm/bias': r(D), 'head/kernel': r(D, num_classes), 'head/bias': r(num_classes)}
    for i in range(L):
        b = f'Transformer/encoderblock_{i}/'
        for ln in ('LayerNorm_0', 'LayerNorm_1'):
            p[b + ln + '/scale'], p[b + ln + '/bias'] = 1 + r(D), r(D)
        for n in ('query', 'key', 'value'):
            p[b + f'MultiHeadDotProductAttention_0/{n}/kernel'] = r(D, H, D // H)
            p[b + f'MultiHeadDotProductAttention_0/{n}/bias'] = r(H, D // H)
        p[b + 'MultiHeadDotProductAttention_0/out/kernel'] = r(H, D // H, D)
        p[b + 'MultiHeadDotProductAttention_0/out/bias'] = r(D)
        p[b + 'MlpBlock_0/Dense_0/kernel'], p[b + 'MlpBlock_0/Dense_0/bias'] = r(D, MLP), r(MLP)
        p[b + 'MlpBlock_0/Dense_1/kernel'], p[b + 'MlpBlock_0/Dense_1/bias'] = r(MLP, D), r(D)
    np.savez(path, **p)
    return path


def upsample_patches(x, p, q):
    b, c, h, w = x.shape
    gh, gw = h // p, w // p
    patches = x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, p, p)
    up = F.interpolate(patches, size=(q, q), mode='bilinear', align_corners=False)
    return up.reshape(b, gh, gw, c, q, q).permute(0, 3, 1, 4, 2, 5).reshape(b, c, gh * q, gw * q)


def test_big_vision_npz_matches_timms_own_loader(tmp_path):
    npz = write_big_vision_npz(tmp_path / 'flexivit.npz')
    ref = VisionTransformer(img_size=224, patch_size=32, embed_dim=D, depth=L, num_heads=H, mlp_ratio=MLP / D,
                            no_embed_class=True, num_classes=10).eval()
    _load_weights(ref, str(npz))
    sd, kw, extras = convert_big_vision(str(npz))
    assert kw['base_patch_size'] == (32, 32) and kw['base_pos_grid'] == (7, 7) and kw['arch']['num_heads'] == H
    m = FlexiViT(**kw, out_type='cls_token').eval()
    m.load_state_dict(sd)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = F.linear(m(x, 32)[0], extras['head.weight'], extras['head.bias'])
        assert (logits - ref(x)).abs().max() < 1e-4


def test_timm_state_dict_native_and_rebased_into_32(tmp_path):
    torch.manual_seed(0)
    t = randomize(VisionTransformer(img_size=112, patch_size=16, embed_dim=D, depth=L, num_heads=H,
                                    num_classes=0)).eval()  # classic ViT: the cls token has a position
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        ref = t.forward_features(x)
    sd, kw, _ = convert_timm(t.state_dict(), num_heads=H)
    assert kw['pos_embed_cls'] and kw['base_patch_size'] == (16, 16) and kw['base_pos_grid'] == (7, 7)
    m = FlexiViT(**kw, out_type='raw').eval()
    m.load_state_dict(sd)
    with torch.no_grad():
        assert (m.forward_features(x, 16) - ref).abs().max() < 1e-4
    # PI-resized into FlexiViT's 32x32 store: exact at p=32 on the image whose 16x16 patches
    # are each bilinearly upsampled to 32x32 (the per-patch property of PI-resize)
    sd32, kw32, _ = convert_timm(t.state_dict(), base_patch_size=32, num_heads=H)
    m32 = FlexiViT(**kw32, out_type='raw').eval()
    m32.load_state_dict(sd32)
    x_up = upsample_patches(x, 16, 32)
    with torch.no_grad():
        assert (m32.forward_features(x_up, 32) - ref).abs().max() < 1e-4


def test_open_clip_image_tower(tmp_path):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    torch.manual_seed(0)
    clip = randomize(CLIP(embed_dim=32, quick_gelu=True,
                          vision_cfg=CLIPVisionCfg(layers=L, width=D, head_width=D // H, patch_size=16, image_size=64),
                          text_cfg=CLIPTextCfg(context_length=16, vocab_size=100, width=32, heads=2, layers=1))).eval()
    path = tmp_path / 'clip.pt'
    torch.save(clip.state_dict(), path)
    assert detect_format(str(path)) == 'open_clip'
    sd, kw, extras = convert_open_clip(torch.load(path), num_heads=H)
    m = FlexiViT(**kw, out_type='cls_token').eval()
    m.load_state_dict(sd)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = m(x, 16)[0] @ extras['proj']
        assert (ours - clip.encode_image(x)).abs().max() < 1e-4


def test_convert_cli_then_pretrained_loads_into_the_32_store(tmp_path):
    npz = write_big_vision_npz(tmp_path / 'vit_b16.npz', patch=16, grid=14)
    dst = tmp_path / 'conv.pth'
    subprocess.run([sys.executable, 'tools/convert_weights.py', str(npz), str(dst), '--from', 'big_vision'],
                   cwd=ROOT, check=True, capture_output=True)
    assert detect_format(str(dst)) == 'flexitransfer'
    sd, kw, _ = convert_big_vision(str(npz))
    native = FlexiViT(**kw, out_type='raw').eval()
    native.load_state_dict(sd)
    # the default FlexiViT store (32x32 kernel, 7x7 grid): PI-resize + grid resize on load
    m = FlexiViT(arch=kw['arch'], out_type='raw', pretrained=str(dst))
    with pytest.warns(UserWarning, match='store loses what the checkpoint holds'):  # 16 and 14x14 into 32 and 7x7
        m.init_weights()
    m.eval()
    assert m.patch_embed.weight.shape[-1] == 32 and m.pos_embed.shape[1] == 49
    from flexitransfer.ops import resize_patch_embed, resize_pos_embed
    assert torch.allclose(m.patch_embed.weight, resize_patch_embed(sd['patch_embed.weight'], 32), atol=1e-5)
    assert torch.allclose(m.pos_embed, resize_pos_embed(sd['pos_embed'], 14, 7), atol=1e-6)
    for k in ('blocks.1.attn.qkv.weight', 'norm.bias', 'cls_token'):
        assert torch.equal(m.state_dict()[k], sd[k])
    save_converted((sd, kw, {}), str(tmp_path / 'again.pth'), 'big_vision')


def test_wrong_shape_and_missing_file_errors(tmp_path):
    npz = write_big_vision_npz(tmp_path / 'f.npz')
    wrong = FlexiViT(arch=dict(embed_dims=32, num_layers=2, num_heads=2))
    with pytest.raises(ValueError, match='does not fit this FlexiViT.*embed_dims'):
        load_pretrained(wrong, str(npz))
    m = FlexiViT(arch=dict(embed_dims=D, num_layers=L, num_heads=H), pretrained=str(tmp_path / 'nope.pth'))
    with pytest.raises(FileNotFoundError, match='tools/convert_weights.py'):
        m.init_weights()
    bad = tmp_path / 'bad.npz'
    np.savez(bad, foo=np.zeros(3))
    with pytest.raises(KeyError, match='not a big_vision ViT checkpoint'):
        convert_big_vision(str(bad))


# ------------------------------------------------------------- silent loads (issue 26): say what was done
@pytest.fixture(scope='module')
def timm_b16(tmp_path_factory):
    """A classic timm ViT-B/16 layout, small: patch 16, 14x14 grid at 224 px, the class token has a position."""
    from safetensors.torch import save_file
    t = randomize(VisionTransformer(img_size=224, patch_size=16, embed_dim=D, depth=L, num_heads=H,
                                    num_classes=0)).eval()
    path = tmp_path_factory.mktemp('b16') / 'model.safetensors'
    save_file(t.state_dict(), str(path))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = t.forward_features(x)
    return dict(path=str(path), x=x, ref=ref)


def _load(path, **kw):
    """FlexiViT(pretrained=path, **kw).init_weights(): (model, its load lines, the warnings raised)."""
    import logging
    import warnings

    from mmengine.logging import MMLogger
    lines = []
    handler = logging.Handler()
    handler.emit = lines.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    m = FlexiViT(arch=dict(embed_dims=D, num_layers=L, num_heads=H), pos_embed_cls=True, out_type='raw',
                 pretrained=path, **kw)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            m.init_weights()
    finally:
        logger.removeHandler(handler)
    return m.eval(), [r for r in lines if 'pretrained:' in r.getMessage()], [str(w.message) for w in caught]


def _percent(msg):
    import re
    return float(re.search(r'([0-9.e+-]+)% relative error', msg).group(1)) / 100


def _rel_err(ref, out):
    return ((out - ref).norm() / ref.norm()).item()


def test_pretrained_load_says_what_it_did_in_one_line(timm_b16):
    from flexitransfer.engine.console import ConsoleFilter
    _, lines, _ = _load(timm_b16['path'])  # FlexiViT's default store: 32x32 kernel, 7x7 grid
    assert len(lines) == 1
    msg = lines[0].getMessage()
    assert msg.startswith(f"pretrained: {timm_b16['path']} (timm) -> FlexiViT: ") and '\n' not in msg
    assert 'patch kernel 16x16 -> store 32x32 (PI-resize), position grid 14x14 -> store 7x7 (bilinear)' in msg
    assert 'class-token position embedding kept' in msg and 'missing: none' in msg
    assert 'LOSSY' in msg and 'base_patch_size=16, base_pos_grid=14 avoids it' in msg
    assert ConsoleFilter().filter(lines[0])  # tools/train.py's quiet terminal shows it (not only the log file)
    _, lines, _ = _load(timm_b16['path'], base_patch_size=16, base_pos_grid=14)
    assert 'patch kernel 16x16 kept, position grid 14x14 kept' in lines[0].getMessage()
    assert 'LOSSY' not in lines[0].getMessage()


def test_grid_store_smaller_than_the_checkpoint_warns_with_the_measured_error(timm_b16):
    m, _, warned = _load(timm_b16['path'], base_patch_size=16)  # 14x14 grid into the default 7x7 store
    assert len(warned) == 1 and '\n' not in warned[0]
    msg = warned[0]
    assert 'position grid 14x14 -> 7x7 -> 14x14' in msg and 'base_pos_grid=14' in msg
    assert 'base_patch_size' not in msg and "own patch 16x16 on 224x224" in msg
    with torch.no_grad():
        actual = _rel_err(timm_b16['ref'], m.forward_features(timm_b16['x'], 16))
    assert 0.005 < _percent(msg) and _percent(msg) == pytest.approx(actual, rel=0.3)  # measured, not made up
    m, _, warned = _load(timm_b16['path'], base_patch_size=16, base_pos_grid=14)  # the named argument
    assert warned == []
    with torch.no_grad():
        assert (m.forward_features(timm_b16['x'], 16) - timm_b16['ref']).abs().max() < 1e-4


def test_kernel_store_warns_iff_the_round_trip_is_lossy(timm_b16, tmp_path):
    # 16 -> 32 -> 16 is not the identity: the PI-resize down is not the inverse of the PI-resize up
    m, lines, warned = _load(timm_b16['path'], base_pos_grid=14)
    assert len(warned) == 1 and 'patch kernel 16x16 -> 32x32 -> 16x16' in warned[0]
    assert 'base_patch_size=16' in warned[0] and 'base_pos_grid' not in warned[0]
    with torch.no_grad():
        actual = _rel_err(timm_b16['ref'], m.forward_features(timm_b16['x'], 16))
    assert _percent(warned[0]) > 0.01 and _percent(warned[0]) == pytest.approx(actual, rel=0.3)
    # a store that gives the checkpoint back is resized yet silent: a 7x7 grid grown 3x without antialias
    from safetensors.torch import save_file
    t = randomize(VisionTransformer(img_size=112, patch_size=16, embed_dim=D, depth=L, num_heads=H, num_classes=0))
    save_file(t.state_dict(), str(tmp_path / 'g7.safetensors'))
    _, lines, warned = _load(str(tmp_path / 'g7.safetensors'), base_patch_size=16, base_pos_grid=21,
                             pos_resize_antialias=False)
    assert 'position grid 7x7 -> store 21x21 (bilinear)' in lines[0].getMessage() and warned == []
    _, _, warned = _load(str(tmp_path / 'g7.safetensors'), base_patch_size=16, base_pos_grid=21)  # antialiased back
    assert len(warned) == 1 and 'position grid 7x7 -> 21x21 -> 7x7' in warned[0]


def test_every_argument_a_converter_returns_is_documented(tmp_path, timm_b16):
    """FlexiViT's ``Args:`` names every key of every converter's backbone_kwargs (what convert_weights.py
    prints and a converted checkpoint's meta holds), and every __init__ argument."""
    import inspect
    import re

    import timm
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from test_owlvit_oracle import _hf_owlvit

    from flexitransfer.converters import convert_checkpoint, convert_owlvit, read_checkpoint
    kws = [convert_big_vision(str(write_big_vision_npz(tmp_path / 'bv.npz')))[1],
           convert_checkpoint(read_checkpoint(timm_b16['path']))[1]]
    for args in (dict(pre_norm=True, qkv_bias=False), dict(class_token=False, global_pool='avg')):
        t = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, embed_dim=D, depth=1,
                              num_heads=H, num_classes=0, **args)
        kws.append(convert_timm(t.state_dict())[1])
    clip = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=1, width=D, head_width=16, patch_size=16, image_size=32),
                text_cfg=CLIPTextCfg(context_length=8, vocab_size=50, width=32, heads=2, layers=1))
    kws.append(convert_open_clip(clip.state_dict())[1])
    kws.append({k: v for k, v in convert_owlvit(_hf_owlvit()[0].state_dict())[1]['backbone'].items() if k != 'type'})
    doc = inspect.getdoc(FlexiViT)
    args_section = doc.split('Args:', 1)[1]
    entries = dict(re.findall(r'^    (\w+)(?: \([^)]*\))?:(.*(?:\n {5,}.*)*)', args_section, re.M))
    documented, arch_entry = set(entries), entries['arch']
    keys = set().union(*kws)
    assert {'pos_embed_cls', 'base_pos_grid', 'base_patch_size', 'qkv_bias', 'norm_eps', 'act'} <= keys
    assert keys - documented == set()
    assert set(inspect.signature(FlexiViT.__init__).parameters) - {'self'} - documented == set()
    arch_keys = set().union(*(kw['arch'] for kw in kws))
    assert arch_keys == {'embed_dims', 'num_layers', 'num_heads', 'mlp_ratio'}
    assert all(k in arch_entry for k in arch_keys)
