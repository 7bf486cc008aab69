"""ruff (lint and import order, configured in pyproject.toml) is clean on the tree: part of the README's
test command, so CI runs it."""
import os.path as osp
import shutil
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def ruff():
    exe = osp.join(osp.dirname(sys.executable), 'ruff')
    return exe if osp.exists(exe) else shutil.which('ruff')


def test_ruff_is_clean():
    exe = ruff()
    assert exe, 'ruff is not installed: it is in requirements.txt (bash tools/setup.sh installs it)'
    out = subprocess.run([exe, 'check', '--no-cache', '--output-format', 'concise', '.'], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, f'ruff found problems (ruff check --fix . fixes most):\n{out.stdout[-4000:]}'


def test_ruff_catches_a_problem(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('import os\nimport sys\n\nprint(sys.argv)\n')
    out = subprocess.run([ruff(), 'check', '--no-cache', '--config', osp.join(ROOT, 'pyproject.toml'), str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and 'F401' in out.stdout
