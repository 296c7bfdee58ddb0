"""Sweeps (`ftnb.sweep`): four runs and more of a recipe, one at a time, driven through the live view's own widgets
(headless, ipywidgets' buttons clicked): a run stopped by hand, one cloned with a changed setting mid-sweep, one
stopped early by successive halving, the best chosen and chained into DPO; bad settings and folders refused."""
import json, time
import pytest
from ftnb.core import FtnbError
from ftnb.models import tiny_model
from ftnb.sft import sft
from ftnb.prefs import dpo
from ftnb.example_data import preference_pairs
from ftnb.sweep import sweep, drawn_settings, SweepView

ROWS = [dict(prompt=f"What is {i} plus {i}?", completion=f"{2 * i}.") for i in range(40)]


@pytest.fixture(scope='module')
def net(): return tiny_model(seed=0)


def until(cond, timeout=120):
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, 'timed out'
        time.sleep(0.02)


def test_a_sweep_stops_a_run_by_hand_clones_one_mid_sweep_halves_the_worst_and_its_best_run_chains_into_dpo(net, tmp_path):
    sw = sweep(sft, net, ROWS, grid={'lr': [3e-3, 1e-2, 1e-5, 1e-6], 'lora.r': [4]}, max_steps=20, path=tmp_path/'sw')
    assert [t.state for t in sw.trials] == ['queued'] * 4 and 'queued' in repr(sw)
    v = sw.view()
    assert isinstance(v, SweepView) and v.rows.value.count('<tr>') == 5  # a header and a row per run
    sw.start(background=True, quiet=True)
    until(lambda: sw.current is not None and sw.current.i == 1 and sw.current.run is not None and sw.current.run.step >= 6)  # past its first rung
    v.pick.value = 1
    v.changes.value = 'lr=5e-3, lora.r=8'
    v.clone.click()  # a clone of run 1, queued while run 1 trains
    assert 'queued run 4' in v.msg.value and sw.trials[4].settings == {'lr': 5e-3, 'lora.r': 8}
    v.stop_run.click()  # then run 1 itself stops, by hand
    v.changes.value = 'lr 3'
    v.clone.click()
    assert 'name=value' in v.msg.value and len(sw.trials) == 5  # a typo is said under the controls, nothing queued
    sw.wait(timeout=600)
    states = [t.state for t in sw.trials]
    assert sw.state == 'finished' and states[:2] == ['finished', 'stopped'] and sw.trials[1].stopped_by == 'you'
    assert states[2:4] == ['stopped', 'stopped'] and all('halving at step 4' in t.stopped_by for t in sw.trials[2:4])
    assert states[4] in ('finished', 'stopped') and sw.trials[4].parent == 1 and sw[4].settings['lora']['r'] == 8
    assert sw[0].run_dir == tmp_path/'sw'/'00' and sw[0].settings['lr'] == 3e-3  # each run in its own folder, its settings
    doc = json.loads((tmp_path/'sw'/'sweep.json').read_text())
    assert doc['state'] == 'finished' and [r['state'] for r in doc['runs']] == states
    assert doc['runs'][1]['stopped_by'] == 'you' and doc['runs'][4]['parent'] == 1
    best = sw.best()
    done = [t for t in sw.trials if t.state == 'finished']
    assert best is min(done, key=lambda t: t.value('eval_loss')).run and best.state == 'finished'
    table = sw.table()
    assert list(table.columns[:2]) == ['lr', 'lora.r'] and sw[int(table.index[0])].run_dir is not None
    assert table['eval_loss'].dropna().is_monotonic_increasing  # best first
    fig = sw.plot()
    assert [a.get_xlabel() for a in fig.axes] == ['lr', 'lora.r'] and fig.axes[0].get_xscale() == 'log'
    assert 'img' in sw.html() and 'stopped' in v.rows.value  # the view's rows follow the runs
    chained = dpo(best, preference_pairs('concise')[:8], max_steps=1, batch_size=2, run_dir=tmp_path/'dpo')
    assert chained.model.run_dir == str(best.run_dir) and chained.state == 'ready'  # built on the best run's weights


def test_a_random_space_is_drawn_in_range_and_the_same_for_the_same_seed():
    a = drawn_settings({'lr': (1e-5, 1e-3), 'lora.r': [4, 8, 16], 'max_steps': (10, 40)}, trials=30, seed=1)
    assert a == drawn_settings({'lr': (1e-5, 1e-3), 'lora.r': [4, 8, 16], 'max_steps': (10, 40)}, trials=30, seed=1)
    assert all(1e-5 <= s['lr'] <= 1e-3 and s['lora.r'] in (4, 8, 16) and isinstance(s['max_steps'], int) for s in a)
    assert min(s['lr'] for s in a) < 1e-4 < max(s['lr'] for s in a)  # log-uniform: both decades drawn
    with pytest.raises(FtnbError, match=r"space\['lr'\] = \(0, 1\)"):
        drawn_settings({'lr': (0, 1)}, trials=2)


@pytest.mark.parametrize('kw,msg', [
    (dict(grid={'lrr': [1e-4]}), r"no setting 'lrr' \(did you mean 'lr'\?\)"),
    (dict(grid={'lr': [1e-4, 30.0]}), r"lr=30.0: lr must be"),
    (dict(grid={'lr': []}), r"non-empty list"),
    (dict(grid={'lr': [1e-4]}, space={'lr': [1e-4]}), r"grid= .* or space="),
    (dict(grid={'lr': [1e-4]}, max_steps=0), r"max_steps=0"),
    (dict(grid={'run_dir': ['a', 'b']}), r"no setting 'run_dir'"),
])
def test_bad_settings_are_refused_before_anything_trains_naming_the_setting(net, tmp_path, kw, msg):
    with pytest.raises(FtnbError, match=msg):
        sweep(sft, net, ROWS, path=tmp_path/'sw', **kw)
    assert not (tmp_path/'sw').exists()  # nothing written


def test_a_folder_that_holds_anything_is_refused_and_left_as_it_was(net, tmp_path):
    (tmp_path/'sw').mkdir(); (tmp_path/'sw'/'notes.txt').write_text('mine')
    with pytest.raises(FtnbError, match='is not empty'):
        sweep(sft, net, ROWS, grid={'lr': [1e-4]}, path=tmp_path/'sw')
    assert [p.name for p in (tmp_path/'sw').iterdir()] == ['notes.txt'] and (tmp_path/'sw'/'notes.txt').read_text() == 'mine'


def test_clone_and_stop_name_the_problem(net, tmp_path):
    sw = sweep(sft, net, ROWS, grid={'lr': [1e-4]}, max_steps=2, path=tmp_path/'sw')
    with pytest.raises(FtnbError, match='there is no run 7'): sw.clone(7, lr=1e-3)
    with pytest.raises(FtnbError, match='needs the settings that change'): sw.clone(0)
    with pytest.raises(FtnbError, match='lr must be'): sw.clone(0, lr=-1.0)
    with pytest.raises(FtnbError, match='has not started yet'): sw[0]
    sw.stop(0)  # a queued run never starts
    sw.start(background=False, quiet=True)
    assert sw.trials[0].state == 'queued' and sw.trials[0].stopped_by.startswith('you') and sw.state == 'finished'
    with pytest.raises(FtnbError, match='No finished run'): sw.best()


def test_every_run_starts_from_the_same_base_so_the_same_settings_give_the_same_curve(tmp_path):
    "Runs after the first start from a copy of the model without the earlier runs' adapters: the same weights."
    sw = sweep(sft, tiny_model(seed=0), ROWS, grid={'lr': [2e-2, 2e-2, 2e-2]}, max_steps=6, halving=None, path=tmp_path/'sw')
    sw.start(background=False, quiet=True)
    curves = [[h['eval_loss'] for h in t.run.history if 'eval_loss' in h] for t in sw.trials]
    assert len(curves[0]) >= 3 and curves[0] == curves[1] == curves[2]


def test_optuna_draws_each_runs_settings_when_its_turn_comes_and_is_told_how_it_did(net, tmp_path):
    optuna = pytest.importorskip('optuna')
    sw = sweep(sft, net, ROWS, space={'lr': (1e-5, 3e-2), 'lora.r': [4, 8]}, trials=4, search='optuna', max_steps=8,
               path=tmp_path/'sw')
    assert [t.settings for t in sw.trials] == [{}] * 4 and sw.keys == ['lr', 'lora.r']  # nothing drawn yet
    with pytest.raises(FtnbError, match='drawn when its turn comes'): sw.clone(0, lr=1e-3)
    sw.start(background=False, quiet=True)
    assert all(1e-5 <= t.settings['lr'] <= 3e-2 and t.settings['lora.r'] in (4, 8) for t in sw.trials)
    told = {t.number: t.state for t in sw.study.trials}
    assert len(told) == 4 and all(told[t.asked.number] == (optuna.trial.TrialState.COMPLETE if t.state == 'finished'
                                  else optuna.trial.TrialState.PRUNED) for t in sw.trials)
    done = [t for t in sw.trials if t.state == 'finished']
    assert sw.study.best_value == min(t.value('eval_loss') for t in done)
    with pytest.raises(FtnbError, match="search='random' or 'optuna'"):
        sweep(sft, net, ROWS, grid={'lr': [1e-3]}, search='optuna', path=tmp_path/'other')


@pytest.mark.slow
def test_devices_train_runs_side_by_side_as_launched_jobs_and_halving_stops_a_job(tmp_path):
    "devices=['cpu', 'cpu']: two launched jobs at once (real processes), the third started as one ends; GPUs the same way."
    sw = sweep(sft, tiny_model(seed=0), ROWS, grid={'lr': [3e-3, 1e-2, 1e-6]}, max_steps=8, devices=['cpu', 'cpu'],
               path=tmp_path/'sw')
    sw.start(background=True, quiet=True)
    together = set()
    while sw.thread.is_alive():
        together.add(tuple(t.i for t in sw.active)); time.sleep(0.1)
    assert (0, 1) in together and max(map(len, together)) == 2  # two at once, never more
    assert [t.state for t in sw.trials] == ['finished', 'finished', 'stopped'], repr(sw)
    assert sw.trials[2].stopped_by.startswith('halving at step') and sw.trials[2].run.step < 8  # judged while its job trained
    assert all(isinstance(t.run.process, __import__('ftnb.launch').launch.Job) for t in sw.trials)
    assert sw.best().generate('What is 1 plus 1?', max_new_tokens=3)  # the job's weights, taken here
    assert 'device' in sw.table().columns and set(sw.table()['device']) == {'cpu'}
