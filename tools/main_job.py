"""The README's main job: tiny ADE20k-format data -> train the tiny Segmenter with random
patch sizes -> evaluate at three patch sizes, printing one table. A few CPU minutes."""
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = 'configs/seg/tiny_seg_flexi.py'
WORK = 'work_dirs/tiny_seg_flexi'


def run(*args):
    print('+', ' '.join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


if __name__ == '__main__':
    if not osp.isdir(osp.join(ROOT, 'data/toy_ade/ADEChallengeData2016/images/training')):
        run('tools/make_toy_data.py', 'seg')
    run('tools/train.py', CFG, '--work-dir', WORK)
    run('tools/test.py', CFG, osp.join(WORK, 'iter_300.pth'), '--patch', '8', '12', '24', '--work-dir', WORK)
