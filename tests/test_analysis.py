"""flexitransfer.analysis and tools/analyze.py: CKA against a brute-force HSIC and its
invariances, recorded attention against the blocks' own outputs, attention maps on a
constructed model, cross-scale correspondence, and the tool end to end."""
import csv
import itertools
import os.path as osp

import pytest
import torch
import torch.nn as nn
from conftest import randomize, run_tool

from flexitransfer.analysis import (
    MinibatchCKA,
    common_grid,
    correspondence,
    hsic_unbiased,
    layer_names,
    linear_cka,
    pooled_rows,
    query_attention,
    record,
    region_of_tokens,
    rollout,
    to_pixels,
    token_map,
)
from flexitransfer.engine import set_patch_size
from flexitransfer.models.backbones import FlexiViT


# ----------------------------------------------------------------------------- CKA
def brute_force_hsic(x, y):
    """Unbiased HSIC as the U-statistic of Song et al. (2012): the mean over ordered distinct
    (i, j, q, r) of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq, with linear kernels."""
    k, l_ = (x @ x.T).tolist(), (y @ y.T).tolist()
    n, total, count = len(k), 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i][j] * l_[i][j] + k[i][j] * l_[q][r] - 2 * k[i][j] * l_[i][q]
        count += 1
    return total / count


def rand(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize('space', ['gram', 'feature', 'auto'])
def test_hsic_matches_brute_force(space):
    x, y = rand(7, 5, 0), rand(7, 3, 1) + 0.5  # an offset: the estimator must handle uncentred features
    y[:, 0] += x[:, 0]  # dependent
    for a, b in ((x, y), (x, x), (y, x)):
        assert float(hsic_unbiased(a, b, space)) == pytest.approx(brute_force_hsic(a, b), rel=1e-10, abs=1e-12)


def test_minibatch_cka_matches_brute_force():
    xs = [rand(6, 4, 10 + b) for b in range(3)]
    ys = [x @ rand(4, 3, 20) + 0.3 * rand(6, 3, 30 + b) for b, x in enumerate(xs)]
    hxy = sum(brute_force_hsic(x, y) for x, y in zip(xs, ys))
    hxx = sum(brute_force_hsic(x, x) for x in xs)
    hyy = sum(brute_force_hsic(y, y) for y in ys)
    expected = hxy / (hxx * hyy) ** 0.5
    for space in ('gram', 'feature'):
        m = MinibatchCKA(1, 1, space=space)
        for x, y in zip(xs, ys):
            m.update([x], [y])
        assert float(m.compute()[0, 0]) == pytest.approx(expected, rel=1e-10)
    assert 0.3 < expected < 1  # a real, non-trivial value


@pytest.mark.parametrize('space', ['gram', 'feature'])
def test_cka_identity_and_invariances(space):
    x = rand(40, 12, 0)
    y = torch.tanh(x @ rand(12, 8, 1)) + 0.1 * rand(40, 8, 2)
    q, _ = torch.linalg.qr(rand(12, 12, 3))  # orthogonal
    q8, _ = torch.linalg.qr(rand(8, 8, 4))
    assert linear_cka(x, x, space) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(x, y, space)
    assert 0.2 < base < 0.99
    for xx, yy in ((x @ q, y), (x, y @ q8), (x @ q, y @ q8), (3.7 * x, y), (x, 0.05 * y), (-2 * x @ q, 11 * y)):
        assert linear_cka(xx, yy, space) == pytest.approx(base, abs=1e-10)
    # not invariant to a general linear map: the test above can fail
    assert abs(linear_cka(x @ torch.diag(torch.linspace(0.1, 5, 12, dtype=torch.float64)), y, space) - base) > 1e-3


def test_minibatch_cka_matrix_and_errors():
    xs = [rand(10, 6, i) for i in range(3)]
    m = MinibatchCKA(3)
    m.update(xs)
    m.update([x.flip(0) * 2 for x in xs])
    c = m.compute()
    assert torch.allclose(c, c.T) and torch.allclose(c.diagonal(), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match='at least 4'):
        hsic_unbiased(rand(3, 2, 0), rand(3, 2, 1))
    with pytest.raises(ValueError, match='same examples'):
        hsic_unbiased(rand(5, 2, 0), rand(6, 2, 1))
    with pytest.raises(ValueError, match='flatten'):
        linear_cka(torch.zeros(4, 2, 2), torch.zeros(4, 2))


# ----------------------------------------------------------------------------- grids
def test_pooling_token_maps_and_pixels():
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    rows = pooled_rows(x, (2, 2))  # nesting grids: exact 3x3 block means
    expected = x.reshape(2, 3, 2, 3, 2, 3).mean((3, 5)).flatten(2).transpose(1, 2).reshape(-1, 3)
    assert torch.allclose(rows, expected, atol=1e-6)
    assert common_grid((12, 12), (4, 4)) == (4, 4) and common_grid((6, 8), (4, 10)) == (4, 8)
    tokens = torch.randn(2, 1 + 12, 5)
    fmap = token_map(tokens, (3, 4), 1)
    assert torch.equal(fmap[1, :, 2, 1], tokens[1, 1 + 2 * 4 + 1])
    one_hot = torch.zeros(3, 4)
    one_hot[2, 1] = 1
    pix = to_pixels(one_hot, (8, 8))  # token (2, 1) covers rows 16..23, columns 8..15
    assert pix.shape == (24, 32)
    ys, xs = torch.nonzero(pix, as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (16, 23, 8, 15) and pix.sum() == 64
    # regions: 12x12 tokens over a 4x4 region grid -> 3x3 blocks
    r = region_of_tokens((12, 12), (48, 48), (4, 4)).reshape(12, 12)
    assert r[0, 0] == 0 and r[2, 2] == 0 and r[3, 0] == 4 and r[11, 11] == 15


# ----------------------------------------------------------------------------- recording and attention
def test_record_reproduces_the_blocks(tiny_arch):
    bb = randomize(FlexiViT(arch=tiny_arch, patch_size=8, base_patch_size=16, base_pos_grid=4), seed=1).eval()
    x = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    for p in (8, 12, 24):
        bb.patch_size = (p, p)
        rec = record(bb, x)
        g = 48 // p
        assert rec.grid == (g, g) and list(rec.tokens) == layer_names(2)
        with torch.no_grad():
            t, _ = bb.patchify(x)
            assert torch.allclose(rec.tokens['embed'], t)
            for i, blk in enumerate(bb.blocks):
                after_attn = t + blk.attn(blk.norm1(t))  # the module's own (possibly fused) attention
                assert torch.allclose(rec.tokens[f'{i}.attn'], after_attn, atol=1e-5)
                # the recorded probabilities reproduce the attention output exactly
                h = blk.norm1(t)
                a = blk.attn
                v = a.qkv(h).reshape(3, h.shape[1], 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)[2]
                out = a.proj((rec.attn[i] @ v).transpose(1, 2).reshape(3, h.shape[1], -1))
                assert torch.allclose(out, a(h), atol=1e-5)
                assert rec.attn[i].shape == (3, tiny_arch['num_heads'], 1 + g * g, 1 + g * g)
                assert torch.allclose(rec.attn[i].sum(-1), torch.ones(()), atol=1e-5) and (rec.attn[i] >= 0).all()
                t = blk(t)
                assert torch.allclose(rec.tokens[f'{i}.mlp'], t, atol=1e-5)
            assert torch.allclose(rec.final, bb.norm(t), atol=1e-5)
        maps = query_attention(rec.attn[-1], rec.grid, 1)
        assert maps.shape == (3, tiny_arch['num_heads'], g, g)
        assert torch.allclose(maps.sum((-2, -1)) + rec.attn[-1][:, :, 0, 0], torch.ones(()), atol=1e-5)
    assert not bb._forward_hooks and not any(b._forward_hooks or b._forward_pre_hooks for b in bb.modules())


def forced_attention_vit(with_cls):
    """A FlexiViT whose every query attends to the brightest patch: zero position/class
    embeddings, patch embedding = patch sum into channel 0, keys = the normed token,
    every query = a large constant along channel 0."""
    d = 16
    bb = FlexiViT(arch=dict(embed_dims=d, num_layers=2, num_heads=1), in_channels=1, patch_size=8,
                  base_patch_size=8, base_pos_grid=4, with_cls_token=with_cls).eval()
    with torch.no_grad():
        for p in bb.parameters():
            p.zero_()
        for m in bb.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
        bb.patch_embed.weight[0] = 1.0
        for blk in bb.blocks:
            q, k, _ = blk.attn.qkv.weight.view(3, d, d)
            k.copy_(torch.eye(d))
            blk.attn.qkv.bias.view(3, d)[0, 0] = 20.0
    return bb


@pytest.mark.parametrize('with_cls', [True, False])
def test_attention_lights_up_the_bright_patch(with_cls):
    bb = forced_attention_vit(with_cls)
    img = torch.zeros(1, 1, 48, 48)
    img[..., 16:32, 16:32] = 1.0  # a 16x16 square: one token at p=16, 2x2 at p=8, 4x4 at p=4
    for p in (4, 8, 16):
        set_patch_size(bb, p)
        rec = record(bb, img)
        maps = [query_attention(probs, rec.grid, int(with_cls))[0, 0]
                for probs in rec.attn + [rollout(rec.attn, residual=0.0)[:, None]]]
        with_residual = query_attention(rollout(rec.attn)[:, None], rec.grid, int(with_cls))[0, 0]
        for m in maps + [with_residual]:
            pix = to_pixels(m, (p, p))
            assert pix.shape == (48, 48)
            peak = torch.nonzero(pix >= pix.max() - 1e-6)  # the brightest pixels: exactly the square
            assert peak[:, 0].min() == 16 and peak[:, 0].max() == 31 and peak[:, 1].min() == 16 \
                and peak[:, 1].max() == 31 and len(peak) == 256, p
        for m in maps:  # all the attention goes there
            inside = to_pixels(m, (p, p))[16:32, 16:32].sum() / (p * p)
            assert inside > 0.99, (p, float(inside))


def test_rollout_properties():
    g = torch.Generator().manual_seed(0)
    probs = [torch.softmax(torch.randn(2, 3, 5, 5, generator=g), -1) for _ in range(3)]
    r = rollout(probs)
    assert torch.allclose(r.sum(-1), torch.ones(()), atol=1e-6)
    assert torch.allclose(rollout(probs[:1], residual=0.0), probs[0].mean(1), atol=1e-6)
    a = [0.5 * p.mean(1) + 0.5 * torch.eye(5) for p in probs]
    assert torch.allclose(r, a[2] @ a[1] @ a[0], atol=1e-6)


# ----------------------------------------------------------------------------- correspondence
def position_tokens(grid, img=48):
    """Tokens that encode where they are: a smooth function of the token centre."""
    gh, gw = grid
    ys = (torch.arange(gh) + 0.5) / gh
    xs = (torch.arange(gw) + 0.5) / gw
    yy, xx = torch.meshgrid(ys, xs, indexing='ij')
    f = torch.stack([torch.cos(torch.pi * yy), torch.sin(torch.pi * yy), torch.cos(torch.pi * xx),
                     torch.sin(torch.pi * xx)], -1)
    return f.reshape(1, gh * gw, 4).repeat(2, 1, 1)


def test_correspondence_fraction_and_chance():
    hits, count, chance = correspondence(position_tokens((12, 12)), position_tokens((4, 4)), (12, 12), (4, 4),
                                         (48, 48))
    assert (hits, count) == (2 * 144, 2 * 144) and chance == pytest.approx(1 / 16)
    hits, count, chance = correspondence(position_tokens((4, 4)), position_tokens((12, 12)), (4, 4), (12, 12),
                                         (48, 48))
    assert hits == count == 32 and chance == pytest.approx(9 / 144)
    # targets shuffled: the same tokens in the wrong places -> far from 1
    t = position_tokens((4, 4))[:, torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    hits, count, _ = correspondence(position_tokens((12, 12)), t, (12, 12), (4, 4), (48, 48))
    assert hits / count < 0.3


# ----------------------------------------------------------------------------- the tool
def test_analyze_tool_end_to_end(tmp_path, tiny_arch):
    import cv2
    import numpy as np
    from mmengine.config import Config
    from mmengine.registry import MODELS
    cfg = Config.fromfile(osp.join(osp.dirname(__file__), '..', 'configs', 'cls', 'tiny_cls_flexi.py'))
    model = randomize(MODELS.build(cfg.model), seed=3)
    ckpt = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    rng = np.random.default_rng(0)
    for i in range(6):
        img = np.zeros((60, 60, 3), np.uint8)
        y, x = rng.integers(0, 40, 2)
        img[y:y + 20, x:x + 20] = rng.integers(60, 255, 3)
        cv2.imwrite(str(tmp_path / f'img{i}.png'), img)
    out = tmp_path / 'out'
    log = run_tool('tools/analyze.py', 'configs/cls/tiny_cls_flexi.py', str(ckpt), '--patch', '12', '20', '30',
                   '--images', str(tmp_path / 'img*.png'), '--out', str(out), '--show', '2', '--rollout',
                   '--batch-size', '4')
    for name in ('cka_tokens', 'cka_cls', 'cka_vs_ref', 'attention', 'attention_rollout', 'correspondence_maps'):
        assert (out / f'{name}.csv').is_file(), log
    for name in ('cka_tokens', 'cka_cls', 'cka_vs_ref', 'attention', 'attention_rollout', 'correspondence'):
        assert (out / f'{name}.png').stat().st_size > 1000
    rows = list(csv.DictReader(open(out / 'cka_tokens.csv')))
    names = layer_names(4)
    assert len(rows) == 6 * len(names) ** 2  # 6 patch pairs (with p = q), layer x layer
    for r in rows:
        assert -0.5 < float(r['cka']) <= 1 + 1e-6
        if r['p_a'] == r['p_b'] and r['layer_a'] == r['layer_b']:
            assert float(r['cka']) == pytest.approx(1.0, abs=1e-6)
    vs = {(r['p'], r['layer']): r for r in csv.DictReader(open(out / 'cka_vs_ref.csv'))}
    assert float(vs[('12', '3.mlp')]['cka_tokens']) == pytest.approx(1.0, abs=1e-6)
    attn = list(csv.DictReader(open(out / 'attention.csv')))
    shown = {(p, f'img{i}.png') for p in ('12', '20', '30') for i in (0, 5)}  # --show 2 of 6: first and last
    assert {(r['patch'], r['image']) for r in attn} == shown
    assert sum(1 for r in attn if r['patch'] == '12' and r['image'] == 'img0.png') == 25  # 5x5 grid at p=12
    corr = list(csv.DictReader(open(out / 'correspondence.csv')))
    assert {r['p_target'] for r in corr} == {'20', '30'} and len(corr) == 2 * len(names)
    for r in corr:
        assert int(r['tokens']) == 6 * 25 and 0 <= float(r['fraction']) <= 1
        # chance: the target grid is the region grid (3x3 at p=20, 2x2 at p=30), one target token per region
        expected = 1 / 9 if r['p_target'] == '20' else 1 / 4
        assert float(r['chance']) == pytest.approx(expected, abs=1e-6)
    # the library raises (the tool prints one line): an argument the model does not fit, named by its flag
    from flexitransfer.analysis.sweep import run_analysis
    with pytest.raises(ValueError, match=r'--layers \[9\]: the model has 4 blocks'):
        run_analysis(osp.join(osp.dirname(__file__), '..', 'configs', 'cls', 'tiny_cls_flexi.py'), str(ckpt),
                     [12, 20], images=[str(tmp_path / 'img*.png')], layers=[9], out=str(tmp_path / 'out2'))


def test_run_analysis_raises_before_loading_anything(tmp_path):
    from flexitransfer.analysis.sweep import expand_images, run_analysis
    cfg = osp.join(osp.dirname(__file__), '..', 'configs', 'cls', 'tiny_cls_flexi.py')
    with pytest.raises(ValueError, match=r'--ref 5 must be one of --patch \[8, 16\]'):
        run_analysis(cfg, 'x.pth', [8, 16], ref=5)
    with pytest.raises(ValueError, match='--batch-size must be at least 4'):
        run_analysis(cfg, 'x.pth', [8, 16], batch_size=2)
    with pytest.raises(FileNotFoundError, match='not found: .*nope.pth'):
        run_analysis(cfg, str(tmp_path / 'nope.pth'), [8, 16])
    with pytest.raises(FileNotFoundError, match='--images: no file matches'):
        expand_images([str(tmp_path / '*.png')])
    assert not list(tmp_path.iterdir())
