"""The digits experiment's parts, one copy: scikit-learn's handwritten digits (1797 8x8 images)
upsampled to 48x48, a 4-layer FlexiViT classifier, its trainer and evaluation, and saving a trained
model as an ordinary config + checkpoint pair.

Used by ``tools/reproduce_digits.py`` (the headline figure), ``tools/reproduce_transfer.py`` and
``tools/reproduce_adaptive.py``. Random patch sizes are drawn with the engine's
``draw_patch_size`` (a function of (seed, step), like ``RandomPatchSizeHook``).
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

PATCHES = [4, 6, 8, 12, 16, 24]  # grids 12, 8, 6, 4, 3, 2 on 48x48
IMG = 48
FLEXI_STORE = (24, 6)  # the FlexiViT's stored kernel size and position grid


class Net(nn.Module):
    def __init__(self, base_patch, base_grid, patch, kernel_resize='pi'):
        super().__init__()
        self.backbone = FlexiViT(arch=dict(embed_dims=64, num_layers=4, num_heads=4), in_channels=1,
                                 patch_size=patch, base_patch_size=base_patch, base_pos_grid=base_grid,
                                 kernel_resize=kernel_resize, out_type='cls_token')
        self.backbone.init_weights()
        self.head = nn.Linear(64, 10)

    def forward(self, x, p=None):
        return self.head(self.backbone(x, p)[0])


def flexi_net(patch: int = 8) -> Net:
    """The digits FlexiViT (stored kernel 24x24, position grid 6x6)."""
    return Net(*FLEXI_STORE, patch)


def random_patch_fn(seed: int, patches=PATCHES) -> Callable[[int], int]:
    """FlexiViT training: the patch size of step ``s`` is ``draw_patch_size(s, patches, seed=seed)``."""
    return lambda step: int(draw_patch_size(step, list(patches), seed=seed))


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


def train(model, data, epochs, patch_fn, seed, desc, lr=1e-3, before_step: Optional[Callable[[int], None]] = None):
    """AdamW + one-cycle, batch 64, translation augmentation; ``patch_fn(step)`` is the step's patch size
    (``None``: whatever the backbone is set to, e.g. a mixed-patch policy ``before_step(step)`` sets)."""
    from tqdm import tqdm
    (x, y), g = data, torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * (len(y) // 64)
    if steps < 4:
        raise ValueError(f'{desc}: {epochs} epoch(s) of {len(y)} images is {steps} step(s) of batch 64; the '
                         'one-cycle schedule needs at least 4: raise the epochs')
    # 10 % warm-up; at least 2 steps of it, or OneCycleLR divides by a zero-length phase (short smoke runs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=max(0.1, 2 / steps))
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
                  patch_size={patch}, base_patch_size={base_patch}, base_pos_grid={base_grid}, kernel_resize='pi'))
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
                                       patches=PATCHES))


def load_saved_flexi(root: str, name: str = 'flexivit') -> Optional[Net]:
    """The FlexiViT a previous ``tools/reproduce_digits.py`` run saved under ``root`` (None if absent)."""
    path = osp.join(root, name + '.pth')
    if not osp.isfile(path):
        return None
    model = flexi_net()
    model.load_state_dict(torch.load(path, map_location='cpu', weights_only=True)['state_dict'])
    return model.eval()
