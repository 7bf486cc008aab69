"""No import circle between the package's modules (``deploy/onnx.py`` <-> ``deploy/runtime.py`` was
one): every ``import`` / ``from ... import`` of a ``flexitransfer`` module, read from the source (AST,
nothing imported), must form a graph without cycles. Package ``__init__`` files only re-export their
modules, so an edge into a package goes to the modules it names, not to the ``__init__``."""
import ast
import os
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PKG = osp.join(ROOT, 'flexitransfer')


def _modules():
    mods = {}
    for d, _, files in os.walk(PKG):
        for f in files:
            if f.endswith('.py'):
                rel = osp.relpath(osp.join(d, f), ROOT)[:-3].replace(os.sep, '.')
                mods[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = osp.join(d, f)
    return mods


def _edges(name, path, mods):
    is_pkg = path.endswith('__init__.py')
    base = name if is_pkg else name.rsplit('.', 1)[0]
    for node in ast.walk(ast.parse(open(path).read())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split('.')
                mod = '.'.join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ''
            targets = [f'{mod}.{a.name}' if f'{mod}.{a.name}' in mods else mod for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            if t in mods and t != name:
                yield t


def _resolve(t, mods, graph):
    """An edge into a package ``__init__`` stands for the modules that ``__init__`` imports."""
    if not mods[t].endswith('__init__.py'):
        return {t}
    out = set()
    for u in graph[t]:
        out |= _resolve(u, mods, graph) if u.startswith(t + '.') else {u}
    return out


def test_no_import_cycles_between_modules():
    mods = _modules()
    graph = {n: set(_edges(n, p, mods)) for n, p in mods.items()}
    flat = {n: set().union(*(_resolve(t, mods, graph) for t in ts)) if ts else set()
            for n, ts in graph.items() if not mods[n].endswith('__init__.py')}
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(flat.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m in flat and not state.get(m):
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(flat):
        if not state.get(n):
            visit(n)
    assert not cycles, 'import cycles:\n' + '\n'.join(' -> '.join(c) for c in cycles)
