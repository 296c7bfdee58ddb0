"""A run folder belongs to one run: a new run is refused in a folder holding work, a run cannot be built on its own folder,
one process trains in a folder at a time, loading picks weights by recorded step, `runs()` names what it skips, and
nothing goes out on the network unless asked."""
import json, os, subprocess, sys, textwrap, time, warnings
from pathlib import Path
import pytest
from ftnb.core import FtnbError, Hardware
from ftnb.files import FolderLock, LOCK
from ftnb.history import load_run, runs
from ftnb.models import tiny_model
from ftnb.example_data import persona_data
from ftnb.sft import sft
from ftnb.trainer import last_checkpoint

ROOT = Path(__file__).resolve().parent.parent

def tiny(d, steps=2, **kw): return sft(tiny_model(), persona_data(n=16), max_steps=steps, batch_size=4, run_dir=d, save_steps=kw.pop('save_steps', 2), **kw)
def steps_logged(d): return [r['step'] for r in map(json.loads, (d/'metrics.jsonl').read_text().splitlines()) if 'loss' in r]

def test_a_new_run_in_a_finished_runs_folder_is_refused_and_overwrite_moves_the_old_one_aside(tmp_path):
    d = tmp_path/'quill'
    old = tiny(d, steps=2, lr=1e-3).start(background=False, quiet=True)
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    new = tiny(d, steps=4, lr=5e-3, save_steps=3)
    with pytest.raises(FtnbError, match=r"holds a run \(finished at step 2\).*checkpoint-2.*run.resume\(\).*overwrite=True"): new.start(background=False, quiet=True)
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before and not (d/LOCK).exists()  # nothing touched, the lock given back
    new.start(background=False, quiet=True, overwrite=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith('quill.replaced-')]
    assert len(aside) == 1 and {p.name: p.read_bytes() for p in aside[0].iterdir() if p.is_file()} == before  # the old run whole, elsewhere
    assert sorted(p.name for p in d.glob('checkpoint-*')) == ['checkpoint-3', 'checkpoint-4'] and steps_logged(d)[0] == 1
    back = load_run(d, model=tiny_model())
    assert back.loaded_from.name == 'checkpoint-4' and back.args.learning_rate == 5e-3  # the new weights under the new settings
    assert load_run(aside[0], model=tiny_model()).args.learning_rate == 1e-3

def test_the_same_run_started_again_without_resume_is_refused(tmp_path):
    run = tiny(tmp_path/'r').start(background=False, quiet=True)
    with pytest.raises(FtnbError, match='run.resume'): run.start(background=False, quiet=True)
    run.max_steps = run.args.max_steps = 4
    run.resume(background=False); assert run.step == 4

def test_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path/'notes.md').write_text('my notes')
    with pytest.raises(FtnbError, match=r"files that are not a run's: notes.md"): tiny(tmp_path).start(background=False, quiet=True)
    assert (tmp_path/'notes.md').read_text() == 'my notes' and sorted(os.listdir(tmp_path)) == ['notes.md']

def test_a_run_cannot_be_built_on_its_own_folder_and_a_loop_in_a_chain_is_an_error(tmp_path):
    base = tiny(tmp_path/'sft').start(background=False, quiet=True)
    with pytest.raises(FtnbError, match='same folder'): sft(base, persona_data(n=16), max_steps=1, run_dir=base.run_dir)
    s = json.loads((base.run_dir/'settings.json').read_text())
    (base.run_dir/'settings.json').write_text(json.dumps(s | dict(base_run=str(base.run_dir))))  # as the accepted run once wrote it
    with pytest.raises(FtnbError, match='leads back to itself'): load_run(base.run_dir, model=tiny_model())

JOB = """
import sys, time
from ftnb.example_data import persona_data
from ftnb.models import tiny_model
from ftnb.sft import sft
from ftnb.core import FtnbError
run = sft(tiny_model(), persona_data(n=16), max_steps=int(sys.argv[2]), batch_size=4, run_dir=sys.argv[1], save_steps=5)
run.on('log', lambda **kw: time.sleep(.2))
try: run.start(background=False, quiet=True)
except FtnbError as e: print('REFUSED', e); sys.exit(3)
print('TRAINED', run.step)
"""

def test_two_processes_starting_one_folder_one_trains_the_other_is_refused(tmp_path):
    d, env = tmp_path/'r', dict(os.environ, OMP_NUM_THREADS='1')
    ps = [subprocess.Popen([sys.executable, '-c', JOB, str(d), '15'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in ps]
    codes = sorted(p.returncode for p in ps)
    assert codes == [0, 3], outs
    refused = next(o for o, p in zip(outs, ps) if p.returncode == 3)[0]
    assert 'in use by process' in refused or 'holds a run' in refused, refused  # the lock, or (if it came after the first finished) the first's work
    assert steps_logged(d) == list(range(1, 16))  # one run's steps, once each

def test_a_live_lock_is_refused_and_a_dead_ones_is_taken_over(tmp_path):
    d = tmp_path/'r'; d.mkdir()
    holder = subprocess.Popen([sys.executable, '-c', f"from ftnb.files import FolderLock; FolderLock({str(d)!r}).acquire(); print('held', flush=True); import time; time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'held'
    run = tiny(d)
    with pytest.raises(FtnbError, match=f'in use by process {holder.pid}'): run.start(background=False, quiet=True)
    holder.kill(); holder.wait()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        run.start(background=False, quiet=True)
    assert run.state == 'finished' and any(f'process {holder.pid}, which is no longer running' in str(x.message) for x in w)
    assert not (d/LOCK).exists()

def test_load_run_picks_weights_by_recorded_step_not_file_times(tmp_path):
    d = tmp_path/'r'
    run = tiny(d, steps=2).start(background=False, quiet=True)
    run.save()  # adapter/ at step 2, recorded
    assert json.loads((d/'summary.json').read_text())['saves'] == [dict(path='adapter', step=2, format='hf')]
    assert load_run(d, model=tiny_model()).loaded_from.name == 'adapter'
    run.max_steps = run.args.max_steps = 4; run.resume(background=False)
    os.utime(d/'adapter', (time.time() + 100, time.time() + 100))  # newer by its clock, older by its step
    assert load_run(d, model=tiny_model()).loaded_from.name == 'checkpoint-4'

def test_a_half_written_save_left_by_an_older_ftnb_does_not_hide_a_whole_checkpoint(tmp_path):
    d = tmp_path/'r'
    tiny(d, steps=2).start(background=False, quiet=True)
    (d/'adapter').mkdir(); (d/'adapter'/'adapter_model.safetensors').write_bytes(b'\0' * 10)  # Ctrl-C before its config was written
    assert load_run(d, model=tiny_model()).loaded_from == last_checkpoint(d)

def test_runs_lists_what_it_can_read_and_names_what_it_skipped(tmp_path):
    good = tiny(tmp_path/'good').start(background=False, quiet=True)
    (tmp_path/'stray').mkdir(); (tmp_path/'stray'/'settings.json').write_text('{"colour": "blue"}')
    info = json.loads((good.run_dir/'settings.json').read_text())
    (tmp_path/'ppo').mkdir(); (tmp_path/'ppo'/'settings.json').write_text(json.dumps(info | dict(method='ppo')))
    (tmp_path/'odd').mkdir(); (tmp_path/'odd'/'settings.json').write_text(json.dumps(info))
    (tmp_path/'odd'/'summary.json').write_text(json.dumps(dict(state='finished', step='lots', saves=[dict(path='../../etc', step=1)])))
    h = runs(tmp_path)
    assert [r.name for r in h] == ['good']
    why = dict((Path(f).name, w) for f, w in h.skipped)
    assert set(why) == {'stray', 'ppo', 'odd'}
    assert "method is 'ppo'" in why['ppo'] and "step is 'lots'" in why['odd'] and 'saves' in why['odd']
    assert 'Skipped ppo' in repr(h) and 'Skipped stray' in h._repr_html_()
    with pytest.raises(FtnbError, match=r"summary.json: step is 'lots'"): load_run(tmp_path/'odd', model=tiny_model())

def test_a_cpu_plan_beyond_the_memory_available_is_refused_unless_insisted(tmp_path):
    run = tiny(tmp_path/'r', steps=1)
    run.hardware = Hardware('cpu', 'small', memory_gb=.01, free_gb=.01, cpu_bf16=False)
    with pytest.raises(FtnbError, match=r'exceed_memory=True'): run.start(background=False, quiet=True)
    assert not (tmp_path/'r').exists()  # refused before anything was written
    run.start(background=False, quiet=True, exceed_memory=True)
    assert run.state == 'finished'

NET = """
import os, socket, tempfile
tries = []
def block(*a, **k): tries.append(a); raise OSError('network blocked by the test')
socket.getaddrinfo = socket.create_connection = block
socket.socket.connect = lambda self, *a: block(*a)
import transformers, trl, huggingface_hub  # imported before ftnb, as a notebook may
from ftnb.example_data import persona_data
from ftnb.models import tiny_model
from ftnb.sft import sft
run = sft(tiny_model(), persona_data(n=16), max_steps=1, batch_size=4, run_dir=tempfile.mkdtemp() + '/r')
run.start(background=False, quiet=True)
import time; time.sleep(1)  # the usage ping is sent from a thread
print('STATE', run.state, 'ATTEMPTS', len(tries))
"""

@pytest.mark.parametrize('opt_in', [False, True])
def test_training_sends_nothing_unless_the_user_opts_in(opt_in):
    env = {k: v for k, v in os.environ.items() if k not in ('HF_HUB_OFFLINE', 'HF_HUB_DISABLE_TELEMETRY', 'TRANSFORMERS_OFFLINE', 'HF_DATASETS_OFFLINE', 'DO_NOT_TRACK', 'DISABLE_TELEMETRY', 'CI')}  # TRL sends nothing under CI=1, so CI would hide the ping
    if opt_in: env['HF_HUB_DISABLE_TELEMETRY'] = '0'
    out = subprocess.run([sys.executable, '-c', NET], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT).stdout
    assert 'STATE finished' in out, out
    assert ('ATTEMPTS 0' in out) != opt_in, out  # opted in, TRL's ping tries to go out (and the test blocks it)

def test_a_run_trained_with_gpu_only_settings_loads_on_this_machine(tmp_path):
    "A GPU run's config (tf32, bf16 evaluation, a paged 8-bit optimizer, FSDP, compile) loads on a CPU: the machine's own fields are chosen here."
    run = tiny(tmp_path/'r').start(background=False, quiet=True)
    s = json.loads((run.run_dir/'settings.json').read_text())
    s['trl_config'] |= dict(tf32=True, bf16=True, bf16_full_eval=True, optim='paged_adamw_8bit', fsdp='full_shard', torch_compile=True, ddp_backend='nccl')
    (run.run_dir/'settings.json').write_text(json.dumps(s))
    back = load_run(run.run_dir, model=tiny_model())
    a = back.args
    assert (a.tf32, a.bf16_full_eval, a.torch_compile, a.use_cpu) == (None, False, False, True) and not a.fsdp
    assert isinstance(back.generate('Hi', max_new_tokens=2), str)

def test_a_folder_whose_summary_is_not_json_is_still_refused_with_what_it_holds(tmp_path):
    d = tmp_path/'r'
    tiny(d).start(background=False, quiet=True)
    (d/'summary.json').write_text('{"state": "fini')  # cut short by another tool
    with pytest.raises(FtnbError, match=r'holds work: 1 checkpoint'): tiny(d).start(background=False, quiet=True)
