"""The README's Python snippets run as pasted, in order, in a fresh process: the front door (`from ftnb.all import *`) and the
names they use exist. Only the cost is cut: training stops after 2 steps and answers after 4 tokens (a prelude wraps
`Run.start` and transformers' `generate`); the snippets' own code is what runs."""
import re, subprocess, sys, textwrap
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

def test_readme_snippets_run_in_order_in_a_fresh_process(tmp_path):
    code = PRELUDE + '\n'.join(f"print('--- snippet {i}', flush=True)\n{s}" for i, s in enumerate(snippets()))
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env={**__import__('os').environ, 'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert f"--- snippet {len(snippets()) - 1}" in r.stdout
    assert (next((tmp_path/'runs').glob('*-dpo'))/'report.html').exists()  # the last snippet wrote the DPO run's report
