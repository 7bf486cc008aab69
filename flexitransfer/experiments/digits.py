"""The digits experiment's parts, one copy: scikit-learn's handwritten digits (1797 8x8 images)
upsampled to 48x48, a 4-layer FlexiViT classifier, its trainer and evaluation, and saving a trained
model as an ordinary config + checkpoint pair.

The headline figure (:func:`run_digits`, ``tools/reproduce_digits.py``): a plain ViT trained at one patch
size, evaluated at every patch size with its kernel PI-resized (the paper's fair baseline) and with plain
bilinear resize (naive), beside a FlexiViT (same network) trained with a random patch size per step.
The parts are also used by :mod:`.transfer` (``tools/reproduce_transfer.py``) and :mod:`.adaptive`
(``tools/reproduce_adaptive.py``). Random patch sizes are drawn with the engine's ``draw_patch_size``
(a function of (seed, step), like ``RandomPatchSizeHook``).
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.patch_size import draw_patch_size
from ..models.backbones import FlexiViT
from ..reporting import markdown_table, patch_axis, save_figure, write_table

PATCHES = [4, 6, 8, 12, 16, 24]  # grids 12, 8, 6, 4, 3, 2 on 48x48
IMG = 48
# the FlexiViT's stored kernel size (the smallest patch: docs/results/digits_dip.md) and position grid
FLEXI_STORE = (4, 6)


class Net(nn.Module):
    def __init__(self, base_patch, base_grid, patch, kernel_resize='pi', pos_resize_antialias=True):
        super().__init__()
        self.backbone = FlexiViT(arch=dict(embed_dims=64, num_layers=4, num_heads=4), in_channels=1,
                                 patch_size=patch, base_patch_size=base_patch, base_pos_grid=base_grid,
                                 kernel_resize=kernel_resize, pos_resize_antialias=pos_resize_antialias,
                                 out_type='cls_token')
        self.backbone.init_weights()
        self.head = nn.Linear(64, 10)

    def forward(self, x, p=None):
        return self.head(self.backbone(x, p)[0])


def flexi_net(patch: int = 8) -> Net:
    """The digits FlexiViT (stored kernel and position grid ``FLEXI_STORE``, PI-resize)."""
    return Net(*FLEXI_STORE, patch)


def random_patch_fn(seed: int, patches=PATCHES, probs=None) -> Callable[[int], int]:
    """FlexiViT training: the patch size of step ``s`` is ``draw_patch_size(s, patches, probs, seed)``
    (``probs`` None: uniform over ``patches``)."""
    return lambda step: int(draw_patch_size(step, list(patches), probs, seed=seed))


def load_digits_48(seed):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # [0, 16] -> [-1, 1]
    x = F.interpolate(x, size=(IMG, IMG), mode='bilinear', align_corners=False)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return (x[:1300], y[:1300]), (x[1300:], y[1300:])


def augment(x, g):
    """Random translation by up to 4 pixels (pad with background)."""
    dx, dy = torch.randint(-4, 5, (2,), generator=g).tolist()
    x = F.pad(x, (4, 4, 4, 4), value=-1.0)
    return x[..., 4 + dy:4 + dy + IMG, 4 + dx:4 + dx + IMG]


def train(model, data, epochs, patch_fn, seed, desc, lr=1e-3, before_step: Optional[Callable[[int], None]] = None,
          optimizer: Optional[Callable[[int], tuple]] = None, clip: Optional[float] = None):
    """AdamW + one-cycle, batch 64, translation augmentation; ``patch_fn(step)`` is the step's patch size
    (``None``: whatever the backbone is set to, e.g. a mixed-patch policy ``before_step(step)`` sets).
    ``optimizer(steps)``, if given, returns the ``(optimizer, scheduler)`` to use instead (a fine-tuning
    recipe); ``clip``: clip the gradient norm to it before each step."""
    from tqdm import tqdm
    (x, y), g = data, torch.Generator().manual_seed(seed)
    steps = epochs * (len(y) // 64)
    if steps < 4:
        raise ValueError(f'{desc}: {epochs} epoch(s) of {len(y)} images is {steps} step(s) of batch 64; the '
                         'one-cycle schedule needs at least 4: raise the epochs')
    if optimizer is None:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
        # 10 % warm-up; at least 2 steps of it, or OneCycleLR divides by a zero-length phase (short smoke runs)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=max(0.1, 2 / steps))
    else:
        opt, sched = optimizer(steps)
    model.train()
    step = 0
    for _ in tqdm(range(epochs), desc=desc, leave=False):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y) - 63, 64):
            idx = perm[i:i + 64]
            if before_step is not None:
                before_step(step)
            loss = F.cross_entropy(model(augment(x[idx], g), patch_fn(step)), y[idx])
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            step += 1
    return model.eval()


@torch.no_grad()
def accuracy(model, data, p):
    x, y = data
    return (model(x, p).argmax(-1) == y).float().mean().item() * 100


CONFIG_TEMPLATE = """# Written by tools/reproduce_digits.py: its {name} as a FlexiImageClassifier on the digits
# test images (PNGs under {root}/test/<digit>/; pixel = round((x + 1) * 127.5) of the model input x).
default_scope = 'mmengine'
custom_imports = dict(imports=['flexitransfer'], allow_failed_imports=False)
img_size = {img}
model = dict(
    type='FlexiImageClassifier', num_classes=10, pool='tok', head_zero_init=False,
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[127.5], std=[127.5]),
    backbone=dict(type='FlexiViT', arch=dict(embed_dims=64, num_layers=4, num_heads=4), in_channels=1,
                  patch_size={patch}, base_patch_size={base_patch}, base_pos_grid={base_grid},
                  kernel_resize={kernel_resize!r}))
test_pipeline = [dict(type='LoadImageFromFile', color_type='grayscale'), dict(type='PackClsInputs')]
test_dataloader = dict(batch_size=128, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(type='ImageFolderDataset', data_root={root!r}, data_prefix='test',
                                    pipeline=test_pipeline))
test_evaluator = dict(type='ClsAccuracy', topk=(1,))
test_cfg = dict(type='MultiPatchTestLoop', patch_sizes={patches})
"""


def save_test_images(data, root):
    """The test set as 8-bit PNGs, ``root/test/<digit>/<index>.png`` (ImageFolderDataset layout)."""
    import cv2
    x, y = data
    pix = ((x[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    for i, (img, label) in enumerate(zip(pix, y.tolist())):
        d = osp.join(root, 'test', str(label))
        os.makedirs(d, exist_ok=True)
        cv2.imwrite(osp.join(d, f'{i:04d}.png'), img)


def save_model(model, root, name, patch, meta: Optional[dict] = None):
    """``root/name.pth`` (state dict with backbone.* / head.*) and ``root/name.py`` (its config)."""
    bb = model.backbone
    torch.save({'state_dict': model.state_dict(), 'meta': {'source': 'tools/reproduce_digits.py', **(meta or {})}},
               osp.join(root, name + '.pth'))
    with open(osp.join(root, name + '.py'), 'w') as f:
        f.write(CONFIG_TEMPLATE.format(name=name, root=osp.abspath(root), img=IMG, patch=patch,
                                       base_patch=bb.base_patch_size[0], base_grid=bb.base_pos_grid[0],
                                       kernel_resize=bb.kernel_resize, patches=PATCHES))


def load_saved_flexi(root: str, name: str = 'flexivit') -> Optional[Net]:
    """The FlexiViT a previous ``tools/reproduce_digits.py`` run saved under ``root`` (None if absent)."""
    path = osp.join(root, name + '.pth')
    if not osp.isfile(path):
        return None
    sd = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    # the stored kernel and grid as saved (a model saved before the store changed loads as it was trained)
    store, grid = sd['backbone.patch_embed.weight'].shape[-1], round(sd['backbone.pos_embed'].shape[1] ** 0.5)
    model = Net(store, grid, 8)
    model.load_state_dict(sd)
    return model.eval()


def float_formats(rows) -> dict:
    """The cell formats of a table of accuracies in %.

    Args:
        rows: the table (dicts); the first row's float columns are the accuracies.

    Returns:
        ``{column: '{:.1f}'}`` for each of them (``markdown_table``'s ``formats``).
    """
    return {k: '{:.1f}' for k, v in rows[0].items() if isinstance(v, float)}


def run_digits(epochs: int = 100, vit_patch: int = 8, seed: int = 0,
               out: str = 'work_dirs/reproduce_digits/reproduce_digits', save_dir: str = 'work_dirs/reproduce_digits',
               flexi_only: bool = False, threads: Optional[int] = 1) -> str:
    """Train the ViT at ``vit_patch`` and the FlexiViT, evaluate both at every patch size, save the models.

    Prints the table; writes ``OUT.md`` (with its provenance), ``OUT.csv`` and ``OUT.png`` (paths as given,
    relative to the working directory), and under ``save_dir`` the trained models as config + checkpoint
    pairs (``flexivit.py/.pth``, ``vit_p<P>.py/.pth``) with the test images as PNGs.

    Args:
        epochs: training epochs of each model.
        vit_patch: the plain ViT's training patch size.
        seed: data split, initialisation, batch order, augmentation and patch draws.
        out: OUT, without the extension.
        save_dir: where the trained models and the test PNGs go.
        flexi_only: train only the FlexiViT (the same one as the full run): print its column and save it,
            leave OUT alone.
        threads: torch's intra-op threads (1: the published numbers; another count sums in another order,
            other bits); None leaves torch's setting.

    Returns:
        The Markdown printed (description and table).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tr, te = load_digits_48(seed)

    models = {}
    if not flexi_only:
        vit = train(Net(vit_patch, IMG // vit_patch, vit_patch), tr, epochs, lambda s: vit_patch, seed,
                    f'ViT/{vit_patch}')
        vit_bilinear = Net(vit_patch, IMG // vit_patch, vit_patch, kernel_resize='bilinear').eval()
        vit_bilinear.load_state_dict(vit.state_dict())
        models.update({f'ViT/{vit_patch} + PI-resize': vit, f'ViT/{vit_patch} + bilinear': vit_bilinear})
    torch.manual_seed(seed)
    flexi = train(flexi_net(8), tr, epochs, random_patch_fn(seed), seed, 'FlexiViT')
    models['FlexiViT'] = flexi

    rows = [{'patch': p, 'tokens': (IMG // p) ** 2, **{k: accuracy(m, te, p) for k, m in models.items()}}
            for p in PATCHES]
    keys = list(rows[0])
    about = (f'sklearn digits upsampled to {IMG}x{IMG}, {len(tr[1])} train / {len(te[1])} test images, '
             f'{epochs} epochs, 4-layer ViT (64 dims); test top-1 (%)')
    text = about + '\n\n' + markdown_table(rows, keys, float_formats(rows))
    print(text)
    os.makedirs(save_dir, exist_ok=True)
    save_test_images(te, save_dir)
    save_model(flexi, save_dir, 'flexivit', 8)
    if not flexi_only:
        save_model(vit, save_dir, f'vit_p{vit_patch}', vit_patch)
    print(f'saved the trained model(s) as config + checkpoint and the test images under {save_dir}')
    if flexi_only:
        return text
    write_table(out, rows, keys, float_formats(rows), text_before=about)

    def draw(fig, axes):
        ax = axes[0][0]
        for k, style in zip(keys[2:], ('o-', 's--', '^-')):
            ax.plot([r['patch'] for r in rows], [r[k] for r in rows], style, label=k)
        ax.axvline(vit_patch, color='grey', lw=0.8, ls=':')
        patch_axis(ax, PATCHES, 'patch size at evaluation (48x48 input)')
        ax.set_ylabel('test top-1 (%)')
        ax.set_title('One model for all patch sizes (digits)')
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(draw, out + '.png', size=(6, 4), dpi=120)
    print(f'wrote {out}.md, .csv, .png')
    return text
