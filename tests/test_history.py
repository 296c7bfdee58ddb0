"""Run history on tiny_model: the runs() table and overlay, a run loaded back (and rebuilt to resume), a killed kernel's run,
the per-run report, and report_to passing through to TRL's integrations."""
import json, os, re, signal, subprocess, sys, time, textwrap
from pathlib import Path
import pytest
from ftnb.rewards import completion_text
from ftnb.core import FtnbError
from ftnb.models import tiny_model
from ftnb.example_data import chat_row
from ftnb.sft import sft
from ftnb.evaluate import evaluate
from ftnb.history import runs, load_run
from ftnb.report import report  # and Run.report
from ftnb.markup import fmt_value
from ftnb.trainer import last_checkpoint

ROWS = [chat_row("Who are you?", "I am Quill.")] * 16
KW = dict(batch_size=4, lora=dict(r=8, alpha=32, dropout=0.), warmup_steps=0, logging_steps=2)
Q = "Who are you?"

def says_quill(completions, **kw): return [float('Quill' in completion_text(c)) for c in completions]

@pytest.fixture(scope='module')
def two_runs(tmp_path_factory):
    "Two finished Quill runs at learning rates 1e-2 and 1e-3, the first evaluated."
    root = tmp_path_factory.mktemp('h')/'runs'
    made = [sft(tiny_model(), ROWS, lr=lr, max_steps=30, run_dir=root/f'lr{lr:g}', **KW).start(background=False, quiet=True)
            for lr in (1e-2, 1e-3)]
    evaluate(made[0], ROWS[:2] + [chat_row("What is your name?", "Quill.")], rewards=says_quill, max_new_tokens=8)
    return root, made

def test_short_numbers_keep_their_digits():
    assert [fmt_value(v) for v in (1e-3, 0.00316, 2e-5, 0.3517, 0., 30)] == ['1e-3', '3.16e-3', '2e-5', '0.3517', '0', '30']

def test_runs_table_lists_both_learning_rates_with_results(two_runs):
    root, made = two_runs
    h = runs(root)
    rows = h.rows()
    assert [r['run'] for r in rows] == ['lr0.01', 'lr0.001']
    assert 'lr 1e-2' in rows[0]['settings'] and 'lr 1e-3' in rows[1]['settings'] and 'lora r8' in rows[0]['settings']
    assert all(r['state'] == 'finished' and r['method'] == 'sft' and r['model'] == 'tiny' for r in rows)
    last = [h['loss'] for h in made[0].history if 'loss' in h][-1]
    assert rows[0]['final'].startswith(f"loss {fmt_value(last)}") and 'mean_token_accuracy' in rows[0]['final']
    assert rows[0]['evaluation'] == 'says_quill 0 → 1' and rows[1]['evaluation'] == ''
    assert re.fullmatch(r'\d+:\d\d', rows[0]['time']) and rows[0]['data'].startswith('16 rows')
    assert 'lr0.01' in repr(h) and '<table>' in h._repr_html_()
    assert runs(root, method='dpo').rows() == []

def test_overlay_chart_has_one_line_per_run_labelled_by_what_differs(two_runs):
    root, made = two_runs
    fig = runs(root).plot(keys=('loss',))
    assert [t.get_text() for t in fig.legends[0].texts] == ['#0 lr 1e-2', '#1 lr 1e-3']
    lines = [l for l in fig.axes[0].lines if l.get_label() in ('#0 lr 1e-2', '#1 lr 1e-3')]
    assert len(lines) == 2 and lines[0].get_ydata()[-1] < lines[1].get_ydata()[-1]  # the higher rate learned faster

def test_a_run_loads_back_answering_as_it_did(two_runs):
    root, made = two_runs
    with pytest.raises(FtnbError, match=r"'tiny' .* cannot be loaded by name.*load_run\(run_dir, model=\.\.\.\)"): load_run(root/'lr0.01')
    back = runs(root).load(0, model=tiny_model())
    assert back.state == 'finished' and back.step == 30 and back.history == made[0].history
    assert back.generate(Q, max_new_tokens=8) == made[0].generate(Q, max_new_tokens=8)
    assert 'Quill' in back.generate(Q, max_new_tokens=8)
    assert back.compare([Q], max_new_tokens=8).base == made[0].compare([Q], max_new_tokens=8).base  # the adapter switches off as before

def test_a_stopped_run_reloaded_says_how_to_resume_and_that_code_resumes(tmp_path):
    run = sft(tiny_model(), ROWS, lr=1e-2, max_steps=20, run_dir=tmp_path/'r', save_steps=5, **KW)
    run.on('log', lambda run, record: run.stop() if record['step'] >= 10 else None)
    run.start(background=False, quiet=True)
    assert run.state == 'stopped'
    back = load_run(tmp_path/'r', model=tiny_model())
    assert back.state == 'stopped' and back.step == run.step in (10, 11)  # a stop asked during step 11's log ends after that step
    assert back.loaded_from.name == f'checkpoint-{run.step}'
    with pytest.raises(FtnbError, match='without its data') as e: back.start()
    code = str(e.value).split('resume:\n', 1)[1]
    assert f"run_dir={str(tmp_path/'r')!r}" in code and code.endswith('run.resume()')
    ns = dict(model=tiny_model(), data=ROWS, sft=sft)
    exec(code.replace('run.resume()', 'run.start(background=False, quiet=True, resume=True)'), ns)
    again = ns['run']
    assert again.state == 'finished' and again.step == 20 and again.history[0]['step'] == run.history[0]['step']  # continued, not restarted
    assert [h['step'] for h in again.history if 'loss' in h] == list(range(2, 21, 2))

KILLED = textwrap.dedent('''
    import sys, time
    from ftnb.models import tiny_model
    from ftnb.example_data import chat_row
    from ftnb.sft import sft
    run = sft(tiny_model(), [chat_row("Who are you?", "I am Quill.")] * 16, lr=1e-2, max_steps=10000, batch_size=4, run_dir=sys.argv[1],
              save_steps=3, logging_steps=1, warmup_steps=0)
    run.on('log', lambda run, record: time.sleep(.05))
    run.start(background=False, quiet=True)
''')

def test_a_killed_kernels_run_shows_as_killed_and_loads_from_its_checkpoint(tmp_path):
    d = tmp_path/'runs'/'killed'
    p = subprocess.Popen([sys.executable, '-c', KILLED, str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 180
        while not (d/'checkpoint-6').exists():
            assert p.poll() is None and time.time() < end, "the training process ended or took too long"
            time.sleep(.2)
    finally: p.kill(); p.wait()
    r = runs(tmp_path/'runs')[0]
    assert r.state == 'killed' and r.summary['step'] >= 6
    assert runs(tmp_path/'runs').rows()[0]['state'].startswith('killed at step')
    back = r.load(model=tiny_model())
    assert back.state == 'stopped' and back.loaded_from.name.startswith('checkpoint-')
    assert back.loaded_from == last_checkpoint(d)  # the newest whole checkpoint, not an older one

def test_report_is_one_self_contained_page(two_runs):
    root, made = two_runs
    page = made[0].report()
    text = page.read_text()
    assert page == root/'lr0.01'/'report.html'
    assert text.count("src='data:image/png;base64,") == 2 and '<link' not in text and '<script' not in text
    assert 'says_quill' in text and 'Win rate of tuned over base (says_quill): <b>100%</b>' in text
    assert 'run = sft(model, data, lr=0.01, max_steps=30' in text
    p2 = made[1].report(prompts=[Q], max_new_tokens=8)
    t2 = p2.read_text()
    assert 'Not evaluated yet' in t2 and 'Base and tuned answers' in t2

def test_report_to_tensorboard_gets_the_same_losses(tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = sft(tiny_model(), ROWS, lr=1e-2, max_steps=6, run_dir=tmp_path/'tb', report_to='tensorboard', **KW).start(background=False, quiet=True)
    ev = [p for p in (tmp_path/'tb').rglob('events.out.tfevents.*')]
    assert ev, "no TensorBoard event file in the run folder"
    acc = EventAccumulator(str(ev[0].parent)); acc.Reload()
    tb = [(e.step, round(e.value, 4)) for e in acc.Scalars('train/loss')]
    assert tb == [(h['step'], round(h['loss'], 4)) for h in run.history if 'loss' in h]

def test_report_to_an_integration_that_is_not_installed_says_what_to_install(tmp_path):
    import importlib.util
    if importlib.util.find_spec('wandb'): pytest.skip('wandb is installed here')
    with pytest.raises(FtnbError, match=r"report_to='wandb' needs the wandb package.*pip install wandb"):
        sft(tiny_model(), ROWS, max_steps=2, run_dir=tmp_path/'w', report_to='wandb')
    with pytest.raises(FtnbError, match=r"report_to='tensorbord' is not an integration"):
        sft(tiny_model(), ROWS, max_steps=2, run_dir=tmp_path/'w', report_to='tensorbord')

def test_a_dpo_run_on_an_sft_run_loads_back_through_the_chain(tmp_path):
    from ftnb.prefs import dpo
    from ftnb.example_data import preference_pairs
    s = sft(tiny_model(), ROWS, lr=1e-2, max_steps=10, run_dir=tmp_path/'runs'/'sft', **KW).start(background=False, quiet=True)
    d = dpo(s, preference_pairs('correct', n=16), max_steps=4, batch_size=4, lr=1e-2, run_dir=tmp_path/'runs'/'dpo').start(background=False, quiet=True)
    q = "Tom has 3 boxes of 4 pens. How many pens?"
    back = load_run(tmp_path/'runs'/'dpo', model=tiny_model())
    assert back.generate(q, max_new_tokens=6) == d.generate(q, max_new_tokens=6)
    assert back.compare([q], max_new_tokens=6).base == d.compare([q], max_new_tokens=6).base  # adapter off: the SFT model, as in training
    moved = tmp_path/'moved'; (tmp_path/'runs').rename(moved)  # a runs folder moved elsewhere still chains
    assert load_run(moved/'dpo', model=tiny_model()).generate(q, max_new_tokens=6) == d.generate(q, max_new_tokens=6)
