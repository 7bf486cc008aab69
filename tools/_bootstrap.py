"""Shared start-up for the tools: repo root on sys.path, flexitransfer registered.

Run from a Python without the pinned stack (e.g. a fresh shell's ``python`` instead of the
venv's), a tool stops with a message saying how to use the venv instead of a traceback.
"""
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count() or 1))

try:
    import flexitransfer  # noqa: E402,F401  (registers modules, allows mmengine checkpoints)
except ModuleNotFoundError as e:
    if (e.name or '').split('.')[0] == 'flexitransfer':
        raise
    venv_py = osp.join(ROOT, '.venv', 'bin', 'python')
    tool = osp.relpath(osp.abspath(sys.argv[0]), os.getcwd()) if sys.argv and sys.argv[0] else 'tools/...'
    how = (f'run the tool with the venv\'s Python:\n    {osp.relpath(venv_py, os.getcwd())} {tool} ...\n'
           f'or activate it first:  source {osp.relpath(osp.join(ROOT, ".venv", "bin", "activate"), os.getcwd())}'
           if osp.exists(venv_py) else
           f'create the environment first:  bash {osp.relpath(osp.join(ROOT, "tools", "setup.sh"), os.getcwd())}')
    sys.exit(f'flexitransfer cannot start: the package {e.name!r} is missing from this Python '
             f'({sys.executable}).\nThe pinned stack lives in the venv made by tools/setup.sh; {how}')
