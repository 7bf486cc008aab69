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


def _user_error_hook(exc_type, exc, tb, _default=sys.excepthook):
    """Bad input (a missing file, a checkpoint or config that does not fit, a patch size that does not
    divide the input) raises FileNotFoundError / ValueError with a message naming the input, the problem
    and the fix: print that message, not a traceback. FLEXI_TRACEBACK=1 shows the traceback."""
    if issubclass(exc_type, (FileNotFoundError, ValueError)) and os.environ.get('FLEXI_TRACEBACK') != '1':
        tool = osp.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'flexitransfer'
        print(f'{tool}: error: {exc}\n(FLEXI_TRACEBACK=1 shows the traceback)', file=sys.stderr)
        return
    _default(exc_type, exc, tb)


sys.excepthook = _user_error_hook
