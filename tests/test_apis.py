"""The one way in (flexitransfer.apis) and the OpenMMLab entry points users already know.

- Strict loading: a checkpoint missing a head tensor is refused, with the tensor's name, by the API
  and by every tool that loads a checkpoint (some loaded it partially in silence before).
- Inference: ``apis.inference_model``, mmseg's ``inference_model`` / ``MMSegInferencer`` and mmdet's
  ``inference_detector`` / ``DetInferencer`` give, on the same image and at the patch the user
  picks, the predictions of tools/test.py's path (config prepared by the API, checkpoint loaded
  strictly, the test dataloader's batch through ``test_step``).
"""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, det_opts, pan_opts, run_tool

SEG = 'configs/seg/tiny_seg_flexi.py'
PAN = 'configs/panoptic/tiny_panoptic_flexi.py'
DET = 'configs/det/tiny_owl_det.py'
DET_CLASSES = ('red', 'green', 'blue', 'yellow')


def _opts_dict(opts):
    """The string-valued --cfg-options (data roots, annotation files) as a dict for load_config."""
    return {k: v for k, v in (o.split('=', 1) for o in opts) if not v.isdigit() and v not in ('True', 'False')}


def _test_path_predictions(config, ckpt, opts, patch):
    """Predictions for the first test batch as tools/test.py computes them (same API calls)."""
    from flexitransfer.apis import build_test_runner, load_config
    from flexitransfer.engine import set_patch_size
    cfg = load_config(osp.join(ROOT, config), _opts_dict(opts))
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    runner = build_test_runner(cfg, ckpt, patch_sizes=[patch], log_level='WARNING')
    set_patch_size(runner.model, patch)
    runner.model.eval()
    batch = next(iter(runner.test_dataloader))
    with torch.no_grad():
        preds = runner.model.test_step(batch)
    return preds[0], preds[0].img_path


# ----------------------------------------------------------------------------- strict loading
def _checkpoint_without(config, path, drop_prefix, cfg_options=None):
    """A checkpoint of ``config``'s model (random weights) lacking the tensors under ``drop_prefix``."""
    from flexitransfer.apis import init_model
    model = init_model(osp.join(ROOT, config), cfg_options=cfg_options)
    state = model.state_dict()
    dropped = sorted(k for k in state if k.startswith(drop_prefix))
    assert dropped, (drop_prefix, list(state)[:10])
    torch.save({'state_dict': {k: v for k, v in state.items() if k not in dropped}, 'meta': {}}, path)
    return dropped[0]


@pytest.fixture(scope='module')
def seg_without_head(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('broken') / 'seg_no_head.pth')
    return path, _checkpoint_without(SEG, path, 'decode_head.')


def test_init_model_is_strict(seg_without_head, tmp_path):
    from flexitransfer.apis import init_model
    path, name = seg_without_head
    with pytest.raises(ValueError, match=rf"lacks \d+ of this .*{name.replace('.', '[.]')}"):
        init_model(osp.join(ROOT, SEG), path)
    model = init_model(osp.join(ROOT, SEG), path, strict=False)  # opting out loads what is there
    assert model.training is False
    # an unexpected tensor is refused too (a checkpoint of another config)
    state = torch.load(path, weights_only=True)['state_dict']
    full = init_model(osp.join(ROOT, SEG)).state_dict()
    state.update({k: v for k, v in full.items() if k not in state}, **{'extra_head.weight': torch.zeros(3)})
    other = str(tmp_path / 'extra.pth')
    torch.save({'state_dict': state}, other)
    with pytest.raises(ValueError, match='extra_head.weight'):
        init_model(osp.join(ROOT, SEG), other)


def _run_failing(*args, timeout=600):
    res = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode != 0, f'{args[0]} accepted a checkpoint that lacks tensors:\n{res.stdout[-1500:]}'
    return res.stdout + res.stderr


TOOLS = {
    'test': lambda c, img, out: ['tools/test.py', SEG, c, '--patch', '8', '--work-dir', out],
    'resize_deploy': lambda c, img, out: ['tools/resize_deploy.py', SEG, c, '--patch', '8', '--out', out],
    'analyze': lambda c, img, out: ['tools/analyze.py', SEG, c, '--patch', '8', '24', '--images', img, img, img, img,
                                    '--out', out],
    'benchmark': lambda c, img, out: ['tools/benchmark.py', '--model', 'seg', SEG, c, '--patch', '24', '--runs', '1',
                                      '--out', osp.join(out, 'bench')],
    'deploy_evaluate': lambda c, img, out: ['-c', 'import sys; sys.path.insert(0, "."); import flexitransfer; '
                                            'from flexitransfer.apis import load_config; '
                                            'from flexitransfer.deploy import evaluate_onnx; '
                                            f'evaluate_onnx(load_config("{SEG}"), "{c}", patch_sizes=[8])'],
}


@pytest.mark.parametrize('tool', sorted(TOOLS))
def test_every_tool_refuses_a_checkpoint_missing_a_head_tensor(tool, seg_without_head, seg_toy_data, tmp_path):
    path, name = seg_without_head
    img = osp.join(seg_toy_data, 'images', 'validation', sorted(os.listdir(osp.join(seg_toy_data, 'images',
                                                                                   'validation')))[0])
    log = _run_failing(*TOOLS[tool](path, img, str(tmp_path)))
    assert name in log and 'lacks' in log, log[-3000:]


@pytest.mark.parametrize('tool', ['detect', 'panoptic_overlay'])
def test_detection_tools_refuse_a_checkpoint_missing_a_head_tensor(tool, tmp_path, pan_toy):
    config, prefix = (DET, 'box_head.') if tool == 'detect' else (PAN, 'panoptic_head.cls_embed')
    path = str(tmp_path / 'broken.pth')
    name = _checkpoint_without(config, path, prefix)
    img = osp.join(pan_toy, 'val2017', sorted(os.listdir(osp.join(pan_toy, 'val2017')))[0])
    args = (['tools/detect.py', img, '--queries', 'red', '--checkpoint', path, '--out', str(tmp_path / 'o.png')]
            if tool == 'detect' else ['tools/panoptic_overlay.py', PAN, path, img, '--out', str(tmp_path)])
    log = _run_failing(*args)
    assert name in log and 'lacks' in log, log[-3000:]


# ----------------------------------------------------------------------------- inference, every entry point
def test_segmentation_entry_points_match_the_test_path(trained_seg, seg_toy_data):
    """apis / mmseg inference_model / MMSegInferencer at p = 8 on a file and as an array: the labels
    tools/test.py's path predicts for that image (and another patch gives other labels)."""
    import mmcv
    from mmseg.apis import MMSegInferencer
    from mmseg.apis import inference_model as mmseg_inference
    from mmseg.apis import init_model as mmseg_init

    from flexitransfer.apis import inference_model, init_model, set_patch_size
    ckpt, _ = trained_seg
    ref, img = _test_path_predictions(SEG, ckpt, [f'test_dataloader.dataset.data_root={seg_toy_data}'], 8)
    want = ref.pred_sem_seg.data
    model = init_model(osp.join(ROOT, SEG), ckpt, patch_size=8)
    got = {'apis file': inference_model(model, img).pred_sem_seg.data,
           'apis array': inference_model(model, mmcv.imread(img)).pred_sem_seg.data}
    at24 = inference_model(model, img, patch_size=24).pred_sem_seg.data
    assert tuple(model.backbone.patch_size) == (8, 8)  # a per-call patch is restored after the call
    mm = mmseg_init(osp.join(ROOT, SEG), ckpt, device='cpu')
    set_patch_size(mm, 8)
    got['mmseg inference_model'] = mmseg_inference(mm, img).pred_sem_seg.data
    inferencer = MMSegInferencer(model=osp.join(ROOT, SEG), weights=ckpt, device='cpu')
    set_patch_size(inferencer.model, 8)
    got['MMSegInferencer'] = inferencer(img, return_datasamples=True).pred_sem_seg.data
    for k, v in got.items():
        assert torch.equal(v, want), k
    assert len(torch.unique(want)) > 1 and not torch.equal(at24, want)


def test_panoptic_entry_points_match_the_test_path(tiny_pan_ckpt, pan_toy):
    from mmdet.apis import DetInferencer, inference_detector, init_detector

    from flexitransfer.apis import inference_model, init_model, set_patch_size
    ref, img = _test_path_predictions(PAN, tiny_pan_ckpt, pan_opts(pan_toy), 12)
    want = ref.pred_panoptic_seg.sem_seg
    model = init_model(osp.join(ROOT, PAN), tiny_pan_ckpt, patch_size=12)
    got = {'apis': inference_model(model, img).pred_panoptic_seg.sem_seg}
    mm = init_detector(osp.join(ROOT, PAN), tiny_pan_ckpt, device='cpu',
                       cfg_options=_opts_dict(pan_opts(pan_toy)))
    set_patch_size(mm, 12)
    got['mmdet inference_detector'] = inference_detector(mm, img).pred_panoptic_seg.sem_seg
    inferencer = DetInferencer(model=osp.join(ROOT, PAN), weights=tiny_pan_ckpt, device='cpu', show_progress=False)
    set_patch_size(inferencer.model, 12)
    res = inferencer(img, return_datasamples=True, no_save_vis=True, no_save_pred=True)
    got['DetInferencer'] = res['predictions'][0].pred_panoptic_seg.sem_seg
    for k, v in got.items():
        assert torch.equal(v, want), k
    assert len(torch.unique(want)) > 2


def test_detection_entry_points_match_the_test_path(trained_det, det_data):
    """Open-vocabulary detection with the queries as texts: apis (texts=...), mmdet's
    inference_detector (text_prompt in mmdet's 'a . b .' convention) and DetInferencer (texts=...)."""
    from mmdet.apis import DetInferencer, inference_detector, init_detector

    from flexitransfer.apis import inference_model, init_model, set_patch_size
    ckpt, _ = trained_det
    opts = det_opts(det_data, osp.join(det_data, 'annotations', 'instances_val2017.json'))
    ref, img = _test_path_predictions(DET, ckpt, opts, 16)
    want = ref.pred_instances
    model = init_model(osp.join(ROOT, DET), ckpt, patch_size=16)
    got = {'apis': inference_model(model, img, texts=DET_CLASSES).pred_instances}
    mm = init_detector(osp.join(ROOT, DET), ckpt, device='cpu', cfg_options=_opts_dict(opts))
    set_patch_size(mm, 16)
    got['mmdet inference_detector'] = inference_detector(mm, img, text_prompt=' . '.join(DET_CLASSES) + ' .'
                                                         ).pred_instances
    inferencer = DetInferencer(model=osp.join(ROOT, DET), weights=ckpt, device='cpu', show_progress=False)
    set_patch_size(inferencer.model, 16)
    res = inferencer(img, texts=' . '.join(DET_CLASSES), return_datasamples=True, no_save_vis=True,
                     no_save_pred=True)
    got['DetInferencer'] = res['predictions'][0].pred_instances
    assert len(want) > 0
    for k, v in got.items():
        assert torch.equal(v.labels, want.labels), k
        torch.testing.assert_close(v.scores, want.scores, atol=1e-5, rtol=0, msg=k)
        torch.testing.assert_close(v.bboxes, want.bboxes, atol=1e-3, rtol=0, msg=k)


def test_inferencers_find_their_scope_registries(tmp_path):
    """MMSegInferencer / DetInferencer on our configs logged mmengine's "Failed to search registry with scope
    ... in the 'function' registry tree" (mmseg and mmdet declare no FUNCTIONS registry); no more."""
    import logging

    from mmdet.apis import DetInferencer
    from mmengine.logging import MMLogger
    from mmseg.apis import MMSegInferencer
    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    MMLogger.get_instance(f'inferencers_{tmp_path.name}').addHandler(handler)  # mmengine's current logger now
    seg = MMSegInferencer(model=osp.join(ROOT, SEG), weights=None, device='cpu')
    seg(np.zeros((120, 120, 3), np.uint8), return_datasamples=True)
    det = DetInferencer(model=osp.join(ROOT, DET), weights=None, device='cpu', show_progress=False)
    det(np.zeros((96, 96, 3), np.uint8), texts=' . '.join(DET_CLASSES), return_datasamples=True, no_save_vis=True,
        no_save_pred=True)
    assert not [m for m in said if 'Failed to search registry' in m], said


def test_classification_and_lit_inference(tmp_path):
    """inference_model returns each task's data samples (random weights: the contract, not the accuracy):
    classification scores sum to one and agree with the model's logits; LiT with texts scores them."""
    from flexitransfer.apis import inference_model, init_model
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    cls = init_model(osp.join(ROOT, 'configs/cls/tiny_cls_flexi.py'), patch_size=10)
    torch.nn.init.normal_(cls.head.weight)
    s = inference_model(cls, img)
    x = cls.data_preprocessor({'inputs': [torch.from_numpy(
        __import__('cv2').resize(img, (60, 60)).transpose(2, 0, 1).copy())]}, False)['inputs']
    with torch.no_grad():
        want = cls(x, mode='tensor').softmax(-1)[0]
    torch.testing.assert_close(s.pred_score, want, atol=1e-5, rtol=0)
    lit = init_model(osp.join(ROOT, 'configs/retrieval/tiny_lit_flexi.py'))
    img60 = img[:60, :60]  # the tiny LiT's test pipeline does not resize
    out = inference_model(lit, [img60, img60], texts=['a red circle', 'a blue square'])
    assert len(out) == 2 and out[0].pred_score.shape == (2,) and abs(float(out[0].pred_score.sum()) - 1) < 1e-5
    torch.testing.assert_close(out[0].img_emb, out[1].img_emb)


def test_init_model_reads_a_whole_model_safetensors_file(tmp_path):
    """A trained model shared as model.safetensors (the hubs' format) loads through the same strict path."""
    from safetensors.torch import save_file

    from flexitransfer.apis import init_model
    src = init_model(osp.join(ROOT, SEG))
    path = str(tmp_path / 'model.safetensors')
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, path)
    got = init_model(osp.join(ROOT, SEG), path)
    for k, v in src.state_dict().items():
        assert torch.equal(v, got.state_dict()[k]), k
    save_file({k: v.contiguous() for k, v in src.state_dict().items() if not k.startswith('decode_head.')}, path)
    with pytest.raises(ValueError, match='lacks'):
        init_model(osp.join(ROOT, SEG), path)


def test_two_evaluations_in_one_second_do_not_share_a_visualizer(monkeypatch, tmp_path):
    """mmengine names a config-less visualizer by the second its runner starts: a second quick
    evaluation reused the first one's (deleted) temporary directory and failed writing its config."""
    import time

    from flexitransfer.apis import build_test_runner, load_config
    monkeypatch.setattr(time, 'strftime', lambda *a, **k: '20260101_000000')  # both runners in "one second"
    cfg = load_config(osp.join(ROOT, 'configs/cls/tiny_cls_flexi.py'))
    path = str(tmp_path / 'cls.pth')
    from flexitransfer.apis import init_model
    torch.save({'state_dict': init_model(cfg).state_dict()}, path)
    names = []
    for i in range(2):
        runner = build_test_runner(cfg, path, work_dir=str(tmp_path / f'w{i}'), log_level='WARNING')
        names.append(runner.visualizer.instance_name)
    assert names[0] != names[1]


def test_one_unit_for_every_metric_percent():
    """mmdet's COCO / the LVIS metric give fractions; every report here (test table, --out-json, benchmark) percent."""
    from flexitransfer.evaluation.main_metric import main_metric, to_percent
    m = {'coco/bbox_mAP': 0.082, 'coco/bbox_mAP_50': 0.31, 'coco/red_precision': 0.5, 'lvis/AP': 0.1, 'lvis/APr': 0.2,
         'mIoU': 92.64, 'coco_panoptic/PQ': 71.1, 'accuracy/top1': 100.0, 'retrieval/mean_R@1': 25.67}
    out = to_percent(m)
    assert out['coco/bbox_mAP'] == pytest.approx(8.2) and out['coco/bbox_mAP_50'] == pytest.approx(31)
    assert out['coco/red_precision'] == 50 and out['lvis/AP'] == pytest.approx(10) and out['lvis/APr'] == 20
    assert {k: out[k] for k in ('mIoU', 'coco_panoptic/PQ', 'accuracy/top1', 'retrieval/mean_R@1')} == \
        {k: m[k] for k in ('mIoU', 'coco_panoptic/PQ', 'accuracy/top1', 'retrieval/mean_R@1')}
    assert main_metric(to_percent({'coco/bbox_mAP_50': 0.3, 'coco/bbox_mAP': 0.082})) == 'coco/bbox_mAP'


def test_quiet_console_keeps_progress_and_the_log_file_keeps_everything(tmp_path):
    import logging

    from mmengine.logging import MMLogger

    from flexitransfer.engine.console import quiet_console
    logger = MMLogger.get_instance('quiet_test', log_file=str(tmp_path / 'x.log'))
    quiet_console(logger)
    console = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)][0]
    rec = lambda msg, lvl=logging.INFO: logger.makeRecord('quiet_test', lvl, __file__, 1, msg, (), None)
    assert not console.filter(rec('Config:\nmodel = dict(...)')) and not console.filter(rec('System environment'))
    assert console.filter(rec('Iter(train) [ 12/300]  lr: 1e-3')) and console.filter(rec('\n| patch | tokens |'))
    assert console.filter(rec('something odd', logging.WARNING)) and console.filter(rec('boom', logging.ERROR))
    assert not console.filter(rec('"FileClient" will be deprecated', logging.WARNING))
    logger.info('Config:\nmodel = dict(type="X")')
    assert 'Config:' in open(tmp_path / 'x.log').read()  # the file handler is untouched


def test_test_tool_prints_a_short_header_and_the_table(trained_seg, seg_toy_data, tmp_path):
    """tools/test.py: header + progress + table on the terminal (was ~560 lines: environment, config,
    hooks); mmengine's whole log still in the work dir's log file; --verbose prints it all."""
    ckpt, _ = trained_seg
    args = ['tools/test.py', 'configs/seg/tiny_seg_flexi.py', ckpt, '--patch', '8', '24', '--work-dir', str(tmp_path),
            '--cfg-options', f'test_dataloader.dataset.data_root={seg_toy_data}', 'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False']
    out = run_tool(*args)
    lines = out.strip().splitlines()
    assert len(lines) <= 15 and 'Config:' not in out and 'System environment' not in out, out
    assert lines[0] == 'config   configs/seg/tiny_seg_flexi.py' and 'patches  test at [8, 24]' in out
    assert '| patch | tokens | aAcc | mIoU | mAcc |' in out
    log = [ln for ln in lines if ln.startswith('log      ')][0].split()[1]
    text = open(log).read()
    assert 'System environment' in text and 'Config:' in text and 'Hooks will be executed' in text
    assert 'Config:' in run_tool(*args, '--verbose')


def test_labels_of_small_images_stay_inside_and_apart():
    from PIL import Image, ImageDraw

    from flexitransfer.reporting import display_scale, draw_labels, font
    k = display_scale(96, 96)
    assert k == 5 and display_scale(1000, 600) == 1
    img = Image.new('RGB', (96 * k, 96 * k))
    boxes = [(0, 0, 100, 100), (5, 5, 120, 90), (400, 2, 480, 60), (300, 450, 480, 480)]  # crowded, at the edges
    placed = []
    d = ImageDraw.Draw(img)
    d.rectangle = lambda xy, **kw: placed.append(tuple(xy)) if 'fill' in kw else None  # the tags' backgrounds
    draw_labels(d, [(f'a long query {i} 0.93', b, (230, 25, 75)) for i, b in enumerate(boxes)], img.size, font(16))
    assert len(placed) == 4
    for i, (x0, y0, x1, y1) in enumerate(placed):
        assert 0 <= x0 and 0 <= y0 and x1 < img.width and y1 < img.height, placed
        for (u0, v0, u1, v1) in placed[:i]:
            assert x1 < u0 or u1 < x0 or y1 < v0 or v1 < y0, placed  # no two tags overlap
