"""Nothing injected: one hostile payload planted in every field a user or a foreign run folder controls (data rows and their
description, file and folder names, settings, metric and model names, summary.json, metrics.jsonl, samples.jsonl,
evaluation.json written by hand), and every output checked by a reader ftnb did not write: HTML parsed for tags and
handlers, Markdown rendered by markdown-it (CommonMark), the Modelfile read by a port of Ollama's own parser, train.py
compiled and its values read back with `ast`. And a name that looks like a local path is never sent to the Hub."""
import ast, json, re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
import pytest
from ftnb.core import FtnbError
from ftnb.models import Model, tiny_model, load_model, looks_local
from ftnb.saving import ollama_modelfile
from ftnb.example_data import chat_row
from ftnb.data import load_data
from ftnb.sft import sft
from ftnb.evaluate import Evaluation, evaluate
from ftnb.history import RunRecord
from ftnb.report import report
from ftnb.hub import model_card
import ftnb.launch

PAYLOAD = ("</td><script>alert(1)</script><img src=x onerror=alert(1)>`x` ``` \"\"\" \nPARAMETER temperature 9\n"
           "'); import os; os.system('x') # C:\\Users\\x $x$ *b* [l](javascript:alert(1)) | _u_ &amp; ---")
NAME = PAYLOAD.replace('/', '_')  # a file or folder name: all of it but the path separator
FLAT = ' '.join(PAYLOAD.splitlines())  # the payload as one line of text (Markdown and the report show line breaks as spaces)

class Tags(HTMLParser):
    "The elements and attributes a browser would make of an HTML text, and the text it would show."
    def __init__(self, html):
        super().__init__(convert_charrefs=True); self.tags, self.text = [], []
        self.feed(html); self.close()
    def handle_starttag(self, tag, attrs): self.tags.append((tag, dict(attrs)))
    def handle_data(self, data): self.text.append(data)

def inert(html:str, allowed=('html', 'head', 'meta', 'title', 'style', 'body', 'h1', 'h2', 'div', 'b', 'span', 'p', 'code', 'i', 'br', 'img', 'table',
                             'tr', 'th', 'td', 'details', 'summary', 'pre', 'ul', 'li', 'a', 'strong', 'em', 'hr', 'thead', 'tbody', 'h3', 'ol')) -> str:
    "Check that `html` holds no element or handler the payload could add; return the text it shows."
    t = Tags(html)
    for tag, attrs in t.tags:
        assert tag in allowed, (tag, attrs)
        assert not [a for a in attrs if a.startswith('on')], (tag, attrs)
        if tag == 'img': assert re.match(r'data:image/png;base64,|[\w.-]+\.png$', attrs['src']), attrs  # inline, or a chart beside the card
        if tag == 'a': assert not attrs.get('href', '').lower().startswith('javascript'), attrs
    return ''.join(t.text)

def markdown_html(md:str) -> str:
    "Markdown as the Hub or Jupyter would render it (CommonMark with tables)."
    markdown_it = pytest.importorskip('markdown_it', reason='markdown-it-py renders the Markdown (a dev extra, through myst-nb)')
    return markdown_it.MarkdownIt('commonmark').enable('table').render(md)

def ollama_commands(text:str) -> list[tuple[str, str]]:
    "The (command, value) pairs Ollama reads from a Modelfile: a port of `ParseFile` in ollama/ollama's parser/parser.go (no escapes)."
    def unquote(s):
        if s.startswith('"""'): return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ('', False)
        if s.startswith('"'): return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ('', False)
        return s, True
    alpha = lambda r: r.isascii() and r.isalpha()
    def step(r, cs):
        if cs == 'nil': return ('comment', '') if r == '#' else ('nil', '') if r in ' \t\r\n' else ('name', r)
        if cs == 'name': return ('name', r) if alpha(r) else ('value', '') if r in ' \t' else pytest.fail(f'invalid command at {r!r}')
        if cs == 'value': return ('nil', r) if r in ' \t\r\n' else ('value', r)
        if cs == 'parameter': return ('parameter', r) if alpha(r) or r.isdigit() or r == '_' else ('value', '') if r in ' \t' else pytest.fail(r)
        return ('nil', '') if r in '\r\n' else ('comment', '')
    cmds, cur, buf, name = [], 'nil', '', ''
    for ch in text:
        nxt, r = step(ch, cur)
        if nxt != cur:
            if cur == 'name':
                s = buf.lower()
                assert s in ('from', 'license', 'template', 'system', 'adapter', 'draft', 'renderer', 'parser', 'parameter', 'message', 'requires'), s
                if s == 'parameter': nxt = 'parameter'
                else: name = 'model' if s == 'from' else s
            elif cur == 'parameter': name = buf
            elif cur == 'value':
                s, ok = unquote(buf.strip())
                if not ok or r in ' \t': buf += r; continue
                cmds.append((name, s))
            buf, cur = '', nxt
        if r and r.isprintable(): buf += r
    if cur == 'value':
        s, ok = unquote(buf.strip()); assert ok, 'unterminated value'; cmds.append((name, s))
    return cmds

def says_quill(completions, **kw): return [0.0] * len(completions)

def payload_run(d:Path, **kw):
    "A tiny SFT run (not started) whose data rows, data file name, model name, run folder name and sample prompt are the payload."
    f = d/f"{NAME}.jsonl"
    f.write_text(''.join(json.dumps(chat_row(PAYLOAD, PAYLOAD)) + '\n' for _ in range(8)))
    m = tiny_model(seed=0); m.name = PAYLOAD
    return sft(m, load_data(f), lr=1e-2, batch_size=4, run_dir=d/NAME, logging_steps=1, **kw).sample_every(1, [PAYLOAD], max_new_tokens=4)

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "The payload run, LoRA, trained 2 steps, and evaluated with the payload as a model's and a metric's name."
    r = payload_run(tmp_path_factory.mktemp('esc'), max_steps=2, lora=dict(r=4, alpha=8, dropout=0.))
    r.start(background=False, quiet=True)
    evaluate({PAYLOAD: r, 'tuned': r}, [PAYLOAD], rewards=says_quill, max_new_tokens=4, quiet=True).save(r.run_dir/'evaluation.json')
    return r

def foreign_folder(d:Path, typed:bool) -> Path:
    "A run folder someone sent, written by hand: every string field the payload; `typed=False`: numbers and the state the payload too."
    d.mkdir()
    P = PAYLOAD
    n = (lambda v: v) if typed else (lambda v: P)  # a number, or the payload where it belongs
    (d/'settings.json').write_text(json.dumps(dict(
        method='sft', model=P, model_source=P, base_run=P, hardware=P, code=P + '\n```\n<script>alert(2)</script>',
        settings=dict(data=f"Data: {P} from the Hub: org/evil\"<b>", lr=P, max_steps=P, batch_size=P, rows=P, eval_rows=P,
                      lora=dict(r=n(4), lora_alpha=P, lora_dropout=P, target_modules=[P]), **{P: P}),
        estimate_gb={P: n(2.0), 'weights': 1.0, 'total': 3.0}, trl_config={P: P, 'lr_scheduler_type': P, 'bf16': False})))
    (d/'summary.json').write_text(json.dumps(dict(state='finished' if typed else P, step=n(2), max_steps=n(2), started=P, seconds=n(1.5),
                                                  peak_gb=n(0.5), training_gb=n(0.25), error=P, final={'loss': n(2.0)})))
    (d/'metrics.jsonl').write_text('\n'.join(json.dumps(r) for r in (dict(step=1, loss=2.5, **{P: 1.0}), dict(step=P, loss=P), dict(step=2, loss=2.0))) + '\n')
    (d/'samples.jsonl').write_text('\n'.join(json.dumps(r) for r in (dict(step=P, prompts=[P], outputs=[P]),
                                                                      dict(step=2, prompts=[[dict(role='user', content=P)]], outputs=[P]))) + '\n')
    (d/'evaluation.json').write_text(json.dumps(dict(prompts=[P, 'q'], columns={}, label=P, models={
        'base': dict(answers=[P, 'a'], scores={P: [0.0, 1.0]}, loss=None), 'tuned': dict(answers=[P, 'a'], scores={P: [1.0, 1.0]}, loss=None),
        P: dict(answers=[P, P], scores={P: [1.0, 0.0]}, loss=None)})))
    return d

@pytest.fixture(params=['typed', 'loose'])
def foreign(request, tmp_path, monkeypatch):
    "A foreign run folder: values of the right types ('typed'), or strings everywhere, read as if a check had let them through ('loose')."
    import ftnb.history
    if request.param == 'loose': monkeypatch.setattr(ftnb.history, 'folder_problems', lambda *a: [], raising=False)
    return foreign_folder(tmp_path/NAME, request.param == 'typed')

def test_a_models_markdown_shows_its_name_and_source_as_written(tiny):
    md = Model(tiny.model, tiny.tokenizer, PAYLOAD, PAYLOAD)._repr_markdown_()
    html = markdown_html(md)
    inert(html)
    assert [unescape(c) for c in re.findall(r'<code>(.*?)</code>', html, re.S)] == [FLAT] * 2  # one code span each, whole

def test_an_evaluations_html_shows_labels_models_and_metrics_as_written():
    ev = Evaluation([PAYLOAD, 'q'], {}, {'base': dict(answers=['a', 'b'], scores={PAYLOAD: [0., 1.]}, loss=None),
                                         PAYLOAD: dict(answers=['a', 'b'], scores={PAYLOAD: [1., 1.]}, loss=1.5)}, PAYLOAD)
    text = inert(ev._repr_html_())
    assert text.count(PAYLOAD.replace('\n', '')) >= 3  # label, model, metric: as text (line breaks are <br>)

def test_the_report_of_a_foreign_run_folder_is_text_only(foreign):
    text = inert(report(foreign).read_text())
    wants = [f"started {PAYLOAD}", f"step {PAYLOAD}", f"{PAYLOAD}, base → tuned", f"model {PAYLOAD}", f"data {PAYLOAD}"]
    if 'finished' not in (foreign/'summary.json').read_text(): wants += [f"{PAYLOAD} at step {PAYLOAD}/{PAYLOAD}", f"{PAYLOAD} GB"]
    for want in wants: assert want.replace('\n', '') in text, want

def test_the_report_of_a_trained_run_is_text_only(run):
    text = inert(run.report().read_text())
    assert PAYLOAD.replace('\n', '') in text and 'SFT run ' + NAME.replace('\n', '') in text

def check_card(card:str, data:str):
    "A model card's front matter parses to what ftnb put there, and its body renders to text only, the data description among it."
    from huggingface_hub import ModelCard
    meta = ModelCard(card).data
    assert meta.datasets is None and meta.base_model is None and set(meta.tags) <= {'ftnb', 'trl', 'sft', 'lora'}
    text = inert(markdown_html(ModelCard(card).text))
    assert ' '.join(data.splitlines()) in text
    return text

def test_the_model_card_of_a_foreign_folder_is_text_only(foreign):
    text = check_card(model_card(foreign, 'you/quill'), RunRecord(foreign).data)
    assert FLAT in text and '<script>alert(2)</script>' in text  # the recorded call, in its code block, as written

def test_the_run_folders_readme_is_text_only(run):
    assert 'README.md' in {p.name for p in run.run_dir.iterdir()}
    check_card((run.run_dir/'README.md').read_text(), RunRecord(run.run_dir).data)

def test_a_modelfile_refuses_what_it_cannot_quote_and_keeps_the_rest_as_values(tiny, tmp_path):
    class Tok:  # a tokenizer with no chat template, whose end-of-sequence token is `eos`
        chat_template = None
        def __init__(self, eos): self.eos_token = eos
    with pytest.raises(FtnbError, match='The system prompt .* cannot be written into an Ollama Modelfile: it holds \'"""\''):
        ollama_modelfile('m.gguf', tiny.tokenizer, system=PAYLOAD)
    with pytest.raises(FtnbError, match=r"The stop sequence .* it holds '\"' and '\\n'"): ollama_modelfile('m.gguf', Tok(PAYLOAD))
    with pytest.raises(FtnbError, match='The file name'): ollama_modelfile(f"{NAME}.gguf", Tok('</s>'))
    system = PAYLOAD.replace('"""', '""')  # what a Modelfile can hold: line breaks, quotes, "PARAMETER ..." as text
    eos = PAYLOAD.splitlines()[0].replace('"', "'")
    cmds = ollama_commands(ollama_modelfile('m.gguf', Tok(eos), system=system))
    assert cmds == [('model', './m.gguf'), ('system', system), ('stop', eos)]  # nothing added: no temperature
    with pytest.raises(FtnbError, match='system prompt'): tiny.save(tmp_path/'out', format='gguf', system=PAYLOAD, progress=False)
    assert not (tmp_path/'out').exists()  # refused before anything was written

def test_train_py_holds_every_value_as_the_same_string(tmp_path):
    run = payload_run(tmp_path, max_steps=1, lora=False)
    job = run.export(tmp_path/'job')
    src = (job/'train.py').read_text()
    tree = ast.parse(compile(src, 'train.py', 'exec', ast.PyCF_ONLY_AST))
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
              and isinstance(n.value, ast.Constant)}
    assert values['exported_from'] == str(run.run_dir)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    sample = next(c for c in calls if getattr(c.func, 'attr', '') == 'sample_every')
    assert ast.literal_eval(next(k.value for k in sample.keywords if k.arg == 'prompts')) == [PAYLOAD]
    assert not [c for c in calls if getattr(c.func, 'attr', '') == 'system']  # the payload's os.system is a string, not a call
    assert load_data(job/'data.jsonl').rows == run.call[1]['data'].rows
    assert ' '.join(str(run.run_dir).splitlines()) in inert(markdown_html((job/'README.md').read_text()))  # in a code span, whole

def test_a_windows_path_is_a_string_in_train_py(tmp_path):
    r = sft(tiny_model(seed=0), [chat_row('Hi', 'Hello')] * 4, max_steps=1, batch_size=4, lora=False, run_dir=tmp_path/'C:\\Users\\me\\runs\\x')
    src = (r.export(tmp_path/'job')/'train.py').read_text()
    assert ast.literal_eval(re.search(r'^exported_from = (.*?)  #', src, re.M)[1]) == str(r.run_dir)

@pytest.mark.parametrize('name', ['mymodels/quill-v2', './quill', '~/nowhere/quill', 'C:\\models\\quill', 'a/b/c', 'quill.gguf',
                                  'model.safetensors', 'weights.bin', '/abs/quill'])
def test_a_local_looking_name_that_is_missing_is_reported_not_looked_up(name, tmp_path, monkeypatch):
    "Such a name is a path: missing, the error says where it looked; the Hub is never asked."
    import transformers
    monkeypatch.chdir(tmp_path); (tmp_path/'mymodels').mkdir()
    monkeypatch.setattr(transformers.AutoTokenizer, 'from_pretrained', lambda *a, **kw: pytest.fail(f'asked the Hub for {a}'))
    assert looks_local(name)
    with pytest.raises(FtnbError, match='does not exist: no such file or folder at /') as e: load_model(name)
    assert str(Path(name).expanduser().absolute()) in str(e.value)

def test_a_hub_id_with_no_such_folder_here_goes_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_local('HuggingFaceTB/SmolLM2-135M-Instruct')
    with pytest.raises(FtnbError, match="Could not load 'acme/nothing-here' from the Hugging Face Hub"): load_model('acme/nothing-here')
