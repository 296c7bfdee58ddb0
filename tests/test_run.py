"""Run and sft() on tiny_model: training, stopping, failures, checkpoints that survive kills, resume, generate and save."""
import os, sys, json, time, signal, subprocess, threading
from pathlib import Path
import pytest, torch
from ftnb.core import FtnbError, Hardware
from ftnb.models import tiny_model, load_model
from ftnb.example_data import persona_data
from ftnb.sft import sft
from ftnb.recipe import choose_max_length
from ftnb.trainer import last_checkpoint, CHECKPOINTING
from ftnb.budget import train_settings, memory_estimate

SCRIPT = Path(__file__).parent/'scripts'/'train_tiny.py'

def tiny_run(tmp_path, steps=8, **kw):
    kw = dict(lora=False, lr=1e-2, max_steps=steps, batch_size=4, run_dir=tmp_path/'run', logging_steps=1, save_steps=1000) | kw
    return sft(tiny_model(seed=0), persona_data(n=48), **kw)

def loss_steps(history): return [h['step'] for h in history if 'loss' in h]

def test_sft_trains_writes_its_folder_and_learns(tmp_path):
    run = tiny_run(tmp_path, steps=15)
    assert run.state == 'ready' and 'ready' in repr(run)
    run.start(background=False)
    assert run.state == 'finished' and run.step == 15
    losses = [h['loss'] for h in run.history if 'loss' in h]
    assert loss_steps(run.history) == list(range(1, 16)) and losses[-1] < losses[0] - 2
    lines = [json.loads(l) for l in (run.run_dir/'metrics.jsonl').read_text().splitlines()]
    assert [l['step'] for l in lines if 'loss' in l] == list(range(1, 16))
    s = json.loads((run.run_dir/'settings.json').read_text())
    assert s['method'] == 'sft' and s['trl_config']['max_steps'] == 15 and s['trl_config']['use_cpu'] and s['trl_config']['bf16'] == run.hardware.bf16
    assert s['trl_config'][CHECKPOINTING] is False and s['settings']['loss'] == 'answers'
    assert run.peak_gb > 0 and run.training_gb >= 0 and 'training added' in run.estimate_table() and 'measured' in run.estimate_table()

def test_training_uses_answer_only_labels(tmp_path):
    run = tiny_run(tmp_path, steps=1); run._build()
    row = run.trainer.train_dataset[0]
    trained = run.tokenizer.decode([i for i, l in zip(row['input_ids'], row['labels']) if l != -100])
    assert 'Quill' in trained and 'user' not in trained

def test_generate_right_after_training_equals_after_reload(tmp_path):
    run = tiny_run(tmp_path, steps=6); run.start(background=False)
    prompts = ['Who are you?', 'What is 2 + 2?']
    now = run.generate(prompts, max_new_tokens=8)
    back = load_model(str(run.save()))
    assert back.generate(prompts, max_new_tokens=8) == now

def test_lora_adapter_saves_merges_and_reloads(tmp_path):
    base_dir = tmp_path/'base'; t = tiny_model(seed=1); t.model.save_pretrained(base_dir); t.tokenizer.save_pretrained(base_dir)
    run = sft(load_model(str(base_dir)), persona_data(n=32), lr=5e-2, max_steps=4, batch_size=4, run_dir=tmp_path/'run', logging_steps=1)
    run.start(background=False)
    now = run.generate(['Who are you?'], max_new_tokens=6)
    adapter = run.save(); merged = run.save(merged=True)
    assert (adapter/'adapter_config.json').exists() and (merged/'config.json').exists()
    assert load_model(str(adapter)).generate(['Who are you?'], max_new_tokens=6) == now
    assert load_model(str(merged)).generate(['Who are you?'], max_new_tokens=6) == now
    cmp = run.compare(['Who are you?'], max_new_tokens=6)
    assert cmp.tuned == now and len(cmp.base) == 1 and 'base' in cmp._repr_html_()
    assert run.generate(['Who are you?'], max_new_tokens=6) == now  # merging worked on a copy: the run still has its adapter
    assert any('lora_A' in n for n, _ in run.net.named_parameters())

def test_stop_from_another_thread_within_a_step(tmp_path):
    run = tiny_run(tmp_path, steps=40)
    seen = []
    run.on('log', lambda run, record: (seen.append(record['step']), time.sleep(0.05)))
    run.start(background=True)
    while run.step < 3: time.sleep(0.01)
    with pytest.raises(FtnbError, match='already running'): run.start(background=True)
    asked = run.step
    run.stop(wait=True, timeout=60)
    assert run.state == 'stopped' and run.step <= asked + 1
    assert last_checkpoint(run.run_dir).name == f'checkpoint-{run.step}'
    assert isinstance(run.generate('Hi', max_new_tokens=3), str)
    run.resume(background=False)  # and it goes on from there to the end
    assert run.state == 'finished' and loss_steps(run.history) == list(range(1, 41))

def test_what_needs_the_trained_model_waits_for_a_background_run(tmp_path, capsys):
    "The next cell after start() in Jupyter: compare, plot and save wait for the end of training, saying so, and use the trained model."
    run = tiny_run(tmp_path, steps=12, lora=dict(r=4, alpha=8)).start(background=True)
    cmp = run.compare(['Who are you?'], max_new_tokens=3)
    assert run.state == 'finished' and run.step == 12 and len(cmp.tuned) == 1
    out = capsys.readouterr().out
    assert 'compare: waiting for the SFT run to finish training (step ' in out and 'Interrupt the kernel to stop waiting' in out
    assert len(run.plot().axes) >= 1 and run.save().exists()  # finished now: no waiting, no line
    assert 'waiting' not in capsys.readouterr().out

def test_interrupting_a_wait_stops_the_waiting_not_the_training(tmp_path):
    run = tiny_run(tmp_path, steps=200)
    run.on('log', lambda run, record: time.sleep(0.02))
    found = signal.signal(signal.SIGINT, signal.default_int_handler)  # a kernel's own; a test before may have left another
    try:
        run.start(background=True)
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # the kernel's interrupt, delivered to the main thread
        with pytest.raises(FtnbError, match='Stopped waiting, so save did not run. The run goes on training'): run.save()
    finally: signal.signal(signal.SIGINT, found)
    assert run.training, f'SIGINT handler found at the start: {found}'
    run.stop(wait=True, timeout=60)
    assert run.state == 'stopped'

def test_error_in_the_training_thread_is_kept_and_reraised(tmp_path):
    run = tiny_run(tmp_path, steps=5); run._build()
    def boom(*a, **k): raise RuntimeError('boom at step')
    run.trainer.training_step = boom
    run.start(background=True)
    with pytest.raises(RuntimeError, match='boom at step'): run.wait(60)
    assert run.state == 'failed' and 'RuntimeError' in repr(run)

def test_unknown_setting_and_wrong_data_kind(tmp_path):
    with pytest.raises(FtnbError, match=r"'learnig_rate' \(did you mean 'learning_rate'\?\)"): tiny_run(tmp_path, learnig_rate=1e-3)
    from ftnb.example_data import preference_pairs
    with pytest.raises(FtnbError, match='Preference pairs go to dpo'): sft(tiny_model(), preference_pairs(n=4))
    with pytest.raises(FtnbError, match='resume: no complete checkpoint'): tiny_run(tmp_path).start(resume=True, background=False)
    full = tiny_run(tmp_path, steps=1); full.start(background=False, quiet=True)
    with pytest.raises(FtnbError, match="compare: after full fine-tuning the base model is loaded again from 'tiny'"): full.compare('Hi')

def _script(*args, **kw):
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

def test_sigkill_mid_run_then_resume_has_no_gap_or_repeat(tmp_path):
    d = tmp_path/'run'
    p = _script(d, '--slow', 0.4)
    deadline = time.time() + 300
    while not (d/'checkpoint-4').exists():
        assert p.poll() is None and time.time() < deadline, p.stdout.read() if p.poll() is not None else 'timeout'
        time.sleep(0.05)
    time.sleep(0.5); p.send_signal(signal.SIGKILL); p.wait()
    before = [json.loads(l)['step'] for l in (d/'metrics.jsonl').read_text().splitlines()]
    assert last_checkpoint(d).name in ('checkpoint-4', 'checkpoint-6') and max(before) < 10
    q = _script(d, '--resume'); out = q.communicate(timeout=300)[0]
    assert 'STATE finished 10' in out, out[-2000:]
    steps = [json.loads(l)['step'] for l in (d/'metrics.jsonl').read_text().splitlines() if 'loss' in json.loads(l)]
    assert steps == list(range(1, 11))
    state = json.loads((d/'checkpoint-10'/'trainer_state.json').read_text())
    assert [h['step'] for h in state['log_history'] if 'loss' in h] == list(range(1, 11))

def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    d = tmp_path/'run'
    p = _script(d, '--die-in-save', 4); p.communicate(timeout=300)
    assert p.returncode == -9
    assert not (d/'checkpoint-4').exists() and last_checkpoint(d).name == 'checkpoint-2'
    assert (d/'.staging'/'checkpoint-4').exists()  # the half-written one, where resume never looks
    q = _script(d, '--resume'); out = q.communicate(timeout=300)[0]
    assert 'STATE finished 10' in out, out[-2000:]
    assert not (d/'.staging').exists()

# ---- settings and estimates ----

def test_train_settings_follow_the_hardware():
    cpu = train_settings(Hardware('cpu'), 100)
    assert cpu['use_cpu'] and not cpu['bf16'] and cpu[CHECKPOINTING] is False and cpu['per_device_train_batch_size'] == 8
    assert cpu['logging_steps'] == 1 and cpu['save_steps'] == 20 and cpu['save_total_limit'] == 2
    def memory(act, logits, fixed=0.):  # an estimator: GB for `rows` per device step
        return lambda rows, ckpt: (lambda a: {'weights': 1., 'activations': a, 'logits': logits * rows, 'total': 1. + fixed + a + logits * rows})(act * rows * (.1 if ckpt else 1))
    t4 = train_settings(Hardware('cuda', 'T4', (7, 5), 16., free_gb=13.), 1000, batch_size=32, memory=memory(1.0, .2))
    assert t4['fp16'] and t4['per_device_train_batch_size'] == 8 and t4['gradient_accumulation_steps'] == 4  # 8 x 1.2 GB fit in 11.7
    assert t4[CHECKPOINTING] is False
    tight = train_settings(Hardware('cuda', 'small', (8, 6), 4., free_gb=3.5), 100, batch_size=8, memory=memory(5.0, .1))
    assert tight['bf16'] and tight['per_device_train_batch_size'] == 4 and tight[CHECKPOINTING] is True  # checkpointing before halving to 1
    assert tight['gradient_accumulation_steps'] == 2
    assert train_settings(Hardware('cuda', 'small', (8, 6), 4., free_gb=3.5), 100, batch_size=8, memory=memory(.1, .1, fixed=3.))['per_device_train_batch_size'] == 1

def test_memory_estimate_components():
    m = tiny_model().model
    e = memory_estimate(m, 8, 128)
    assert set(e) >= {'weights', 'gradients', 'optimizer (AdamW)', 'activations', 'logits', 'total'}
    assert abs(e['total'] - sum(v for k, v in e.items() if k != 'total')) < 1e-9
    lora = memory_estimate(m, 8, 128, trainable=1000)
    assert lora['optimizer (AdamW)'] < e['optimizer (AdamW)'] / 100
    assert memory_estimate(m, 8, 128, checkpointing=True)['activations'] < e['activations']
    assert 'reference model' in memory_estimate(m, 8, 128, reference=True)

def test_max_length_from_the_data():
    assert choose_max_length([40, 50, 60]) == 64
    assert choose_max_length([100] * 99 + [1000]) == 128

def test_tiny_model_learns_the_persona(tmp_path):
    "The fast version of the persona acceptance: a random 3 M model, fully fine-tuned, answers held-out questions as Quill."
    from ftnb.example_data import persona_questions
    run = sft(tiny_model(seed=0), persona_data(n=160), lora=False, lr=3e-3, max_steps=60, batch_size=8, run_dir=tmp_path/'run', save_steps=1000)
    run.start(background=False)
    ans = run.generate(persona_questions(), max_new_tokens=8)
    assert sum('Quill' in a for a in ans) >= 0.8 * len(ans), ans

def test_dora_and_packing_options_train(tmp_path):
    run = sft(tiny_model(), persona_data(n=32), lora=dict(r=4, use_dora=True), max_steps=2, batch_size=4, run_dir=tmp_path/'a', save_steps=1000)
    assert run.trainer_kwargs['peft_config'].use_dora
    run.start(background=False)
    assert run.state == 'finished' and any('lora_magnitude_vector' in n for n, _ in run.net.named_parameters())
    packed = sft(tiny_model(), persona_data(n=32), packing=True, max_steps=2, batch_size=2, run_dir=tmp_path/'b', save_steps=1000)
    packed.start(background=False)
    assert packed.state == 'finished' and packed.args.packing

def test_ctrl_c_in_the_foreground_stops_gracefully(tmp_path):
    "Colab's stop button and Ctrl-C send SIGINT: the first one stops after the step, with a checkpoint."
    run = tiny_run(tmp_path, steps=200)
    def interrupt(run, record):
        if record['step'] == 3: os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.02)
    run.on('log', interrupt)
    run.start(background=False)
    assert run.state == 'stopped' and 3 <= run.step <= 4 and last_checkpoint(run.run_dir).name == f'checkpoint-{run.step}'
    assert isinstance(run.generate('Hi', max_new_tokens=2), str)

def test_a_hard_interrupt_leaves_a_stopped_usable_run(tmp_path):
    run = tiny_run(tmp_path, steps=50)
    def hard(run, record):
        if record['step'] == 2: raise KeyboardInterrupt
    run.on('log', hard)
    run.start(background=False)
    assert run.state == 'stopped' and run.error is None
    assert isinstance(run.generate('Hi', max_new_tokens=2), str)

@pytest.mark.parametrize('quiet_rows,bars', [(None, False), (0, True)])
def test_small_data_prepares_without_progress_bars(tmp_path, capfd, monkeypatch, quiet_rows, bars):
    "TRL's per-pass bars (tokenize, truncate) are noise for 48 rows and hidden; above `QUIET_ROWS` they show, and stay on afterwards; a checkpoint shows none."
    import datasets, ftnb.trainer
    if quiet_rows is not None: monkeypatch.setattr(ftnb.trainer, 'QUIET_ROWS', quiet_rows)
    run = tiny_run(tmp_path, steps=1)
    capfd.readouterr()
    run.start(background=False, quiet=True)
    err = capfd.readouterr().err
    assert run.state == 'finished' and ('Truncating train dataset' in err) == bars, err[-500:]
    assert 'Writing model shards' not in err and (run.run_dir/'checkpoint-1'/'model.safetensors').exists()  # a one-shard save is one step: no bar
    assert datasets.is_progress_bar_enabled()  # the user's own datasets calls keep their bars

@pytest.mark.parametrize('method', ['grpo', 'rloo'])
def test_full_grpo_and_rloo_with_a_kl_term_use_the_policy_as_it_starts(tmp_path, method):
    "TRL rebuilt the reference from the config's name: the pre-SFT base, or for an in-memory model nothing ('Repo id must use alphanumeric chars')."
    import torch, ftnb.grpo
    from ftnb.models import tiny_model
    from ftnb.example_data import arithmetic_data
    from ftnb.rewards import exact_match
    fn = getattr(ftnb.grpo, method)
    run = fn(tiny_model(), arithmetic_data(8), rewards=exact_match, lora=False, beta=0.04, max_steps=1, batch_size=4, num_generations=2,
             max_completion_length=8, run_dir=tmp_path/method)
    start = {k: v.detach().clone() for k, v in run.model.model.state_dict().items()}
    run.start(background=False, quiet=True)
    ref = run.trainer.ref_model
    assert run.state == 'finished' and ref is not None and ref is not run.net
    assert not any(p.requires_grad for p in ref.parameters())
    assert all(torch.equal(v, start[k]) for k, v in ref.state_dict().items())  # the weights training started from
