"""Shared start-up for the tools: repo root on sys.path, the pinned stack checked, one-line errors.

Run from a Python without the pinned stack (e.g. a fresh shell's ``python`` instead of the
venv's), a tool stops with a message saying how to use the venv instead of a traceback.
"""
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from _threads import TIMING_TOOLS, thread_defaults  # noqa: E402  (OMP_NUM_THREADS, GOMP_SPINCOUNT)

thread_defaults(timing=osp.basename(sys.argv[0] if sys.argv else '') in TIMING_TOOLS)  # before torch loads

# The pinned stack is checked by name here (cheap); flexitransfer itself is imported by each tool after
# it has parsed and checked its arguments, so a wrong argument is answered in a second, not after the
# ~10 s import of torch + OpenMMLab. A package found missing then gets the same message (the hook below).
STACK = ('numpy', 'torch', 'mmengine', 'mmcv', 'mmdet', 'mmseg')


def _no_stack_message(name):
    venv_py = osp.join(ROOT, '.venv', 'bin', 'python')
    tool = osp.relpath(osp.abspath(sys.argv[0]), os.getcwd()) if sys.argv and sys.argv[0] else 'tools/...'
    how = (f'run the tool with the venv\'s Python:\n    {osp.relpath(venv_py, os.getcwd())} {tool} ...\n'
           f'or activate it first:  source {osp.relpath(osp.join(ROOT, ".venv", "bin", "activate"), os.getcwd())}'
           if osp.exists(venv_py) else
           f'create the environment first:  bash {osp.relpath(osp.join(ROOT, "tools", "setup.sh"), os.getcwd())}')
    return (f'flexitransfer cannot start: the package {name!r} is missing from this Python '
            f'({sys.executable}).\nThe pinned stack lives in the venv made by tools/setup.sh; {how}')


def _check_stack():
    from importlib.util import find_spec
    for name in STACK:
        if find_spec(name) is None:
            sys.exit(_no_stack_message(name))


_check_stack()


def _user_error_hook(exc_type, exc, tb, _default=sys.excepthook):
    """Bad input (a missing file, a checkpoint or config that does not fit, a patch size that does not
    divide the input) raises FileNotFoundError / ValueError with a message naming the input, the problem
    and the fix: print that message, not a traceback. FLEXI_TRACEBACK=1 shows the traceback."""
    if os.environ.get('FLEXI_TRACEBACK') == '1':
        return _default(exc_type, exc, tb)
    if issubclass(exc_type, ModuleNotFoundError) and (exc.name or '').split('.')[0] != 'flexitransfer':
        print(_no_stack_message(exc.name), file=sys.stderr)
        return
    if issubclass(exc_type, (FileNotFoundError, ValueError)):
        tool = osp.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'flexitransfer'
        print(f'{tool}: error: {exc}\n(FLEXI_TRACEBACK=1 shows the traceback)', file=sys.stderr)
        return
    _default(exc_type, exc, tb)


sys.excepthook = _user_error_hook


# ----------------------------------------------------------------------------- light argument checks
# (no torch / OpenMMLab import: they answer a wrong argument at once)
def require_config(path):
    """A config path with a typo: one line naming it, the closest shipped configs and where configs live."""
    if osp.isfile(path):
        return path
    import difflib
    import glob
    configs = [osp.relpath(f, ROOT) for f in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
               if '_base_' not in f]
    near = difflib.get_close_matches(osp.relpath(osp.abspath(path), ROOT), configs, n=2, cutoff=0.6)
    hint = f'did you mean {" or ".join(near)}?' if near else 'configs live under configs/<task>/ (e.g. ' \
                                                             'configs/seg/tiny_seg_flexi.py)'
    raise FileNotFoundError(f'config file not found: {path!r}; {hint}')


def require_checkpoint(path, flag='checkpoint'):
    """A missing checkpoint: one line, before the config is loaded or any runner prints its set-up."""
    if path and not osp.exists(path):
        raise FileNotFoundError(f'{flag} not found: {path!r}; check the path (training writes '
                                f'work_dirs/<config>/iter_*.pth or epoch_*.pth)')
    return path


def add_launcher_args(parser):
    """``--launcher`` / ``--local-rank`` for tools/train.py and tools/test.py (here, not in the package: no
    torch import, so a wrong argument is answered at once; flexitransfer.engine.dist acts on them)."""
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='pytorch: under torchrun; slurm: under srun. Backend: nccl on CUDA, gloo on CPU '
                             '(unless env_cfg.dist_cfg.backend is set)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_with_launcher(parser):
    """``parser.parse_args()``, with LOCAL_RANK exported from ``--local-rank`` (older launchers pass only that)."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args
