"""Run.export and Run.launch: a job folder that reads back as written, and 2 processes on the CPU over gloo followed live from here."""
import json, yaml
from pathlib import Path
import pytest
from accelerate.commands.config.config_args import load_config_from_file
import ftnb.launch
from ftnb.core import FtnbError
from ftnb.models import tiny_model
from ftnb.example_data import persona_data, preference_pairs
from ftnb.prefs import dpo
from ftnb.data import load_data
from ftnb.sft import sft
from ftnb.launch import PROFILES, STOP_FILE

def tiny_run(tmp_path, name='run', steps=6, **kw):
    kw = dict(lora=False, lr=1e-2, max_steps=steps, batch_size=4, run_dir=tmp_path/name, logging_steps=1, save_steps=1000) | kw
    return sft(tiny_model(seed=0), persona_data(n=32), **kw)

def loss_steps(history): return [h['step'] for h in history if 'loss' in h]

def test_export_writes_a_job_that_makes_the_same_call(tmp_path):
    run = tiny_run(tmp_path, eval=4)
    job = run.export(tmp_path/'job', num_processes=2)
    src = (job/'train.py').read_text()
    compile(src, 'train.py', 'exec')
    call = run.code().split('\n')[0]
    assert call[:-1] + ', run_dir=run_dir)' in src and "load_model(str(here/'model'), dtype='float32')" in src  # tiny exists only in memory: saved
    assert (job/'model'/'config.json').exists() and 'train_job(run' in src
    back = load_data(job/'data.jsonl')
    assert back.kind == run.call[1]['data'].kind and back.rows == run.call[1]['data'].rows
    cfg = yaml.safe_load((job/'config.yaml').read_text())
    assert type(run.args)(**cfg, output_dir=str(run.run_dir)).to_dict() == run.args.to_dict()
    for p in PROFILES:
        c = load_config_from_file(str(job/'accelerate'/f'{p}.yaml'))
        assert c.num_processes == 2 and c.mixed_precision == ('bf16' if run.args.bf16 else 'no')
    assert load_config_from_file(str(job/'accelerate'/'cpu.yaml')).use_cpu
    readme = (job/'README.md').read_text()
    assert 'PROFILE=fsdp2 NUM_PROCESSES=8 bash launch.sh' in readme and 'accelerate launch --config_file accelerate/ddp.yaml' in readme

def test_export_points_a_chained_run_at_the_run_it_continues(tmp_path):
    sft_dir = tmp_path/'sft'; sft_dir.mkdir()
    (sft_dir/'settings.json').write_text(json.dumps(dict(method='sft', model='smollm2-135m-instruct')))
    m = tiny_model(seed=0); m.run_dir = str(sft_dir)  # what `run.policy()` gives a DPO run
    src = (sft(m, persona_data(n=16), lora=False, max_steps=2, batch_size=4, run_dir=tmp_path/'run').export(tmp_path/'job')/'train.py').read_text()
    assert f"model = load_run({str(sft_dir.resolve())!r}).policy()" in src and not (tmp_path/'job'/'model').exists()

def test_two_processes_train_and_are_followed_live(tmp_path):
    run = tiny_run(tmp_path).sample_every(3, prompts=['Who are you?'], max_new_tokens=4)
    seen = dict(log=[], sample=[], state=[])
    run.on('log', lambda run, record: seen['log'].append(record['step']))
    run.on('sample', lambda run, record: seen['sample'].append(record['step']))
    run.on('state', lambda run, state: seen['state'].append(state))
    run.launch(num_processes=2).wait()
    d = run.run_dir
    summary = json.loads((d/'summary.json').read_text())
    log = (d/'launch.log').read_text()
    assert run.state == 'finished' and summary['world_size'] == 2 and summary['state'] == 'finished', log[-2000:]
    assert 'ftnb: process 0 of 2: finished at step 6/6' in log and 'ftnb: process 1 of 2: finished at step 6/6' in log
    steps = [json.loads(l)['step'] for l in (d/'metrics.jsonl').read_text().splitlines() if 'loss' in json.loads(l)]
    assert steps == list(range(1, 7)) and loss_steps(run.history) == steps and seen['log'] == list(range(1, 7)) + [6]  # the last: train()'s summary
    assert seen['sample'] == [0, 3, 6] and [s['step'] for s in run.samples] == [0, 3, 6]
    assert seen['state'] == ['running', 'finished'] and run.step == 6
    assert run.generate('Who are you?', max_new_tokens=4) == run.samples[-1]['outputs'][0]  # the job's last sample, from the weights taken here
    assert (run.save()/'config.json').exists()
    chained = dpo(run, preference_pairs(n=8), max_steps=1, batch_size=2, run_dir=tmp_path/'dpo')  # DPO on the launched SFT run
    src = (chained.export(tmp_path/'dpo-job')/'train.py').read_text()
    assert f"model = load_run({str(d.resolve())!r}).policy()" in src

def test_stop_then_resume_here_from_the_jobs_checkpoint(tmp_path):
    run = tiny_run(tmp_path, steps=8, lora=True)  # LoRA: the adapter is taken onto this run's model, and trains on here
    run.launch(num_processes=2)
    run.stop()  # before the first step ends: the job stops after step 1, with a checkpoint
    run.wait()
    assert run.state == 'stopped' and run.step == 1 and (run.run_dir/'checkpoint-1').is_dir() and not list(run.run_dir.glob('.staging'))
    run.resume(background=False)
    assert run.state == 'finished' and loss_steps(run.history) == list(range(1, 9))
    assert [json.loads(l)['step'] for l in (run.run_dir/'metrics.jsonl').read_text().splitlines() if 'loss' in json.loads(l)] == list(range(1, 9))
    cmp = run.compare(['Who are you?'], max_new_tokens=6)
    assert cmp.tuned == [run.generate('Who are you?', max_new_tokens=6)] and len(cmp.base) == 1

def test_a_job_that_dies_is_failed_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(ftnb.launch, 'TRAIN_PY', ftnb.launch.TRAIN_PY.replace("here/'data.jsonl'", "here/'missing.jsonl'"))
    run = tiny_run(tmp_path, steps=2)
    run.launch(num_processes=2)
    with pytest.raises(FtnbError, match='exit code') as e: run.wait()
    assert run.state == 'failed' and 'missing.jsonl' in str(e.value)
    assert isinstance(run.process, ftnb.launch.Job) and run.process.here and 'failed (exit code' in repr(run.process)

def test_a_job_started_elsewhere_says_how_it_ended(tmp_path):
    "What `follow` follows is a Job: running while its folder is locked, then ended as its summary says, and why."
    (tmp_path/'summary.json').write_text('{"state": "failed"}')
    job = ftnb.launch.Job(tmp_path)
    assert job.poll() == 1 and repr(job) == f"Job writing {tmp_path}: started elsewhere, failed (exit code 1)"
    assert "summary.json says 'failed'" in str(job.failure()) and 'slurm' in str(job.failure())
    (tmp_path/'summary.json').write_text('{"state": "finished"}')
    assert ftnb.launch.Job(tmp_path).poll() == 0

def test_launch_refuses_what_cannot_run(tmp_path):
    run = tiny_run(tmp_path)
    with pytest.raises(FtnbError, match='needs GPUs'): run.launch(2, profile='zero3', cpu=True)
    with pytest.raises(FtnbError, match='split'): run.launch(3, cpu=True)

def test_a_relative_run_folder_launches_from_any_working_directory(tmp_path, monkeypatch):
    "`sft(..., run_dir='ddp')` then `launch(2)`: accelerate ran in the job folder and was handed 'ddp/job/accelerate/cpu.yaml' relative to the notebook."
    monkeypatch.chdir(tmp_path)
    run = sft(tiny_model(seed=0), persona_data(n=32), lora=False, lr=1e-2, max_steps=2, batch_size=4, run_dir='ddp', logging_steps=1, save_steps=1000)
    run.launch(num_processes=2).wait()
    assert run.state == 'finished' and run.step == 2, (tmp_path/'ddp'/'launch.log').read_text()[-2000:]

def test_a_qlora_run_exports_a_qlora_job(tmp_path):
    "The job loaded the model without quantize=, so a 4-bit notebook run became a 16-bit job."
    t = tiny_model(seed=0); t.model.save_pretrained(tmp_path/'base'); t.tokenizer.save_pretrained(tmp_path/'base')
    from ftnb.models import load_model
    m = load_model(str(tmp_path/'base'), dtype='float32')
    run = sft(m, persona_data(n=16), max_steps=1, batch_size=4, run_dir=tmp_path/'run')
    assert f"load_model({str((tmp_path/'base').resolve())!r})" in (run.export(tmp_path/'job16')/'train.py').read_text()
    m.model.is_loaded_in_4bit = True  # what bitsandbytes marks (no GPU here to load one)
    src = (run.export(tmp_path/'job4')/'train.py').read_text()
    assert f"load_model({str((tmp_path/'base').resolve())!r}, quantize=4)" in src

@pytest.mark.slow
def test_a_job_on_chosen_gpus_gets_them_by_the_machines_ids(tmp_path, monkeypatch):
    "gpus= numbers GPUs as this kernel does: where the kernel sees GPUs 4 and 5, its GPU 1 is the machine's 5."
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,5')
    run = tiny_run(tmp_path, steps=1)
    run.launch(num_processes=1, cpu=True, gpus='1').wait()
    assert run.state == 'finished' and (run.run_dir/'launch.log').read_text().startswith('CUDA_VISIBLE_DEVICES=5 bash ')
    with pytest.raises(FtnbError, match='there is no GPU 2'): tiny_run(tmp_path/'b').launch(num_processes=1, cpu=True, gpus='2')
