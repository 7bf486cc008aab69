import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, resample_patch_embed

from flexitransfer.ops import (
    bilinear_matrix,
    clear_caches,
    kernel_resize_matrix,
    pi_resize_matrix,
    resize_patch_embed,
    resize_pos_embed,
)


def _token(x, w):
    """<x, w> for each out channel: the patch-embedding token of one patch."""
    return torch.einsum('bchw,dchw->bd', x, w)


@pytest.mark.parametrize('old,new', [(8, 16), (16, 24), (16, 32), (32, 48), (7, 13)])
def test_pi_resize_exact_when_upsampling(old, new):
    torch.manual_seed(0)
    w = torch.randn(5, 3, old, old, dtype=torch.float64)
    x = torch.randn(4, 3, old, old, dtype=torch.float64)
    x_up = F.interpolate(x, size=(new, new), mode='bilinear', align_corners=False, antialias=False)
    ref = _token(x, w)
    rel = lambda a: ((a - ref).norm() / ref.norm()).item()
    assert rel(_token(x_up, resize_patch_embed(w, new, 'pi'))) < 1e-5
    # the naive baseline is not exact: plain bilinear resize scales tokens by ~(new/old)^2
    assert rel(_token(x_up, resize_patch_embed(w, new, 'bilinear'))) > 0.3


def test_pi_resize_float32_exact_upsampling():
    torch.manual_seed(1)
    w = torch.randn(8, 3, 32, 32)
    x = torch.randn(2, 3, 32, 32)
    x_up = F.interpolate(x, size=(48, 48), mode='bilinear', align_corners=False)
    ref = _token(x, w)
    assert ((_token(x_up, resize_patch_embed(w, 48)) - ref).norm() / ref.norm()) < 1e-5


@pytest.mark.parametrize('old,new', [(32, n) for n in (8, 10, 12, 15, 16, 24, 30, 48, (16, 8))]
                         # the digits experiments' sizes (48-px input): stores 24 and 32, p 4 ... 24
                         + [(24, n) for n in (4, 6, 8, 12, 16)] + [(32, n) for n in (4, 6)])
def test_pi_resize_matches_timm(old, new):
    """timm's resample_patch_embed is big_vision's PI-resize (pinv of the non-antialiased resize basis)."""
    torch.manual_seed(0)
    w = torch.randn(6, 3, old, old)
    size = [new, new] if isinstance(new, int) else list(new)
    ref = resample_patch_embed(w, size, interpolation='bilinear', antialias=False)
    out = resize_patch_embed(w, new)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 1e-4 * ref.abs().max()


def test_pi_resize_downsampling_is_least_squares():
    """Downsampling: the PI kernel minimises E||<x,w> - <Bx,w'>||^2 for x ~ N(0, I);
    any perturbation of it does worse."""
    torch.manual_seed(0)
    w = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    wn = resize_patch_embed(w, 8)
    b = bilinear_matrix(16, 8)
    loss = lambda v: ((b.T @ v.reshape(-1) - w.reshape(-1)) ** 2).sum()
    base = loss(wn)
    for _ in range(5):
        assert loss(wn + 1e-3 * torch.randn_like(wn)) > base
    assert loss(resize_patch_embed(w, 8, 'bilinear')) > base


def test_bilinear_matrix_is_half_pixel_bilinear():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 7, 9, dtype=torch.float64)
    for new, aa in (((13, 5), False), ((5, 4), True), ((21, 27), False)):
        ref = F.interpolate(x, size=new, mode='bilinear', align_corners=False, antialias=aa)
        out = (bilinear_matrix((7, 9), new, aa) @ x.reshape(3, -1).T).T.reshape(ref.shape)
        assert torch.allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize('old,grid', [(7, g) for g in (5, 6, 8, 10, 15, 24, 30, (10, 4))]
                         + [(6, g) for g in (12, 8, 4, 3, 2)])  # the digits FlexiViT's grid 6 to 48 / p
def test_pos_resize_matches_timm(old, grid):
    torch.manual_seed(0)
    pos = torch.randn(1, old * old, 16)
    g = (grid, grid) if isinstance(grid, int) else grid
    ref = resample_abs_pos_embed(pos, list(g), (old, old), num_prefix_tokens=0, interpolation='bilinear',
                                 antialias=True)
    assert (resize_pos_embed(pos, old, g) - ref).abs().max() < 1e-5


def test_pi_aa_is_pi_when_enlarging_and_reads_every_pixel_when_shrinking():
    """'pi_aa' = least squares against the antialiased basis: the same as 'pi' when enlarging; when
    shrinking a 24x24 store, 'pi' reads 1/9 of the stored pixels at p = 4 and 8 (disjoint sets), 'pi_aa'
    all of them."""
    assert torch.allclose(kernel_resize_matrix(8, 24, 'pi_aa'), kernel_resize_matrix(8, 24, 'pi'), atol=1e-12)
    reads = {(m, p): (kernel_resize_matrix(24, p, m).abs() > 1e-9).any(0) for m in ('pi', 'pi_aa') for p in (4, 8)}
    assert reads['pi', 4].sum() == reads['pi', 8].sum() == 64 and not (reads['pi', 4] & reads['pi', 8]).any()
    assert reads['pi_aa', 4].all() and reads['pi_aa', 8].all()
    torch.manual_seed(0)
    w = torch.randn(1, 1, 24, 24, dtype=torch.float64)
    # p = 12 from the 24 store: exactly the 2x2 sum-pool of the stored kernel (tied to p = 24's, no freedom)
    assert torch.allclose(resize_patch_embed(w, 12, 'pi'), 4 * F.avg_pool2d(w, 2), atol=1e-12)
    b = bilinear_matrix(24, 8, antialias=True)
    loss = lambda v: ((b.T @ v.reshape(-1) - w.reshape(-1)) ** 2).sum()
    wn = resize_patch_embed(w, 8, 'pi_aa')
    assert all(loss(wn + 1e-3 * torch.randn_like(wn)) > loss(wn) for _ in range(5))
    assert loss(resize_patch_embed(w, 8, 'pi')) > loss(wn)


def test_matrices_are_cached_not_recomputed():
    a = pi_resize_matrix(32, 40)
    assert pi_resize_matrix(32, 40) is a
    assert kernel_resize_matrix(32, 40, 'pi') is a
    assert a.dtype == torch.float64


def test_half_precision_kernel_is_resized_in_float32():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 32, 32)
    out = resize_patch_embed(w.half(), 12)
    assert out.dtype == torch.float16
    assert torch.allclose(out.float(), resize_patch_embed(w, 12), rtol=1e-2, atol=1e-2)


def test_bad_mode_and_shapes():
    with pytest.raises(ValueError, match='unknown kernel resize mode'):
        kernel_resize_matrix(32, 16, 'nearest')
    with pytest.raises(ValueError, match='expected 7x7'):
        resize_pos_embed(torch.zeros(1, 50, 4), 7, 5)


@pytest.mark.parametrize('first', ['inference_mode', 'no_grad'])
def test_resize_caches_survive_every_autograd_mode(first):
    """Issue 12: a matrix first built under inference_mode (or no_grad) must serve training later."""
    from flexitransfer.models.backbones import FlexiViT
    clear_caches()
    ctx = torch.inference_mode if first == 'inference_mode' else torch.no_grad
    m = FlexiViT(arch=dict(embed_dims=32, num_layers=1, num_heads=2), patch_size=16).eval()
    x = torch.randn(2, 3, 48, 48)
    with ctx():
        ref = m(x)[0].clone()
        w_first = resize_patch_embed(m.patch_embed.weight, 8)  # ops directly, other sizes
        pos_first = resize_pos_embed(m.pos_embed, 7, 6)
    m.train()
    out = m(x)[0]
    out.sum().backward()  # raised "Inference tensors cannot be saved for backward" before the fix
    assert m.patch_embed.weight.grad is not None and m.pos_embed.grad.abs().sum() > 0
    torch.testing.assert_close(out.detach(), ref, rtol=0, atol=0)
    w = m.patch_embed.weight
    w_now = resize_patch_embed(w, 8)
    w_now.sum().backward()
    torch.testing.assert_close(w_now.detach(), w_first, rtol=0, atol=0)
    pos = resize_pos_embed(m.pos_embed, 7, 6)
    (pos * 2).sum().backward()
    torch.testing.assert_close(pos.detach(), pos_first, rtol=0, atol=0)
    # a locked tower (no trainable embedding) fed an input that needs grad: the cached kernel is saved for backward
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        m(x)
    xg = x.clone().requires_grad_(True)
    m(xg)[0].sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_resize_caches_are_per_device_and_dtype():
    clear_caches()
    w = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    ref = resize_patch_embed(w, 12)
    for dt, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)):
        out = resize_patch_embed(w.to(dt), 12)
        assert out.dtype == dt
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    assert resize_patch_embed(w, 12).dtype == torch.float64  # the float64 matrix is not replaced by the others
    meta = resize_patch_embed(w.float().to('meta'), 12)
    assert meta.device.type == 'meta' and meta.shape == (4, 3, 12, 12)
    pm = resize_pos_embed(torch.zeros(1, 49, 8, device='meta'), 7, 5)
    assert pm.device.type == 'meta' and pm.shape == (1, 25, 8)
