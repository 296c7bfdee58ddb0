"""The README's Python snippets run as pasted, one cell each and in order, in a fresh Jupyter kernel: the front door
(`from ftnb.all import *`) and the names they use exist, `run.start()` trains in the background there as it does for users and
the next line still works, and the charts come out as pictures. Only the cost is cut: training stops after 2 steps and answers
after 4 tokens (a prelude wraps `Run.start` and transformers' `generate`); the snippets' own code is what runs."""
import os, re, textwrap
import nbformat
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRELUDE = textwrap.dedent('''
    import transformers, ftnb.run
    _generate, _start = transformers.GenerationMixin.generate, ftnb.run.Run.start
    def generate(self, *a, **kw): return _generate(self, *a, **kw | dict(max_new_tokens=min(4, kw.get('max_new_tokens') or 4)))
    def start(self, *a, **kw):
        self.max_steps = self.args.max_steps = min(2, self.max_steps)
        return _start(self, *a, **kw)
    transformers.GenerationMixin.generate, ftnb.run.Run.start = generate, start
''')

def snippets() -> list[str]: return re.findall(r'```python\n(.*?)```', (ROOT/'README.md').read_text(), re.S)

def test_readme_starts_with_the_front_door():
    assert snippets()[0].strip() == 'from ftnb.all import *'

def test_readme_snippets_run_in_order_in_a_jupyter_kernel(tmp_path, monkeypatch):
    from ftnb.devtools import run_notebook
    cells = snippets()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells]), tmp_path/'readme.ipynb')
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    r = run_notebook(tmp_path/'readme.ipynb', prelude=PRELUDE, timeout=600)
    assert r.errors == {} and r.text_figures == [], r
    plots = [i for i, c in enumerate(cells) if re.search(r'^\s*(run|h)\.plot\(', c, re.M)]
    assert plots and set(plots) <= set(r.images), (plots, r.images)  # `run.plot()` and `runs().plot()` show pictures
    assert (next((tmp_path/'runs').glob('*-dpo'))/'report.html').exists()  # the DPO run, started in the background, was reported
