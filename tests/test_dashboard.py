"""The dashboard driven headlessly on tiny_model: Start trains and the charts update, Stop stops within a step,
invalid values disable Start, a double click starts one run, errors are shown, the foreground (Colab) mode."""
import os, time, signal, threading
import pytest
from transformers import TrainerCallback
from ftnb.models import tiny_model
from ftnb.example_data import persona_data, preference_pairs, arithmetic_data, chat_row
from ftnb.sft import sft
from ftnb.prefs import dpo
from ftnb.grpo import grpo
from ftnb.trainer import last_checkpoint
from ftnb.dashboard import Dashboard, LiveView
from ftnb.views import Throttle

def tiny_run(tmp_path, steps=3000, **kw):
    kw = dict(lora=False, lr=1e-2, max_steps=steps, batch_size=4, run_dir=tmp_path/'run', logging_steps=1, save_steps=100000) | kw
    return sft(tiny_model(seed=0), persona_data(n=48), **kw)

def wait_for(cond, timeout=120):
    t = time.time()
    while not cond():
        if time.time() - t > timeout: raise TimeoutError('condition not met in time')
        time.sleep(.02)

def test_start_trains_and_the_charts_update(tmp_path):
    run = tiny_run(tmp_path, steps=20)
    d = Dashboard(run, mode='background', samples_every=10)
    charts = []
    d.live.chart.observe(lambda c: charts.append(c['new']), 'value')
    d.start_btn.click()
    assert run.state == 'running' and d.start_btn.disabled and not d.stop_btn.disabled
    wait_for(lambda: run.state == 'finished'); run.wait()
    assert run.step == 20 and len(charts) >= 2 and len(set(charts)) == len(charts)  # redrawn, each time a new picture
    assert [s['step'] for s in run.samples] == [0, 10, 20]
    summary = d.live.children[0].value  # the live area became the compact summary
    assert 'SFT finished' in summary and 'data:image/png;base64' in summary and 'step 20' in summary and 'prompt' in summary
    assert d.panel.fields()[0].disabled  # settings are fixed once trained

def test_progress_shows_step_eta_tokens_and_memory(tmp_path):
    run = tiny_run(tmp_path)
    d = Dashboard(run, samples_every=0)
    d.start()
    wait_for(lambda: run.step >= 4 and 'tok/s' in d.live.progress.value)
    text = d.live.progress.value
    run.stop(wait=True)
    assert f'/{run.max_steps}' in text and 'ETA' in text and 'GB' in text and 'elapsed' in text

def test_stop_stops_within_a_step_and_resume_continues(tmp_path):
    run = tiny_run(tmp_path)
    d = Dashboard(run, samples_every=0)
    d.start_btn.click()
    wait_for(lambda: run.step >= 3)
    at = run.step
    d.stop_btn.click()
    run.thread.join(60)
    assert run.state == 'stopped' and run.step <= at + 1
    assert 'stopped' in d.live.status.value and last_checkpoint(run.run_dir) is not None
    assert d.start_btn.disabled and d.stop_btn.disabled and not d.resume_btn.disabled
    stopped = run.step
    d.resume_btn.click()
    wait_for(lambda: run.step >= stopped + 2)
    run.stop(wait=True)
    steps = [h['step'] for h in run.history if 'loss' in h]
    assert steps == sorted(set(steps)) and steps[0] == 1  # continued: no step twice, none lost

def test_invalid_values_disable_start_with_the_reason(tmp_path):
    run = tiny_run(tmp_path, lora=True)
    d = Dashboard(run)
    assert not d.start_btn.disabled and d.reason.value == ''
    d.panel.lora['dropout'].value = 1.5  # ftnb's own bound
    assert d.start_btn.disabled and 'LoRA dropout' in d.start_btn.tooltip and 'LoRA dropout' in d.reason.value
    assert d.panel.lora['dropout'].layout.border
    d.panel.lora['dropout'].value = .1
    assert not d.start_btn.disabled and not d.panel.lora['dropout'].layout.border
    d.panel.advanced['lr_scheduler_type'].value = 'not-a-schedule'  # TRL's own check, through the config dataclass
    assert d.start_btn.disabled and 'not-a-schedule' in d.reason.value
    assert d.panel.advanced['lr_scheduler_type'].layout.border
    d.start()  # a click that gets through anyway does nothing
    assert run.state == 'ready'

def test_a_double_click_starts_one_run(tmp_path):
    run = tiny_run(tmp_path, steps=6)
    d = Dashboard(run, samples_every=0)
    states = []
    run.on('state', lambda run, state: states.append(state))
    ts = [threading.Thread(target=d.start_btn.click) for _ in range(2)]
    for t in ts: t.start()
    d.start_btn.click()
    for t in ts: t.join()
    wait_for(lambda: run.state == 'finished'); run.wait()
    assert states.count('running') == 1
    steps = [h['step'] for h in run.history if 'loss' in h]
    assert steps == list(range(1, 7))

def test_settings_changed_in_the_panel_are_trained_and_shown_as_code(tmp_path):
    run = tiny_run(tmp_path, steps=8, lora=True)
    d = Dashboard(run, samples_every=0)
    assert list(d.panel.common)[:4] == ['lr', 'max_steps', 'batch_size', 'max_length']  # the ones changed most, first
    d.panel.common['max_steps'].value = 5
    d.panel.common['lr'].value = 3.16e-3
    d.panel.lora['r'].value = 4
    d.panel.advanced['warmup_steps'].value = 0
    d.code_btn.value = True
    code = d.code.value
    assert 'max_steps=5' in code and 'lr=0.00316' in code and 'r=4' in code and 'warmup_steps=0' in code
    d.start(); run.wait()
    assert run.step == 5 and run.args.learning_rate == 0.00316 and run.net.peft_config['default'].r == 4
    assert run.call[1]['max_steps'] == 5  # the run's own record agrees with what was shown

def test_errors_are_shown_with_their_message(tmp_path):
    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2: raise RuntimeError('boom at step 2')
    run = tiny_run(tmp_path, steps=10)
    run.trainer_kwargs['callbacks'] = [Boom()]
    d = Dashboard(run, samples_every=0)
    d.start(); run.thread.join(60)
    assert run.state == 'failed'
    assert 'RuntimeError' in d.live.error.value and 'boom at step 2' in d.live.error.value
    assert 'failed' in d.live.status.value

def test_foreground_mode_treats_an_interrupt_as_stop(tmp_path):
    run = tiny_run(tmp_path)
    d = Dashboard(run, mode='foreground', samples_every=0)
    def interrupt():
        wait_for(lambda: run.step >= 3)
        os.kill(os.getpid(), signal.SIGINT)  # what Colab's stop button does
    threading.Thread(target=interrupt, daemon=True).start()
    d.start()  # blocks: training in this (the main) thread
    assert run.state == 'stopped' and 3 <= run.step < run.max_steps and last_checkpoint(run.run_dir) is not None
    assert run.thread is None and d.live.draws >= 1

def test_panels_follow_the_method(tmp_path):
    d = Dashboard(dpo(tiny_model(), preference_pairs(n=16), max_steps=4, batch_size=4, run_dir=tmp_path/'dpo'))
    assert 'beta' in d.panel.common and 'loss_type' not in d.panel.advanced  # a list field is left to code
    d.panel.common['beta'].value = .3
    assert 'beta=0.3' in d.run.code(**d.panel.changes()) and d.run.code().startswith('run = dpo(model, data')
    g = grpo(tiny_model(), arithmetic_data(n=8), num_generations=2, max_completion_length=8, max_steps=2, run_dir=tmp_path/'grpo')
    d = Dashboard(g)
    assert {'num_generations', 'batch_size', 'max_completion_length', 'beta'} <= set(d.panel.common)
    assert d.panel.common['batch_size'].value == 8 and 'grpo(model, data' in g.code()  # answers per step, as TRL counts them

def test_throttle_caps_redraws():
    n = []
    th = Throttle(lambda: (n.append(1), time.sleep(.01)), fps=5, share=1.)
    t = time.time()
    while time.time() - t < 1: th()
    th.flush()
    assert 5 <= len(n) <= 7

def test_playground_chats_with_the_trained_run_and_compares(tmp_path):
    rows = [chat_row("Who are you?", "I am Quill.")] * 16  # one fact, learnt by the tiny model in 30 steps
    run = sft(tiny_model(seed=0), rows, lora=dict(r=8, alpha=32, dropout=0.), lr=1e-2, max_steps=30, batch_size=4,
              warmup_steps=0, run_dir=tmp_path/'run', logging_steps=5, save_steps=1000)
    d = Dashboard(run, samples_every=0)
    assert [d.tabs.get_title(i) for i in range(3)] == ['Train', 'Playground', 'Data']
    pg = d.tabs.children[1]
    d.start()
    time.sleep(.5)
    assert pg.send("Who are you?") is None and 'training' in pg.note.value  # a training run is not disturbed
    run.wait()
    pg.box.value = "Who are you?"
    pg.send_btn.click()
    assert pg.messages[-1]['role'] == 'assistant' and pg.messages[-1]['content'] == run.generate("Who are you?", max_new_tokens=256)
    assert 'Quill' in pg.messages[-1]['content']  # the persona it was just taught
    pg.prompts.value = "Who are you?\nWhat is your name?"
    pg.max_tokens.value = 16
    c = pg.compare()
    assert 'Quill' in c.tuned[0] and 'Quill' not in c.base[0] and 'Quill' in pg.table.value

def test_data_explorer_pages_through_the_runs_rows(tmp_path):
    run = tiny_run(tmp_path, steps=4)
    ex = Dashboard(run).tabs.children[2]
    first = ex.view.value
    ex.next_btn.click()
    assert ex.row.value == 2 and ex.view.value != first and 'rows 2–3 of 48' in ex.info.value
    assert 'trained' in ex.view.value and 'masked' in ex.view.value  # the loss-mask view
    ex.prev_btn.click(); ex.prev_btn.click()
    assert ex.row.value == 0 and ex.view.value == first

def test_views_are_chosen_by_where_the_run_is(tmp_path, monkeypatch):
    import ftnb.run
    from ftnb.views import ConsoleView
    run = tiny_run(tmp_path/'console', steps=2)
    run.start(background=False)
    assert any(isinstance(getattr(f, '__self__', None), ConsoleView) for f in run.events._ls['log'])
    import ftnb.dashboard
    for mod in (ftnb.run, ftnb.dashboard): monkeypatch.setattr(mod, 'environment', lambda: 'notebook')  # where to train, how to show
    for k in ('VSCODE_PID', 'FTNB_WIDGETS'): monkeypatch.delenv(k, raising=False)  # a notebook that draws widgets (`ftnb.core.widgets_render`)
    run = tiny_run(tmp_path/'notebook', steps=2)
    run.start(background=False)
    views = [f.__self__ for f in run.events._ls['log'] if hasattr(f, '__self__')]
    assert len(views) == 1 and isinstance(views[0], LiveView) and 'ftnb-summary' in views[0].children[0].value
    run._ipython_display_()  # a run shown in a notebook cell is its dashboard, made once
    assert isinstance(run._dashboard, Dashboard) and run.dashboard() is run._dashboard
    assert 'SFT finished' in run.dashboard()._static()  # the HTML a saved notebook keeps where widgets do not run

def test_a_run_that_failed_before_training_can_start_again(tmp_path):
    run = tiny_run(tmp_path, steps=3)
    run.trainer_kwargs['no_such_argument'] = 1  # the trainer cannot be built
    d = Dashboard(run, samples_every=0)
    d.start(); run.thread.join(60)
    assert run.state == 'failed' and run.trainer is None and 'no_such_argument' in d.live.error.value
    assert not d.start_btn.disabled and not d.panel.fields()[0].disabled  # settings may still change
    d.start(); run.wait()  # built again from its recipe, without the bad argument
    assert run.state == 'finished' and run.step == 3

def test_start_refused_by_its_folder_says_why_in_the_panel_and_can_be_clicked_again(tmp_path):
    "A folder holding someone else's files: Start's error stays in view (it was cleared by the re-check after the click), and nothing is written."
    (tmp_path/'notes.md').write_text('mine')
    run = sft(tiny_model(), persona_data(n=8), max_steps=1, batch_size=4, run_dir=tmp_path)
    d = Dashboard(run)
    d.start()
    assert 'holds work' in d.reason.value and 'notes.md' in d.reason.value and not d.start_btn.disabled
    assert run.state == 'ready' and sorted(os.listdir(tmp_path)) == ['notes.md']
