"A Run owns its state: read from the package's source (AST), no module writes `state` but `Run.set_state` (and a Sweep's own `set_state`)."

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).parents[1] / 'ftnb'
SOURCES = sorted(p for p in PKG.glob('*.py') if p.name != '_modidx.py')


def _state_writes(tree):
    "(line, enclosing function) of every `x.state = ...` (plain, augmented, annotated, unpacked) and setattr(x, 'state')."
    found, stack = [], [(tree, None, None)]
    while stack:
        node, cls, fn = stack.pop()
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        flat = []
        while targets:
            t = targets.pop()
            if isinstance(t, (ast.Tuple, ast.List)):
                targets += t.elts
            elif isinstance(t, ast.Starred):
                targets.append(t.value)
            else:
                flat.append(t)
        if any(isinstance(t, ast.Attribute) and t.attr == 'state' for t in flat):
            found.append((node.lineno, cls, fn))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == 'setattr'
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == 'state'
        ):
            found.append((node.lineno, cls, fn))
        for c in ast.iter_child_nodes(node):
            if isinstance(c, ast.ClassDef):
                stack.append((c, c.name, None))
            elif isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef)):
                stack.append((c, cls, c.name))
            else:
                stack.append((c, cls, fn))
    return found


def test_state_written_only_by_set_state():
    "`state` is given its first value in `Run.__init__` and changed only in `Run.set_state`, in every module (a Sweep's likewise)."
    allowed = {('run.py', 'Run', '__init__'), ('run.py', 'Run', 'set_state')}
    allowed |= {('sweep.py', 'Sweep', '__init__'), ('sweep.py', 'Sweep', 'set_state')}
    bad = [
        f"ftnb/{p.name}:{line} (in {fn or 'module level'})"
        for p in SOURCES
        for line, cls, fn in _state_writes(ast.parse(p.read_text()))
        if (p.name, cls, fn) not in allowed
    ]
    assert not bad, "Run.state written outside Run.set_state: " + ', '.join(bad)


def test_the_scan_sees_writes():
    "The scan finds the ways a state can be written, so the test above cannot pass by seeing nothing."
    src = "def f(run):\n    run.state = 'x'\n    a, run.state = 1, 2\n    setattr(run, 'state', 'y')\n"
    assert sorted(line for line, _, _ in _state_writes(ast.parse(src))) == [2, 3, 4]
    assert len(_state_writes(ast.parse((PKG / 'run.py').read_text()))) == 2  # __init__ and set_state


@pytest.fixture
def run(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from ftnb.models import tiny_model
    from ftnb.run import Run

    from ftnb.trainer import CHECKPOINTING

    args = SFTConfig(
        output_dir=str(tmp_path / 'r'), max_steps=2, report_to='none', use_cpu=True, **{CHECKPOINTING: False}
    )
    return Run('sft', tiny_model(), SFTTrainer, args, Dataset.from_list([{'text': 'hi'}]))


def test_set_state_tells_listeners_and_writes_unless_asked_not_to(run):
    "A state read from elsewhere (write=False) reaches the listeners but leaves the folder's summary alone."
    import json

    seen = []
    run.on('state', lambda run, state: seen.append(state))
    run.run_dir.mkdir(parents=True)
    run.set_state('finished', write=False)
    assert (seen, run.state, run.finished, run.training) == (['finished'], 'finished', True, False)
    assert not (run.run_dir / 'summary.json').exists()
    run.set_state('stopped')
    assert json.loads((run.run_dir / 'summary.json').read_text())['state'] == 'stopped'


def test_set_state_refuses_unknown_states(run):
    "A state that is not one of STATES is refused with the known ones."
    from ftnb.core import FtnbError
    from ftnb.run import STATES

    with pytest.raises(FtnbError, match='states are ' + ', '.join(STATES)):
        run.set_state('done')


def test_every_attribute_declared_at_birth(run):
    "Attributes other modules write on a run (recipe, launch, views, history) exist from the start, with defaults."
    assert (run.secrets, run.data, run.process, run.parked, run.loaded_from, run.call) == (
        {},
        None,
        None,
        None,
        None,
        None,
    )


def test_run_py_names_every_module_that_adds_to_run():
    "A reader finds everything a Run can do from run.py: its docstring names each module that patches `Run`."
    patching = set()
    for p in SOURCES:
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.FunctionDef) and n.args.args and n.args.args[0].annotation is not None:
                if ast.unparse(n.args.args[0].annotation) == 'Run':
                    patching.add(p.stem)
    patching -= {'run'}
    doc = ast.get_docstring(ast.parse((PKG / 'run.py').read_text()))
    assert patching and not [m for m in sorted(patching) if f"`{m}`" not in doc], (patching, doc)
