"""The README's main job: tiny ADE20k-format data -> train the tiny Segmenter with random
patch sizes -> evaluate at three patch sizes, printing one table. A few CPU minutes the first
time; later runs reuse the trained checkpoint and only evaluate (RETRAIN=1 trains again)."""
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = 'configs/seg/tiny_seg_flexi.py'
WORK = 'work_dirs/tiny_seg_flexi'
CKPT = osp.join(WORK, 'iter_300.pth')


def run(*args):
    print('+', ' '.join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


if __name__ == '__main__':
    if not osp.isdir(osp.join(ROOT, 'data/toy_ade/ADEChallengeData2016/images/training')):
        run('tools/make_toy_data.py', 'seg')
    if os.environ.get('RETRAIN') == '1' or not osp.isfile(osp.join(ROOT, CKPT)):
        run('tools/train.py', CFG, '--work-dir', WORK)
    else:
        print(f'[main job] {CKPT} exists: evaluating it (RETRAIN=1 to train again)', flush=True)
    run('tools/test.py', CFG, CKPT, '--patch', '8', '12', '24', '--work-dir', WORK)
