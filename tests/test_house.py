"""The house's rules, read from the source: dependencies point one way (no import cycle, imports inside functions counted),
no private name crosses a module, and `ftnb.all` gives a notebook the public vocabulary and nothing private."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent/'ftnb'

def imports() -> list[tuple[str, str, list[str], int]]:
    "(module, imported ftnb module, names, line) for every import of ftnb by ftnb, at any depth of the code."
    out = []
    for f in sorted(PKG.glob('*.py')):
        if f.name == '_modidx.py': continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ''
                if node.level == 1: target = mod.split('.')[0] if mod else None
                elif mod == 'ftnb': target = None
                elif mod.startswith('ftnb.'): target = mod.split('.')[1]
                else: continue
                names = [a.name for a in node.names]
                if target is None: out += [(f.stem, n, [], node.lineno) for n in names if (PKG/f'{n}.py').exists()]; names = [n for n in names if not (PKG/f'{n}.py').exists()]; target = '__init__'
                if names: out.append((f.stem, target, names, node.lineno))
            elif isinstance(node, ast.Import):
                out += [(f.stem, a.name.split('.')[1], [], node.lineno) for a in node.names if a.name.startswith('ftnb.')]
    return out

def test_the_import_scan_sees_imports_inside_functions():
    found = {(m, t) for m, t, _, _ in imports()}
    assert ('evaluate', 'rewards') in found and ('recipe', 'dashboard') in found and ('cli', 'quickstart') in found

def test_no_private_name_is_imported_across_modules():
    bad = [f"ftnb/{m}.py:{line} imports {n} from {t}" for m, t, names, line in imports()
           for n in names if n.startswith('_') and not (n.startswith('__') and n.endswith('__'))]
    assert not bad, '\n'.join(bad)

def test_dependencies_point_one_way():
    graph = {}
    for m, t, _, _ in imports():
        if t != m: graph.setdefault(m, set()).add(t)
    state, cycles = {}, []
    def visit(n, path):
        state[n] = 'open'
        for t in sorted(graph.get(n, ())):
            if state.get(t) == 'open': cycles.append(' -> '.join(path[path.index(t):] + [t]))
            elif t not in state: visit(t, path + [t])
        state[n] = 'done'
    for n in sorted(graph):
        if n not in state: visit(n, [n])
    assert not cycles, '\n'.join(cycles)

def test_run_imports_nothing_above_it():
    "The engine knows no front end: views, dashboard, report and the recipes add to Run, not the other way round."
    assert {t for m, t, _, _ in imports() if m == 'run'} <= {'core', 'markup', 'files', 'models', 'saving', 'methods', 'data', 'trainer', 'budget'}
    assert {t for m, t, _, _ in imports() if m == 'files'} <= {'core'}  # whole writes and locks: below the models that save through them

def test_all_gives_the_public_vocabulary():
    ns = {}
    exec('from ftnb.all import *', ns)
    names = {k for k in ns if k != '__builtins__'}
    assert {'load_model', 'load_data', 'sft', 'dpo', 'kto', 'orpo', 'reward_model', 'grpo', 'rloo', 'rejection_sample', 'evaluate',
            'exact_match', 'runs', 'load_run', 'quickstart', 'detect_hardware', 'persona_data', 'tiny_model'} <= names
    assert not [n for n in names if n.startswith('_')]
    run_methods = {'dashboard', 'report', 'show', 'html_view', 'plot', 'policy', 'reconfigure', 'code', 'push'}
    assert run_methods <= set(dir(ns['Run']))

def test_every_parameter_a_user_meets_is_documented():
    "show_doc lists each parameter with its comment: the recipes' shared ones (`Shared`) included."
    import inspect
    from fastcore.docments import docments
    import ftnb.all as fa
    missing = {}
    for name in fa.__all__:
        f = getattr(fa, name)
        if not inspect.isfunction(f) : continue
        d = docments(f)
        if miss := [k for k, v in d.items() if not v and k not in ('return', 'overrides', 'kwargs', 'kw', 'gen')]: missing[name] = miss
    assert not missing, missing

def test_a_module_imported_alone_brings_the_data_methods_it_uses():
    "Data's token methods (stats, tokenize, encodings, for_template) are added by ftnb.tokens: every module that calls them must import it, or a notebook that imports only that module fails."
    import subprocess, sys
    for mod in ('sft', 'prefs', 'grpo', 'rewards', 'evaluate', 'rejection', 'playground', 'recipe'):  # the modules that call them
        code = f"import ftnb.{mod}, ftnb.data; assert all(hasattr(ftnb.data.Data, m) for m in ('stats', 'tokenize', 'encodings', 'for_template', 'show'))"
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
        assert r.returncode == 0, f"ftnb.{mod} alone: {r.stderr[-300:]}"

def test_the_code_is_as_dense_as_the_anchors():
    "Lines over 120 characters at most 35 per 1000 (fastcore 32, nbdev 34), at most 20 `;`-joined statements in ftnb/."
    lines = long = joined = 0
    for f in PKG.glob('*.py'):
        if f.name == '_modidx.py': continue
        src = f.read_text()
        lines += len(src.splitlines())
        long += sum(len(l) > 120 for l in src.splitlines())
        for node in ast.walk(ast.parse(src)):
            for body in (getattr(node, k, None) for k in ('body', 'orelse', 'finalbody')):
                if isinstance(body, list):
                    joined += sum(isinstance(a, ast.stmt) and isinstance(b, ast.stmt) and b.lineno == a.end_lineno
                                  for a, b in zip(body, body[1:]))
    assert 1000 * long / lines <= 35, f'{long} lines over 120 characters in {lines} ({1000 * long / lines:.1f} per 1000)'
    assert joined <= 20, f'{joined} statements joined with ;'
