"""Bad situations a run must survive (issue 18): NaN and inf, a full disk or an unwritable folder, run folders read while
they are written, and two runs started at once in one kernel. Each test is a tiny model trained for a few steps."""
import errno, json, os, shutil, subprocess, threading, time
from pathlib import Path
import pytest, torch
from ftnb.rewards import completion_text
from ftnb.core import FtnbError
from ftnb.models import tiny_model
from ftnb.example_data import persona_data, chat_row
from ftnb.sft import sft
from ftnb.trainer import last_checkpoint
from ftnb.history import runs, load_run

def tiny_run(d, steps=6, **kw):
    "Full fine-tuning of the tiny model, a checkpoint every 2 steps."
    kw = dict(lora=False, lr=1e-2, max_steps=steps, batch_size=4, run_dir=d, logging_steps=1, save_steps=2) | kw
    return sft(tiny_model(seed=0), persona_data(n=32), **kw)

def finite(net): return all(torch.isfinite(p).all() for p in net.parameters())
def logged_steps(d): return [r['step'] for r in map(json.loads, (d/'metrics.jsonl').read_text().splitlines()) if 'loss' in r]

# ---- NaN and inf ----

@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, bad):
    run = tiny_run(tmp_path/'run', steps=8)
    def poison(run, record):  # after step 3, weights that make every loss non-finite
        if record['step'] == 3:
            with torch.no_grad(): run.net.get_input_embeddings().weight.fill_(bad)
    run.on('log', poison)
    with pytest.raises(FtnbError, match=r'step 4: the loss is (nan|inf).*checkpoint-2.*lower learning rate.*precision'):
        run.start(background=False, quiet=True)
    d = run.run_dir
    assert run.state == 'failed' and run.step == 3 and logged_steps(d) == [1, 2, 3]
    assert last_checkpoint(d).name == 'checkpoint-2' and not (d/'checkpoint-4').exists()  # no checkpoint of broken weights
    s = json.loads((d/'summary.json').read_text())
    assert s['state'] == 'failed' and 'step 4' in s['error']
    assert finite(load_run(d, model=tiny_model(seed=0)).net)  # the kept checkpoint is good

def test_an_infinite_gradient_norm_stops_the_run_before_the_weights_change(tmp_path):
    run = tiny_run(tmp_path/'run', steps=8); run._build()
    w = run.net.get_input_embeddings().weight
    run.on('log', lambda run, record: record['step'] == 3 and w.register_hook(lambda g: g * float('inf')))
    with pytest.raises(FtnbError, match=r'step 4: the gradient norm is (nan|inf).*lower learning rate'):
        run.start(background=False, quiet=True)
    assert run.state == 'failed' and finite(run.net)  # stopped before the optimizer applied it
    assert last_checkpoint(run.run_dir).name == 'checkpoint-2' and not (run.run_dir/'checkpoint-4').exists()

# ---- a full disk, an unwritable folder ----

def test_an_unwritable_folder_or_no_room_is_refused_before_start(tmp_path, monkeypatch):
    (tmp_path/'afile').write_text('not a folder')
    run = tiny_run(tmp_path/'afile'/'run')
    with pytest.raises(FtnbError, match=r'afile/run cannot be written.*[Nn]ot a directory.*run_dir'): run.start(background=False, quiet=True)
    assert run.state == 'ready'
    run = tiny_run(tmp_path/'run')
    need = run.checkpoint_gb
    assert 0.03 < need < 0.2  # the tiny model: 3.2 M weights in float32 and AdamW's two moments, and the tokenizer
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 10**6, 10**6))
    with pytest.raises(FtnbError, match=rf"{tmp_path/'run'}: 0.00 GB free, and a checkpoint needs about {need:.2f} GB"):
        run.start(background=False, quiet=True)
    assert run.state == 'ready' and not list(run.run_dir.glob('checkpoint-*'))

def _no_space_in(name, save=torch.save):
    "`torch.save` that writes part of any file of checkpoint `name`, then finds the disk full."
    def save_(obj, f, *a, **k):
        if f'/{name}/' in str(f):
            Path(f).write_bytes(b'\0' * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, f, *a, **k)
    return save_

def test_no_space_mid_checkpoint_keeps_the_previous_one_and_everything_else(tmp_path, monkeypatch):
    run = tiny_run(tmp_path/'run', steps=6)
    run.sample_every(2, prompts=['Who are you?'], max_new_tokens=3)
    monkeypatch.setattr(torch, 'save', _no_space_in('checkpoint-4'))
    d = run.run_dir
    with pytest.raises(FtnbError, match=rf"No space left on device while writing checkpoint-4 in {d}.*checkpoint-2"):
        run.start(background=False, quiet=True)
    assert run.state == 'failed' and last_checkpoint(d).name == 'checkpoint-2' and not (d/'.staging').exists()
    assert logged_steps(d) == [1, 2, 3, 4] and len((d/'samples.jsonl').read_text().splitlines()) == 3  # before, 2 and 4
    assert json.loads((d/'settings.json').read_text())['method'] == 'sft'
    s = json.loads((d/'summary.json').read_text())
    assert s['state'] == 'failed' and 'No space left on device' in s['error']
    monkeypatch.undo()
    back = load_run(d, model=tiny_model(seed=0))
    assert back.loaded_from.name == 'checkpoint-2' and finite(back.net)

@pytest.fixture
def small_disk(tmp_path):
    "`mount(size)`: a tmpfs of `size` bytes (the tests run as root); skipped where mounting is not allowed."
    d = tmp_path/'disk'; d.mkdir()
    def mount(size:int):
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(d)], capture_output=True, text=True)
        if r.returncode: pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        return d
    yield mount
    subprocess.run(['umount', str(d)], capture_output=True)

def test_a_real_full_disk(small_disk):
    need = tiny_run('unused').checkpoint_gb
    d = small_disk(int(need * 1.2e9))  # room for one checkpoint, not two
    run = tiny_run(d/'run', steps=6)
    with pytest.raises(FtnbError, match=r'No space left on device while writing checkpoint-4'): run.start(background=False, quiet=True)
    assert last_checkpoint(d/'run').name == 'checkpoint-2' and not (d/'run'/'.staging').exists()
    assert logged_steps(d/'run') == [1, 2, 3, 4] and json.loads((d/'run'/'summary.json').read_text())['state'] == 'failed'
    assert finite(load_run(d/'run', model=tiny_model(seed=0)).net)

def test_a_real_disk_too_small_is_refused_before_start(small_disk):
    d = small_disk(5 * 2**20)
    with pytest.raises(FtnbError, match=r'0.01 GB free, and a checkpoint needs about'): tiny_run(d/'run').start(background=False, quiet=True)

# ---- runs read while written ----

def test_runs_and_load_run_read_half_written_files(tmp_path):
    run = tiny_run(tmp_path/'runs'/'a', steps=4)
    run.sample_every(2, prompts=['Who are you?'], max_new_tokens=3).start(background=False, quiet=True)
    d = run.run_dir
    for f in ('metrics.jsonl', 'samples.jsonl'):
        with open(d/f, 'a') as fh: fh.write('{"step": 5, "lo')  # a line caught mid-write
    (d/'summary.json').write_text((d/'summary.json').read_text()[:30])  # caught mid-write
    (d/'evaluation.json').write_text('{"prompts": ["Who')
    h = runs(tmp_path/'runs')
    assert len(h) == 1 and h.rows()[0]['run'] == 'a' and 'a ' in repr(h)
    assert [r['step'] for r in h[0].history if 'loss' in r] == [1, 2, 3, 4] and len(h[0].samples) == 3 and h[0].evaluation is None
    back = load_run(d, model=tiny_model(seed=0))
    assert back.loaded_from.name == 'checkpoint-4' and len(back.history) == len(run.history)

def test_every_file_of_a_run_folder_is_written_whole(tmp_path, monkeypatch):
    "Each file is written beside, then renamed into place: a reader sees the old file or the new one, never half of one."
    real, replaced = os.replace, []
    monkeypatch.setattr(os, 'replace', lambda a, b, *r, **k: (replaced.append(Path(b).name), real(a, b, *r, **k))[1])
    from ftnb.evaluate import evaluate
    from ftnb.report import report
    run = tiny_run(tmp_path/'run', steps=2, lora=True).start(background=False, quiet=True)  # LoRA: the base model is the adapter switched off
    def says_quill(completions, **kw): return [float('Quill' in completion_text(c)) for c in completions]
    evaluate(run, [chat_row('Who are you?', 'Quill.')], rewards=says_quill, max_new_tokens=3)
    report(run)
    assert {'settings.json', 'summary.json', 'metrics.jsonl', 'evaluation.json', 'report.html', 'checkpoint-2'} <= set(replaced)

# ---- two runs at once ----

def test_a_second_run_started_at_the_same_time_is_refused_with_a_reason(tmp_path):
    runs_ = dict(a=tiny_run(tmp_path/'a', steps=6), b=tiny_run(tmp_path/'b', steps=6))
    go, said = threading.Barrier(2), {}
    def start(name):
        go.wait()
        try: runs_[name].start(background=True, quiet=True); said[name] = 'started'
        except FtnbError as e: said[name] = str(e)
    ts = [threading.Thread(target=start, args=(n,)) for n in runs_]
    for t in ts: t.start()
    for t in ts: t.join()
    started = [n for n, s in said.items() if s == 'started']
    assert len(started) == 1, said
    first, second = runs_[started[0]], runs_[({'a', 'b'} - set(started)).pop()]
    refusal = said[second.run_dir.name]
    assert f"Another run is training in this kernel: {first.run_dir}" in refusal and 'one run at a time' in refusal and 'wait' in refusal
    assert second.state == 'ready'
    while first.state == 'running': runs(tmp_path).rows(); time.sleep(.01)  # and its folder reads while it trains
    first.wait(120)
    assert first.state == 'finished'
    second.start(background=False, quiet=True)  # once the first is done, the second trains
    assert second.state == 'finished' and logged_steps(second.run_dir) == list(range(1, 7))

def test_a_deepspeed_fp16_overflow_is_skipped_not_fatal(tmp_path):
    "DeepSpeed reports an infinite norm on loss-scale overflow steps (normal early in fp16) and skips them itself; FiniteSteps stopped the job there."
    from types import SimpleNamespace
    from ftnb.trainer import FiniteSteps
    class Base:
        def _get_grad_norm(self, model, grad_norm=None): return float('inf')
    class T(FiniteSteps, Base): pass
    t = T()
    t.accelerator, t.state = SimpleNamespace(scaler=None), SimpleNamespace(global_step=3)
    t.args = SimpleNamespace(fp16=True, bf16=False, learning_rate=1e-4, output_dir=str(tmp_path))
    t.is_deepspeed_enabled = True
    assert t._get_grad_norm(None) == float('inf')  # DeepSpeed skips the step and lowers its scale
    t.is_deepspeed_enabled = False  # the same infinite norm with no scaler at all: a real failure
    with pytest.raises(FtnbError, match='gradient norm is inf'): t._get_grad_norm(None)
