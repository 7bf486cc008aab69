"""Checkpoint files as users download them (issue 17): safetensors, hub directories, shards,
format judged from the content; converted through tools/convert_weights.py and checked against the
source model (timm FlexiViT, transformers OWL-ViT); one test per malformed variant."""
import contextlib
import io
import json
import os
import os.path as osp
import runpy
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import ROOT, randomize
from safetensors.torch import save_file
from test_backbone import _timm_at_patch
from test_converters import write_big_vision_npz

from flexitransfer.converters import CheckpointError, convert_checkpoint, convert_timm, detect_format, read_checkpoint
from flexitransfer.models.backbones import FlexiViT

DIMS, HEADS = 96, 3  # heads != DIMS // 64: they must come from --num-heads or the hub config


def _cli(*args):
    """tools/convert_weights.py's main() in this process, as ``python tools/convert_weights.py ARGS``
    runs it (a subprocess costs the ~10 s import of the OpenMMLab stack): (exit code, output)."""
    argv, path = sys.argv, list(sys.path)
    sys.argv, out, code = ['tools/convert_weights.py', *map(str, args)], io.StringIO(), 0
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(osp.join(ROOT, 'tools', 'convert_weights.py'), run_name='__main__')
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv, sys.path[:] = argv, path
    return code, out.getvalue()


def _write_shards(sd, d, fmt, n=3):
    """A sharded checkpoint as transformers writes it: n files + ``*.index.json`` with a weight_map."""
    os.makedirs(d, exist_ok=True)
    keys, ext = sorted(sd), 'safetensors' if fmt == 'safetensors' else 'bin'
    names = [f'model-{i + 1:05d}-of-{n:05d}.{ext}' for i in range(n)]
    wm = {}
    for i, name in enumerate(names):
        part = {k: sd[k].contiguous() for k in keys[i::n]}
        save_file(part, osp.join(d, name)) if fmt == 'safetensors' else torch.save(part, osp.join(d, name))
        wm.update(dict.fromkeys(part, name))
    index = osp.join(d, 'model.safetensors.index.json' if fmt == 'safetensors' else 'pytorch_model.bin.index.json')
    json.dump({'metadata': {}, 'weight_map': wm}, open(index, 'w'))
    return index


# ------------------------------------------------------------------------- timm FlexiViT
@pytest.fixture(scope='module', autouse=True)  # first: the subprocess runs while the other tests do
def timm_flexivit(tmp_path_factory):
    """timm's FlexiViT layout (patch 16 at 240 px, 15x15 grid, no_embed_class: the class token has
    no position embedding), small and random, as model.safetensors and as a timm hub directory; the
    CLI conversion of the file starts at once in a real subprocess and is collected by the last test."""
    import timm
    from timm.models._hub import save_for_hf
    d = tmp_path_factory.mktemp('timm')
    model = randomize(timm.create_model('flexivit_small', pretrained=False, img_size=240, depth=2,
                                        embed_dim=DIMS, num_heads=HEADS, num_classes=0)).eval()
    assert model.no_embed_class and model.pos_embed.shape[1] == 225 and model.patch_embed.patch_size == (16, 16)
    src, dst = d / 'model.safetensors', d / 'converted.pth'
    save_file(model.state_dict(), str(src))
    proc = subprocess.Popen([sys.executable, 'tools/convert_weights.py', str(src), str(dst), '--from', 'timm',
                             '--num-heads', str(HEADS)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1'))
    save_for_hf(model, str(d / 'hub'), safe_serialization=True)  # config.json (with model_args) + model.safetensors
    yield dict(model=model, src=src, dst=dst, hub=d / 'hub', proc=proc)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------- OWL-ViT
@pytest.fixture(scope='module')
def owlvit_dirs(tmp_path_factory):
    """transformers save_pretrained directories of a small random OwlViTForObjectDetection:
    single model.safetensors, and sharded (model.safetensors.index.json + shards)."""
    from test_owlvit_oracle import _hf_owlvit
    hf, _ = _hf_owlvit()
    d = tmp_path_factory.mktemp('owlvit')
    hf.save_pretrained(str(d / 'single'))
    hf.save_pretrained(str(d / 'sharded'), max_shard_size='2MB')
    assert osp.isfile(d / 'single' / 'model.safetensors') and osp.isfile(d / 'single' / 'config.json')
    assert osp.isfile(d / 'sharded' / 'model.safetensors.index.json')
    assert len([f for f in os.listdir(d / 'sharded') if f.endswith('.safetensors')]) > 1
    return hf, d


@pytest.mark.parametrize('layout', ['single', 'sharded'])
def test_owlvit_save_pretrained_directory_matches_transformers(owlvit_dirs, layout, tmp_path):
    from mmengine.registry import DefaultScope
    from test_owlvit_oracle import _ours, check_matches_transformers
    hf, d = owlvit_dirs
    dst = tmp_path / 'owl.pth'
    code, out = _cli(d / layout, dst, '--from', 'owlvit')  # no --hf-config: the directory's config.json
    assert code == 0, out
    ckpt = torch.load(dst, weights_only=True)
    kw = ckpt['meta']['owlvit_detector_kwargs']
    # heads from config.json (the default would be 48 // 64 -> 1)
    assert kw['backbone']['arch']['num_heads'] == 2 and kw['text_tower']['heads'] == 2
    with DefaultScope.overwrite_default_scope('mmdet'):
        ours = _ours(ckpt['state_dict'], kw)
    check_matches_transformers(hf, ours)  # logits and boxes < 1e-4 at the source patch
    if layout == 'sharded':  # FlexiViT(pretrained=DIR) takes the detector's vision tower
        m = FlexiViT(**{k: v for k, v in kw['backbone'].items() if k != 'type'}, pretrained=str(d / layout))
        m.init_weights()
        assert all(torch.equal(v, ours.backbone.state_dict()[k]) for k, v in m.state_dict().items())


# ----------------------------------------------------------------------- formats by content
def test_format_is_judged_from_the_content_not_the_name(timm_flexivit, tmp_path):
    sd = timm_flexivit['model'].state_dict()
    odd = tmp_path / 'weights.pth'  # safetensors under a torch name
    shutil.copy(timm_flexivit['src'], odd)
    ck = read_checkpoint(odd)
    assert ck.kind == 'safetensors' and all(torch.equal(ck.state_dict[k], v) for k, v in sd.items())
    torch.save({'state_dict': sd, 'meta': {'x': 1}}, tmp_path / 'model.safetensors')  # mmengine wrapper, wrong name
    ck = read_checkpoint(tmp_path / 'model.safetensors')
    assert ck.kind == 'torch' and ck.meta == {'x': 1} and set(ck.state_dict) == set(sd)
    npz = write_big_vision_npz(tmp_path / 'flexivit.npz')
    shutil.copy(npz, tmp_path / 'flexivit.bin')
    assert read_checkpoint(tmp_path / 'flexivit.bin').kind == 'npz'
    assert detect_format(tmp_path / 'flexivit.bin') == detect_format(npz) == 'big_vision'


@pytest.mark.parametrize('fmt', ['safetensors', 'torch'])
def test_sharded_index_is_followed(timm_flexivit, tmp_path, fmt):
    sd = timm_flexivit['model'].state_dict()
    index = _write_shards(sd, tmp_path / 'hub', fmt)
    for path in (tmp_path / 'hub', index):  # the directory or the index itself
        ck = read_checkpoint(path)
        assert len(ck.files) == 3 and set(ck.state_dict) == set(sd)
        assert all(torch.equal(ck.state_dict[k], v) for k, v in sd.items())


def test_open_clip_hub_directory(tmp_path):
    """open_clip's hub layout: open_clip_model.safetensors + open_clip_config.json (heads, GELU) next to
    a transformers-layout model.safetensors, which no converter reads."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    vision = dict(layers=2, width=64, head_width=16, patch_size=16, image_size=64)  # 4 heads, not 64 // 64
    text = dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1)
    torch.manual_seed(0)
    clip = randomize(CLIP(embed_dim=32, quick_gelu=False, vision_cfg=CLIPVisionCfg(**vision),
                          text_cfg=CLIPTextCfg(**text))).eval()
    save_file(clip.state_dict(), str(tmp_path / 'open_clip_model.safetensors'))
    save_file({'vision_model.embeddings.patch_embedding.weight': torch.zeros(1)}, str(tmp_path / 'model.safetensors'))
    json.dump({'model_cfg': {'embed_dim': 32, 'vision_cfg': vision, 'text_cfg': text}},
              open(tmp_path / 'open_clip_config.json', 'w'))
    ck = read_checkpoint(tmp_path)
    assert ck.files == [str(tmp_path / 'open_clip_model.safetensors')]
    sd, kw, extras = convert_checkpoint(ck, 'open_clip')
    assert kw['act'] == 'gelu' and kw['arch']['num_heads'] == 4
    m = FlexiViT(**kw, out_type='cls_token').eval()
    m.load_state_dict(sd)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (m(x, 16)[0] @ extras['proj'] - clip.encode_image(x)).abs().max() < 1e-4
    os.remove(tmp_path / 'open_clip_model.safetensors')  # only the transformers copy left: said so
    with pytest.raises(CheckpointError, match='transformers CLIP / ViT layout: not supported.*open_clip_model'):
        detect_format(tmp_path)


@pytest.mark.parametrize('args,expect', [
    (dict(), dict(pos_embed_cls=True, with_cls_token=True)),  # classic ViT: the class token has a position
    (dict(class_token=False, global_pool='avg'), dict(with_cls_token=False, final_norm=False)),  # fc_norm: a head
    (dict(pre_norm=True, qkv_bias=False), dict(pre_norm=True, qkv_bias=False)),
    (dict(img_size=(32, 48)), dict(base_pos_grid=(2, 3))),  # not square: the grid from the hub config
])
def test_timm_architecture_is_read_from_the_tensors(args, expect):
    import timm
    model_args = dict(dict(img_size=32, patch_size=16, embed_dim=64, depth=1, num_heads=2, num_classes=0), **args)
    t = randomize(timm.create_model('vit_tiny_patch16_224', pretrained=False, **model_args)).eval()
    config = {'architecture': 'vit_tiny_patch16_224', 'model_args': model_args}
    sd, kw, _ = convert_timm(t.state_dict(), config=config if 'img_size' in args else None, num_heads=2)
    assert {k: kw[k] for k in expect} == expect
    m = FlexiViT(**kw, out_type='raw').eval()
    m.load_state_dict(sd)
    x = torch.randn(1, 3, *t.patch_embed.img_size)
    with torch.no_grad():
        assert (m.forward_features(x, 16) - t.forward_features(x)).abs().max() < 1e-4
    if 'img_size' in args:
        with pytest.raises(ValueError, match='7 tokens: neither a square grid.*hub config.json'):
            convert_timm(t.state_dict())


def test_timm_layouts_a_flexivit_cannot_hold():
    from timm.models.vision_transformer import VisionTransformer
    t = VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=1, num_heads=2, reg_tokens=4,
                          init_values=1e-5, num_classes=0)
    with pytest.raises(ValueError, match=r'layer scale, register tokens .*cannot hold them'):
        convert_timm(t.state_dict())


# ------------------------------------------------------------------------- malformed input
@pytest.mark.parametrize('keep,expect', [(20, 'its header alone should be'), (0.6, 'but the file has')])
def test_truncated_safetensors(timm_flexivit, tmp_path, keep, expect):
    data = open(timm_flexivit['src'], 'rb').read()
    bad = tmp_path / 'model.safetensors'
    bad.write_bytes(data[:keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(bad)
    msg = str(e.value)
    assert str(bad) in msg and 'is truncated' in msg and expect in msg and 'download it again' in msg
    assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)


def test_missing_shard(timm_flexivit, tmp_path):
    index = _write_shards(timm_flexivit['model'].state_dict(), tmp_path / 'hub', 'safetensors')
    os.remove(tmp_path / 'hub' / 'model-00002-of-00003.safetensors')
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(tmp_path / 'hub')
    msg = str(e.value)
    assert index in msg and 'model-00002-of-00003.safetensors' in msg and 'missing from' in msg and '(1 of 3)' in msg
    assert 'download every file the index lists' in msg


def test_directory_without_weights(tmp_path):
    d = tmp_path / 'hub'
    os.makedirs(d)
    json.dump({'architecture': 'flexivit_small'}, open(d / 'config.json', 'w'))
    (d / 'README.md').write_text('# weights\n')
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(d)
    msg = str(e.value)
    assert str(d) in msg and 'holds no weights' in msg and 'README.md, config.json' in msg
    assert 'model.safetensors' in msg and 'huggingface-cli download' in msg
    m = FlexiViT(arch=dict(embed_dims=DIMS, num_layers=2, num_heads=HEADS), pretrained=str(d))
    with pytest.raises(CheckpointError, match='holds no weights'):  # the same message from the backbone
        m.init_weights()


def test_wrong_tensor_shapes(timm_flexivit):
    src = str(timm_flexivit['src'])
    m = FlexiViT(arch=dict(embed_dims=64, num_layers=2, num_heads=2), pretrained=src)
    with pytest.raises(CheckpointError) as e:
        m.init_weights()
    msg = str(e.value)
    assert f'checkpoint {src!r} does not fit this FlexiViT (embed_dims=64' in msg
    assert 'it holds embed_dims=96, num_layers=2' in msg and 'build the FlexiViT with the arch' in msg


@pytest.mark.parametrize('text,expect', [
    ('epoch 12: loss 0.31\n', 'is a text file'),
    ('version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 1234\n', 'git lfs pull'),
    ('<!DOCTYPE html>\n<html><body>Sign in</body></html>\n', 'is an HTML page'),
])
def test_text_file_given_as_checkpoint(tmp_path, text, expect):
    bad = tmp_path / 'model.pth'
    bad.write_text(text)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(bad)
    assert str(bad) in str(e.value) and expect in str(e.value) and '\n' not in str(e.value)


def test_cli_names_the_right_source_format_in_one_line(timm_flexivit, tmp_path):
    code, out = _cli(timm_flexivit['src'], tmp_path / 'x.pth', '--from', 'open_clip')
    assert f"{timm_flexivit['src']}' holds timm weights, not open_clip; use --from timm" in str(code)
    assert 'Traceback' not in out and '\n' not in str(code)
    assert not osp.exists(tmp_path / 'x.pth')


# -------------------------------------------------------- timm: CLI conversion (a real subprocess)
def test_timm_hub_directory_reads_heads_from_its_config(timm_flexivit):
    model = timm_flexivit['model']
    _, kw, _ = convert_checkpoint(read_checkpoint(timm_flexivit['hub']), 'timm')
    assert kw['arch']['num_heads'] == HEADS and kw['act'] == 'gelu' and kw['norm_eps'] == 1e-6
    m = FlexiViT(**kw, out_type='raw', pretrained=str(timm_flexivit['hub']))  # the directory itself
    m.init_weights()
    x = torch.randn(1, 3, 240, 240, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (m.eval().forward_features(x, 16) - model.forward_features(x)).abs().max() < 1e-4


def test_timm_flexivit_safetensors_through_the_cli(timm_flexivit):
    proc = timm_flexivit['proc']
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert 'wrote' in out
    kw = torch.load(timm_flexivit['dst'], weights_only=True)['meta']['flexitransfer_backbone']
    assert kw['base_patch_size'] == [16, 16] and kw['base_pos_grid'] == [15, 15] and kw['with_cls_token']
    assert not kw['pos_embed_cls'] and not kw['pre_norm'] and kw['arch']['num_heads'] == HEADS
    m = FlexiViT(**kw, out_type='raw', pretrained=str(timm_flexivit['dst']))
    m.init_weights()
    m.eval()
    x = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (m.forward_features(x, 16) - timm_flexivit['model'].forward_features(x)).abs().max() < 1e-4
        for p in (8, 30):  # other patches: timm with its own resample_patch_embed / resample_abs_pos_embed
            tokens = m.forward_features(x, p)
            assert tokens.shape == (2, 1 + (240 // p) ** 2, DIMS)
            assert (tokens - _timm_at_patch(m, p).forward_features(x)).abs().max() < 1e-4, p


def test_cli_base_patch_store_warns_with_the_measured_error(timm_flexivit, tmp_path):
    """--base-patch 32 on a patch-16 checkpoint: 16 -> 32 -> 16 is not the identity, so the conversion warns
    with the output error it causes at p=16 (measured) and the argument that avoids it (issue 26)."""
    import re
    model, src = timm_flexivit['model'], timm_flexivit['src']
    with pytest.warns(UserWarning) as caught:
        code, out = _cli(src, tmp_path / 'b32.pth', '--from', 'timm', '--num-heads', HEADS, '--base-patch', 32)
    assert code == 0, out
    assert f'wrote {tmp_path / "b32.pth"}: {src} (timm) -> FlexiViT: patch kernel 16x16 -> store 32x32 (PI-resize), ' \
           f'position grid 15x15 kept' in out and 'LOSSY' in out and len(out.strip().splitlines()) == 1
    msgs = [str(w.message) for w in caught if 'store loses' in str(w.message)]
    assert len(msgs) == 1 and 'patch kernel 16x16 -> 32x32 -> 16x16' in msgs[0] and '--base-patch 16' in msgs[0]
    kw = torch.load(tmp_path / 'b32.pth', weights_only=True)['meta']['flexitransfer_backbone']
    m = FlexiViT(**kw, out_type='raw', pretrained=str(tmp_path / 'b32.pth'))
    m.init_weights()
    x = torch.randn(1, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.forward_features(x)
        actual = ((m.eval().forward_features(x, 16) - ref).norm() / ref.norm()).item()
    said = float(re.search(r'([0-9.e+-]+)% relative error', msgs[0]).group(1)) / 100
    assert said > 0.01 and said == pytest.approx(actual, rel=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the checkpoint's own patch: nothing lost, nothing said
        code, out = _cli(src, tmp_path / 'b16.pth', '--from', 'timm', '--num-heads', HEADS, '--base-patch', 16)
    assert code == 0 and 'patch kernel 16x16 kept, position grid 15x15 kept' in out and 'LOSSY' not in out
