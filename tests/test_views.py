"""The HTML live view, headless. Where widgets do not render (VS Code with ipywidgets 8.1.9, or FTNB_WIDGETS=0) a run
shows `ftnb.views.HTMLView`: one output, updated in place through IPython's display handle, from the training thread.
A fake kernel shell stands in for Jupyter: IPython's own `display` and `DisplayHandle` run, and the messages they
would send to the front end are recorded."""
import re, sys, time, base64, threading
from dataclasses import dataclass
from unittest.mock import MagicMock, patch
import pytest
import ipywidgets
from transformers import TrainerCallback
from ftnb.core import environment, in_vscode, widgets_render
from ftnb.models import tiny_model
from ftnb.example_data import persona_data
from ftnb.sft import sft
from ftnb.views import HTMLView

WIDGET = 'application/vnd.jupyter.widget-view+json'

@dataclass
class Sent:
    "One display message: `update` False for display_data (a new output), True for update_display_data."
    data: dict
    display_id: str | None
    update: bool
    at: float
    thread: str
    @property
    def html(self) -> str: return self.data.get('text/html', '')

class ZMQInteractiveShell:
    "A Jupyter kernel's shell as ftnb and IPython's `display` see it: class name, namespace, cell number, formatter, and a publisher that records."
    def __init__(self):
        from IPython.core.formatters import DisplayFormatter
        self.user_ns, self.execution_count, self.sent = {}, 1, []
        self.display_formatter, self.display_pub = DisplayFormatter(), self
    def publish(self, data, metadata=None, *, transient=None, update=False, **kw):
        self.sent.append(Sent(data, (transient or {}).get('display_id'), update, time.time(), threading.current_thread().name))

@pytest.fixture
def kernel(monkeypatch):
    "A headless Jupyter kernel (no VS Code, no FTNB_WIDGETS); `kernel.sent` is what it would send to the front end."
    from IPython.core.interactiveshell import InteractiveShell
    shell = ZMQInteractiveShell()
    monkeypatch.setattr('IPython.get_ipython', lambda: shell)
    monkeypatch.setattr(InteractiveShell, 'initialized', classmethod(lambda cls: True))
    monkeypatch.setattr(InteractiveShell, 'instance', classmethod(lambda cls, *a, **kw: shell))
    for k in ('VSCODE_PID', 'FTNB_WIDGETS'): monkeypatch.delenv(k, raising=False)
    before = set(threading.enumerate())
    yield shell
    for t in set(threading.enumerate()) - before:  # nothing a test started sends into the next test's kernel
        if isinstance(t, threading.Timer): t.cancel()
        t.join(60)

@pytest.fixture
def vscode(kernel, monkeypatch):
    "The kernel as VS Code runs it, with the ipywidgets release VS Code draws nothing of."
    monkeypatch.setenv('VSCODE_PID', '4242')
    monkeypatch.setattr(ipywidgets, '__version__', '8.1.9')
    return kernel

def tiny_run(tmp_path, steps=12, **kw):
    kw = dict(lora=False, lr=1e-2, max_steps=steps, batch_size=4, run_dir=tmp_path/'run', logging_steps=1, save_steps=100000) | kw
    return sft(tiny_model(seed=0), persona_data(n=48), **kw)

# The decision: can this front end show widgets?

@pytest.mark.parametrize('version, flag, want', [('8.1.9', None, False), ('8.1.8', None, True), ('8.1.10', None, True),
                                                 ('8.1.9', '1', True), ('8.1.8', '0', False)])
def test_vscode_with_ipywidgets_8_1_9_gets_no_widgets(vscode, monkeypatch, version, flag, want):
    monkeypatch.setattr(ipywidgets, '__version__', version)
    if flag: monkeypatch.setenv('FTNB_WIDGETS', flag)
    assert environment() == 'notebook' and in_vscode()
    assert widgets_render() is want

def test_vscode_is_also_known_by_its_notebook_variable(kernel, monkeypatch):
    monkeypatch.setattr(ipywidgets, '__version__', '8.1.9')
    assert not in_vscode() and widgets_render()  # Jupyter draws 8.1.9
    kernel.user_ns['__vsc_ipynb_file__'] = '/home/me/train.ipynb'  # what VS Code sets, even for a kernel it did not start
    assert in_vscode() and not widgets_render()

def test_ftnb_widgets_0_turns_widgets_off_and_a_terminal_never_has_them(kernel, monkeypatch):
    assert widgets_render()
    monkeypatch.setenv('FTNB_WIDGETS', '0')
    assert not widgets_render()
    with patch.dict(sys.modules, {'google.colab': MagicMock()}): assert environment() == 'colab' and not widgets_render()
    monkeypatch.setenv('FTNB_WIDGETS', '1')
    assert widgets_render() and not widgets_render('console') and not widgets_render('ipython')

# The view

def test_a_run_in_vscode_is_html_updated_in_place_from_the_training_thread(vscode, tmp_path):
    run = tiny_run(tmp_path, steps=12)
    run.start()  # what a notebook cell does: the view is shown, training goes on in a thread
    assert run.thread is not None and isinstance(run._html_view, HTMLView) and getattr(run, '_dashboard', None) is None
    run.wait()
    sent = vscode.sent
    assert len([s for s in sent if not s.update]) == 1 and not sent[0].update  # one output...
    assert WIDGET not in sent[0].data and 'ftnb-html-view' in sent[0].html
    assert sent[0].display_id and {s.display_id for s in sent} == {sent[0].display_id}  # ...updated in place
    ups = [s for s in sent if s.update]
    assert len(ups) >= 3 and len({s.html for s in ups}) >= 3 and run.html_view().updates == len(ups)
    assert any(s.thread == run.thread.name for s in ups)  # sent from the training thread
    final, loss = sent[-1].html, [h['loss'] for h in run.history if 'loss' in h][-1]
    assert 'SFT · finished' in final and 'step 12/12' in final and f"loss {loss:.4g}" in final
    m = re.search(r"<img src=['\"]data:image/png;base64,([A-Za-z0-9+/=]+)['\"]", final)
    assert m and base64.b64decode(m[1]).startswith(b'\x89PNG\r\n\x1a\n')
    assert sent[-1].data['text/plain'] == repr(run)  # and the run's summary for text-only front ends

def test_updates_are_throttled_and_the_last_one_is_not_lost(kernel, tmp_path):
    run = tiny_run(tmp_path, steps=100000)  # not trained: log events are emitted by hand, far faster than any run logs
    view = HTMLView(run, fps=5)
    view.show()
    t, n = time.time(), 0
    while time.time() - t < 1:
        n += 1; run.step = n
        run.history.append(dict(step=n, loss=1 / n))
        run.events.emit('log', run=run, record=run.history[-1])
    time.sleep(.6)  # no event follows: the held update is sent by its timer
    ups = [s for s in kernel.sent if s.update]
    assert n > 50 and 4 <= len(ups) <= 9  # about five a second, not one per log
    assert min(b.at - a.at for a, b in zip(ups, ups[1:])) >= .19
    assert f"step {n}/100000" in ups[-1].html and f"loss {1 / n:.4g}" in ups[-1].html

def test_an_error_shows_in_the_view(vscode, tmp_path):
    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2: raise RuntimeError('boom at step 2')
    run = tiny_run(tmp_path, steps=10)
    run.trainer_kwargs['callbacks'] = [Boom()]
    run.start(); run.thread.join(120)
    assert run.state == 'failed'
    final = vscode.sent[-1].html
    assert 'SFT · failed' in final and 'RuntimeError' in final and 'boom at step 2' in final
    assert f'step {run.step}/10' in final and 'No checkpoint was written' in final  # where it stopped, and what to do next

# Which view a run in a notebook shows

def test_vscode_with_a_working_ipywidgets_gets_the_dashboard(vscode, monkeypatch, tmp_path):
    monkeypatch.setattr(ipywidgets, '__version__', '8.1.8')
    run = tiny_run(tmp_path, steps=2)
    run._ipython_display_()  # `run` as the last line of a cell
    assert WIDGET in vscode.sent[-1].data and getattr(run, '_html_view', None) is None

def test_ftnb_widgets_0_shows_the_html_view_once_per_cell_with_one_display_id(kernel, monkeypatch, tmp_path):
    monkeypatch.setenv('FTNB_WIDGETS', '0')
    run = tiny_run(tmp_path, steps=2)
    outputs = lambda: [s for s in kernel.sent if not s.update]  # new outputs; a run left by another test may still send updates
    run._ipython_display_(); run._ipython_display_()  # twice in one cell (`run.start()` ending it): shown once
    shown = outputs()
    assert len(shown) == 1 and 'SFT · ready' in shown[0].html and WIDGET not in shown[0].data
    kernel.execution_count += 1
    run._ipython_display_()  # in another cell: the same display once more, so both copies follow the run
    shown = outputs()
    assert len(shown) == 2 and shown[1].display_id == shown[0].display_id

def test_a_run_in_a_kernel_shows_no_second_progress_table(tmp_path, monkeypatch):
    "Inside a kernel transformers adds its own NotebookProgressCallback (a table per log); a Run's view is the only progress shown."
    import transformers.trainer
    from transformers.utils.notebook import NotebookProgressCallback
    from ftnb.models import tiny_model
    from ftnb.example_data import persona_data
    from ftnb.sft import sft
    monkeypatch.setattr(transformers.trainer, 'DEFAULT_PROGRESS_CALLBACK', NotebookProgressCallback)  # as imported in Jupyter
    run = sft(tiny_model(), persona_data(n=8), max_steps=1, run_dir=tmp_path)
    run._build()
    assert not any(isinstance(cb, NotebookProgressCallback) for cb in run.trainer.callback_handler.callbacks)


def test_both_live_views_share_one_base_and_measure_speed_per_session(tmp_path):
    "The dashboard's live view and the HTML view are one RunView: both follow the run's events, and a new session's tokens/s starts afresh."
    from ftnb.views import RunView, HTMLView
    from ftnb.dashboard import LiveView
    run = tiny_run(tmp_path)
    views = [LiveView(run), HTMLView(run)]
    assert all(isinstance(v, RunView) for v in views) and run.viewed
    for v in views:
        v.on_log(run, dict(step=1, num_tokens=100.0, loss=1.0))
        assert v.tokens is not None
    run.events.emit('state', run=run, state='running')  # a resumed session: its speed is its own
    assert [v.tokens for v in views] == [None, None]
