"""Image-text retrieval: LiT with a FlexiViT image tower and open_clip's text tower."""
import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from mmengine.config import Config
from mmengine.registry import MODELS
from mmengine.structures import BaseDataElement

from flexitransfer.datasets import CaptionDataset, make_coco_captions_like
from flexitransfer.evaluation import retrieval_metrics


def _brute(sim, owner, ks):
    """Loops and sorts: positives placed after tied negatives (pessimistic)."""
    n, m = sim.shape
    out = {}
    i2t, t2i = [], []
    for i in range(n):
        order = sorted(range(m), key=lambda j: (-sim[i, j], owner[j] == i))
        i2t.append(min(order.index(j) for j in range(m) if owner[j] == i))
    for j in range(m):
        order = sorted(range(n), key=lambda i: (-sim[i, j], i == owner[j]))
        t2i.append(order.index(owner[j]))
    for k in ks:
        out[f'i2t_R@{k}'] = 100 * np.mean([r < k for r in i2t])
        out[f't2i_R@{k}'] = 100 * np.mean([r < k for r in t2i])
    out['i2t_mean_rank'] = np.mean(i2t) + 1
    out['t2i_mean_rank'] = np.mean(t2i) + 1
    return out


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_recall_matches_brute_force_with_ties_and_many_captions(seed):
    rng = np.random.default_rng(seed)
    n = 12
    owner = np.concatenate([np.full(int(rng.integers(1, 6)), i) for i in range(n)])  # 1..5 captions each
    img = rng.integers(-2, 3, size=(n, 3)).astype(float)  # small integers: many exact ties
    txt = rng.integers(-2, 3, size=(len(owner), 3)).astype(float)
    got = retrieval_metrics(img, txt, owner, ks=(1, 2, 5))
    ref = _brute(img @ txt.T, owner, (1, 2, 5))
    for k, v in ref.items():
        assert got[k] == pytest.approx(v), k
    assert got['mean_R@1'] == pytest.approx((ref['i2t_R@1'] + ref['t2i_R@1']) / 2)


def test_perfect_and_reversed_retrieval():
    img = np.eye(4)
    txt = np.repeat(np.eye(4), 2, axis=0)
    owner = np.repeat(np.arange(4), 2)
    m = retrieval_metrics(img, txt, owner, ks=(1,))
    assert m['i2t_R@1'] == m['t2i_R@1'] == 100 and m['i2t_mean_rank'] == 1
    m = retrieval_metrics(img, -txt, owner, ks=(1,))
    assert m['i2t_R@1'] == 0 and m['t2i_mean_rank'] == 4


@pytest.fixture(scope='module')
def caption_data(tmp_path_factory):
    return make_coco_captions_like(str(tmp_path_factory.mktemp('coco')), num_train=400, num_val=60)


def test_caption_formats(caption_data, tmp_path):
    coco = CaptionDataset(caption_data, 'annotations/captions_val2017.json', 'val2017', format='coco')
    kp = {s: CaptionDataset(caption_data, 'annotations/dataset_coco.json', format='karpathy', split=s)
          for s in ('train', 'val', 'test')}
    assert len(coco) == 60 and [len(kp[s]) for s in ('train', 'val', 'test')] == [400, 30, 30]
    path, caps, img_id = coco.samples[0]
    assert osp.isfile(path) and len(caps) == 5 and img_id == 1_000_000
    assert kp['val'].samples[0][1] == caps  # both formats agree on the same image
    d = json.load(open(osp.join(caption_data, 'annotations/dataset_coco.json')))
    d['images'][0]['split'] = 'restval'
    json.dump(d, open(tmp_path / 'kp.json', 'w'))
    assert len(CaptionDataset(caption_data, str(tmp_path / 'kp.json'), format='karpathy', split='train')) == 400
    ds = CaptionDataset(caption_data, 'annotations/dataset_coco.json', format='karpathy', split='train',
                        train_mode=True, pipeline=[dict(type='LoadImageFromFile'),
                                                   dict(type='PackImageInputs', keys=('caption', 'captions'))])
    drawn = {ds[0]['data_samples'].caption for _ in range(40)}
    assert len(drawn) > 1 and drawn <= set(ds.samples[0][1])
    (tmp_path / 'bad.json').write_text('{"images": [], ')
    with pytest.raises(ValueError, match='broken caption annotation file.*not valid JSON'):
        CaptionDataset(caption_data, str(tmp_path / 'bad.json'))
    (tmp_path / 'bad2.json').write_text('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 3}]}')
    with pytest.raises(ValueError, match=r'annotations\[0\] lacks "image_id" / "caption"'):
        CaptionDataset(caption_data, str(tmp_path / 'bad2.json'))


def _small_clip():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    torch.manual_seed(0)
    return CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32),
                text_cfg=CLIPTextCfg(context_length=24, width=48, heads=2, layers=2)).eval()


def test_text_tower_loads_open_clip_weights(tmp_path):
    import open_clip
    clip = _small_clip()
    path = tmp_path / 'clip.pt'
    torch.save(clip.state_dict(), path)
    tower = MODELS.build(dict(type='OpenCLIPTextTower', width=48, heads=2, layers=2, context_length=24,
                              output_dim=32, checkpoint=str(path)))
    tower.init_weights()
    texts = ['a red circle above a blue square', 'a photo of a dog']
    tokens = open_clip.tokenize(texts, context_length=24)
    assert torch.equal(tower.tokenize(texts), tokens)
    with torch.no_grad():
        assert (tower(texts) - clip.encode_text(tokens)).abs().max() < 1e-5
    bad = MODELS.build(dict(type='OpenCLIPTextTower', width=64, heads=2, layers=2, context_length=24,
                            output_dim=32, checkpoint=str(path)))
    with pytest.raises(Exception, match='size mismatch|does not fit'):
        bad.init_weights()


def _tiny_lit(**kw):
    cfg = Config.fromfile(osp.join(ROOT, 'configs/retrieval/tiny_lit_flexi.py'))
    cfg.model.update(kw)
    m = MODELS.build(cfg.model)
    m.init_weights()
    return m


@pytest.mark.parametrize('loss', ['clip', 'siglip'])
def test_loss_is_open_clips_contrastive_loss(loss):
    torch.manual_seed(0)
    m = _tiny_lit(loss=loss).train()
    x = torch.randn(4, 3, 60, 60)
    caps = ['a red circle', 'a blue square', 'a green triangle', 'a yellow circle']
    samples = [BaseDataElement(caption=c) for c in caps]
    got = m(x, samples, mode='loss')['loss']
    with torch.no_grad():
        img, txt = m.encode_image(x), m.encode_text(caps)
        logits = m.logit_scale.exp() * img @ txt.T
        if loss == 'clip':
            labels = torch.arange(4)
            ref = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        else:
            signs = 2 * torch.eye(4) - 1
            ref = -F.logsigmoid(signs * (logits + m.logit_bias)).sum() / 4
    assert torch.allclose(got, ref, atol=1e-5)


def test_locked_image_tower_is_unchanged_by_training():
    from mmengine.optim import OptimWrapper
    torch.manual_seed(0)
    m = _tiny_lit(lock_image=True)
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    text_before = m.text_tower.text.token_embedding.weight.clone()
    params = [p for p in m.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in m.backbone.parameters())
    ow = OptimWrapper(torch.optim.AdamW(params, lr=1e-2))
    m.train()
    assert not m.backbone.training
    caps = ['a red circle above a blue square', 'a blue square', 'a green triangle and a red circle', 'a yellow x']
    for step in range(3):
        data = {'inputs': [torch.randint(0, 255, (3, 60, 60), dtype=torch.uint8) for _ in range(4)],
                'data_samples': [BaseDataElement(caption=c) for c in caps]}
        m.train_step(data, ow)
    assert all(torch.equal(v, before[k]) for k, v in m.backbone.state_dict().items())
    assert not torch.equal(m.text_tower.text.token_embedding.weight, text_before)


def test_zero_shot_scores_from_templates():
    torch.manual_seed(0)
    zs = dict(classnames=['red', 'blue'], templates=['a {} circle', 'a {} square'])
    m = _tiny_lit(zero_shot=zs).eval()
    x = torch.randn(2, 3, 60, 60)
    with torch.no_grad():
        out = m(x, [BaseDataElement(gt_label=torch.tensor(0)) for _ in range(2)], mode='predict')
        w = torch.stack([F.normalize(m.encode_text([t.format(c) for t in zs['templates']]).mean(0), dim=-1)
                         for c in zs['classnames']])
        ref = (m.logit_scale.exp() * m.encode_image(x) @ w.T).softmax(-1)
    assert torch.allclose(torch.stack([o.pred_score for o in out]), ref, atol=1e-6)


def test_tiny_lit_retrieves_far_above_chance(tmp_path, caption_data):
    """60 val images x 5 captions. Chance R@1: t2i 1/60 = 1.7%, i2t ~5/300 = 1.7%.
    Require mean R@1 (i2t, t2i) > 10% at two patch sizes (measured ~27% at p=12)."""
    work = str(tmp_path)
    opts = [f'train_dataloader.dataset.data_root={caption_data}', f'val_dataloader.dataset.data_root={caption_data}',
            f'test_dataloader.dataset.data_root={caption_data}']
    res = subprocess.run([sys.executable, 'tools/train.py', 'configs/retrieval/tiny_lit_flexi.py', '--work-dir', work,
                          '--cfg-options', *opts], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    out = osp.join(work, 'm.json')
    res = subprocess.run([sys.executable, 'tools/test.py', 'configs/retrieval/tiny_lit_flexi.py',
                          osp.join(work, 'epoch_25.pth'), '--patch', '10', '20', '--work-dir', work, '--out-json', out,
                          '--cfg-options', *opts], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    table = json.load(open(out))['table']
    assert [r['patch'] for r in table] == ['10', '20']
    for r in table:
        assert r['retrieval/mean_R@1'] > 10 and r['retrieval/i2t_R@10'] > 30, table
