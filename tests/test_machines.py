"""Jobs on several machines, on this CPU: two machines of one process on 127.0.0.1, Slurm's script under stand-ins, a
run folder one machine does not see, processes that fit different batches, samples under sharded weights, following a
job started elsewhere."""
import os, sys, json, signal, socket, subprocess, time
from pathlib import Path
import pytest, yaml
import ftnb.launch
from ftnb.core import FtnbError
from ftnb.models import tiny_model
from ftnb.example_data import persona_data
from ftnb.sft import sft
from ftnb.launch import follow, one_split, STOP_FILE

ROOT = Path(__file__).resolve().parents[1]

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def tiny_run(d, steps=4, **kw):
    kw = dict(lora=False, lr=1e-2, max_steps=steps, batch_size=4, run_dir=d, logging_steps=1, save_steps=1000) | kw
    return sft(tiny_model(seed=0), persona_data(n=32), **kw)

def loss_steps(d): return [json.loads(l)['step'] for l in (Path(d)/'metrics.jsonl').read_text().splitlines() if 'loss' in json.loads(l)]

def job_env(**kw):
    "The environment launch.sh gets on a 'machine': this Python and this checkout, gloo on the loopback."
    env = dict(os.environ, PYTHON=sys.executable, GLOO_SOCKET_IFNAME='lo', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    return env | {k: str(v) for k, v in kw.items()}

def machine(job, run_dir, rank, port, *more, log=None, **env):
    "Start one machine's share of a job: `MACHINE_RANK=rank bash launch.sh run_dir`."
    out = open(log, 'w') if log else subprocess.DEVNULL
    return subprocess.Popen(['bash', str(Path(job)/'launch.sh'), str(run_dir), *more], cwd=job, stdout=out, stderr=subprocess.STDOUT,
                            env=job_env(MACHINE_RANK=rank, MAIN_PORT=port, **env), start_new_session=True)

def ended(p, timeout=240):
    try: return p.wait(timeout)
    except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); raise

@pytest.fixture
def cleanup():
    procs = []
    yield procs
    for p in procs:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)

def test_export_writes_scripts_for_several_machines(tmp_path):
    run = tiny_run(tmp_path/'run')
    job = run.export(tmp_path/'job', num_processes=2, num_machines=2, main_address='10.1.2.3', main_port=29600)
    for f in ('launch.sh', 'slurm.sbatch'):
        assert subprocess.run(['bash', '-n', str(job/f)]).returncode == 0 and os.access(job/f, os.X_OK)
    c = yaml.safe_load((job/'accelerate'/'ddp.yaml').read_text())
    assert (c['num_processes'], c['num_machines'], c['main_process_ip'], c['main_process_port']) == (4, 2, '10.1.2.3', 29600)
    s = (job/'slurm.sbatch').read_text()
    assert '#SBATCH --nodes=2' in s and '#SBATCH --gpus-per-node=2' in s and 'MACHINE_RANK=$SLURM_NODEID' in s
    r = (job/'README.md').read_text()
    assert 'torchrun --nnodes 2 --node_rank $MACHINE_RANK --nproc_per_node 2 --master_addr 10.1.2.3 --master_port 29600 train.py' in r
    assert 'shared filesystem is required' in r
    assert 'gradient_accumulation_steps' not in yaml.safe_load((job/'accelerate'/'zero1.yaml').read_text())['deepspeed_config']

def test_a_job_shape_that_cannot_run_is_refused_before_anything_is_written(tmp_path):
    run = tiny_run(tmp_path/'run')  # batch 4
    with pytest.raises(FtnbError, match=r'batch_size=4 does not split over 6 processes \(3 on each of 2'): run.export(tmp_path/'a', num_processes=3, num_machines=2)
    with pytest.raises(FtnbError, match='not a host name'): run.export(tmp_path/'b', num_processes=2, num_machines=2, main_address='x; rm -rf ~')
    with pytest.raises(FtnbError, match='main_port'): run.export(tmp_path/'c', num_processes=2, main_port=70000)
    with pytest.raises(FtnbError, match='main_address='): run.launch(num_processes=1, num_machines=2)
    with pytest.raises(FtnbError, match='does not split over 8'): run.launch(num_processes=4, num_machines=2, main_address='127.0.0.1')
    assert not any((tmp_path/n).exists() for n in 'abc') and not (tmp_path/'run'/'job').exists()

def test_launch_sh_says_what_a_machine_of_several_lacks(tmp_path):
    job = tiny_run(tmp_path/'run').export(tmp_path/'job', num_processes=1, num_machines=2)
    p = subprocess.run(['bash', str(job/'launch.sh')], capture_output=True, text=True, env=job_env())
    assert p.returncode != 0 and 'set MACHINE_RANK' in p.stderr
    p = subprocess.run(['bash', str(job/'launch.sh')], capture_output=True, text=True, env=job_env(MACHINE_RANK=1))
    assert p.returncode != 0 and 'set MAIN_ADDRESS' in p.stderr
    p = subprocess.run(['bash', str(job/'launch.sh')], capture_output=True, text=True, env=job_env(PROFILE='zero9'))
    assert p.returncode == 2 and 'no profile zero9' in p.stderr

def test_two_machines_train_as_one_job_stop_and_resume(tmp_path, cleanup):
    "Machine 0 launched from the notebook, machine 1 from launch.sh: world size 2, the global first process alone writes, stop, resume."
    d, port = tmp_path/'run', free_port()
    run = tiny_run(d, steps=6, save_steps=1)
    run.launch(num_processes=1, num_machines=2, main_address='127.0.0.1', main_port=port)
    job = d/'job'
    cleanup.append(m1 := machine(job, d.resolve(), 1, port, log=tmp_path/'m1.log'))
    while run.step < 2 and run.state == 'running': time.sleep(.1)
    run.stop(); run.wait(240); ended(m1)
    log0, log1 = (d/'launch.log').read_text(), (tmp_path/'m1.log').read_text()
    assert run.state == 'stopped', log0[-3000:] + log1[-3000:]
    s = json.loads((d/'summary.json').read_text())
    assert s['world_size'] == 2 and 'ftnb: process 0 of 2: stopped' in log0 and 'ftnb: process 1 of 2: stopped' in log1
    stopped_at = run.step
    assert loss_steps(d) == list(range(1, stopped_at + 1))  # written once a step: by the global first process alone
    run2 = tiny_run(d, steps=6, save_steps=1)
    run2.launch(num_processes=1, num_machines=2, main_address='127.0.0.1', main_port=port, resume=True)
    cleanup.append(m1 := machine(job, d.resolve(), 1, port, '--resume', log=tmp_path/'m1b.log'))
    run2.wait(240); ended(m1)
    assert run2.state == 'finished' and m1.returncode == 0, (d/'launch.log').read_text()[-3000:]
    assert loss_steps(d) == list(range(1, 7)) and run2.step == 6
    assert isinstance(run2.generate('Who are you?', max_new_tokens=4), str)

def test_a_run_folder_a_machine_does_not_see_is_refused_before_training(tmp_path, cleanup):
    d, port = tmp_path/'run', free_port()
    run = tiny_run(d, steps=2)
    run.launch(num_processes=1, num_machines=2, main_address='127.0.0.1', main_port=port)
    cleanup.append(m1 := machine(d/'job', tmp_path/'elsewhere', 1, port, log=tmp_path/'m1.log'))  # its own disk: another folder
    with pytest.raises(FtnbError, match='is not shared'): run.wait(240)
    ended(m1)
    assert run.state == 'failed' and not list(d.glob('checkpoint-*')) and not (d/'metrics.jsonl').exists()
    assert 'is not shared' in (tmp_path/'m1.log').read_text()

def test_processes_that_fit_different_batches_train_with_one_split(tmp_path, monkeypatch):
    "Each process fits its rows a step to its own GPU; before, rank 1 fitting less ran more forward passes a step than rank 0."
    assert one_split([(2, 1, False), (1, 2, True)]) == (1, 2, True) and one_split([(4, 2, False)] * 3) == (4, 2, False)
    with pytest.raises(FtnbError, match='different batches'): one_split([(2, 1, False), (2, 2, False)])
    other = ("import os\nif os.environ.get('RANK') == '1':  # this process's GPU has less memory free: it fits 1 row a step\n"
             "    run.args.per_device_train_batch_size, run.args.gradient_accumulation_steps = 1, 2\ntrain_job(run, resume=")
    monkeypatch.setattr(ftnb.launch, 'TRAIN_PY', ftnb.launch.TRAIN_PY.replace('train_job(run, resume=', other))
    run = tiny_run(tmp_path/'run', steps=3)
    run.launch(num_processes=2).wait(240)
    log = (tmp_path/'run'/'launch.log').read_text()
    assert run.state == 'finished', log[-3000:]
    assert 'ftnb: process 0: 2 rows a device step fitted here; all processes train with 1 (accumulating 2)' in log
    cfg = json.loads((tmp_path/'run'/'settings.json').read_text())['trl_config']
    assert (cfg['per_device_train_batch_size'], cfg['gradient_accumulation_steps']) == (1, 2) and loss_steps(tmp_path/'run') == [1, 2, 3]

def test_samples_under_sharded_weights_are_generated_by_every_process(tmp_path, monkeypatch):
    "Under FSDP or ZeRO-3 a forward pass needs every process; the first process sampling alone hung the job. Simulated on gloo: a forward here all-reduces, as a sharded one gathers."
    hook = ("import torch, torch.distributed as dist, ftnb.run\nftnb.run.Run.sharded = property(lambda self: True)\n"
            "run.model.model.register_forward_pre_hook(lambda m, a: dist.all_reduce(torch.ones(1)))\ntrain_job(run, resume=")
    monkeypatch.setattr(ftnb.launch, 'TRAIN_PY', ftnb.launch.TRAIN_PY.replace('train_job(run, resume=', hook))
    run = tiny_run(tmp_path/'run', steps=2).sample_every(1, prompts=['Who are you?'], max_new_tokens=3)
    run.launch(num_processes=2)
    try: run.wait(150)
    finally:
        if run.process.poll() is None: os.killpg(run.process.pid, signal.SIGKILL)
    log = (tmp_path/'run'/'launch.log').read_text()
    assert run.state == 'finished', log[-3000:]
    assert [s['step'] for s in run.samples] == [0, 1, 2] and len((tmp_path/'run'/'samples.jsonl').read_text().splitlines()) == 3

FAKE_SRUN = '''#!/usr/bin/env bash
# srun stand-in: one task a node, SLURM_NODEID and SLURM_PROCID set, as srun --ntasks-per-node=1 does
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i SLURM_LOCALID=0 "$@" > "$FAKE_LOGS/node$i.log" 2>&1 & pids+=($!); done
rc=0; for p in "${pids[@]}"; do wait $p || rc=$?; done; exit $rc
'''
FAKE_SCONTROL = '''#!/usr/bin/env bash
[ "$1 $2" = "show hostnames" ] && printf '127.0.0.1\\nnode-b\\n'
'''

def test_the_slurm_script_runs_a_job_followed_from_the_notebook(tmp_path, cleanup):
    bin_ = tmp_path/'bin'; bin_.mkdir()
    for n, s in (('srun', FAKE_SRUN), ('scontrol', FAKE_SCONTROL)): (bin_/n).write_text(s); (bin_/n).chmod(0o755)
    job = tiny_run(tmp_path/'nb', steps=4, save_steps=2).export(tmp_path/'job', num_processes=1, num_machines=2)
    d = tmp_path/'shared'/'run'
    env = job_env(PATH=f"{bin_}{os.pathsep}{os.environ['PATH']}", SLURM_NNODES=2, SLURM_JOB_NODELIST='node-[a-b]', SLURM_SUBMIT_DIR=job,
                  FAKE_LOGS=tmp_path, PROFILE='cpu', MAIN_PORT=free_port())
    cleanup.append(p := subprocess.Popen(['bash', str(job/'slurm.sbatch'), str(d)], cwd=tmp_path, env=env, start_new_session=True,
                                         stdout=open(tmp_path/'sbatch.log', 'w'), stderr=subprocess.STDOUT))
    run = follow(d, model=tiny_model(seed=0), timeout=120)
    seen = []
    run.on('log', lambda run, record: seen.append(record['step']))
    run.wait(240); ended(p)
    logs = ''.join((tmp_path/f).read_text() for f in ('sbatch.log', 'node0.log', 'node1.log'))
    assert p.returncode == 0 and run.state == 'finished', logs[-3000:]
    assert 'ftnb: process 0 of 2: finished at step 4/4' in logs and 'ftnb: process 1 of 2: finished at step 4/4' in logs
    assert [h['step'] for h in run.history if 'loss' in h] == [1, 2, 3, 4] and run.step == 4
    assert run.loaded_from.name == 'checkpoint-4' and isinstance(run.generate('Who are you?', max_new_tokens=4), str)

def test_follow_says_when_no_job_starts(tmp_path):
    with pytest.raises(FtnbError, match='No job started in'): follow(tmp_path/'nothing', timeout=1)

def test_zero3_jobs_set_up_deepspeed_before_the_model_loads(tmp_path, monkeypatch):
    "transformers partitions weights as they load (zero.Init) only if DeepSpeed's config exists then; the Trainer made it after the model was whole in every process."
    import accelerate.utils
    monkeypatch.setattr(ftnb.launch, '_ZERO3', None)  # job_setup keeps its plugin here: put back afterwards
    src = (tiny_run(tmp_path/'run').export(tmp_path/'job')/'train.py').read_text()
    assert src.index('job_setup()') < src.index('model = load_model(')
    made = []
    class Plugin:  # DeepSpeed is not installed here: accelerate's plugin, as far as job_setup uses it
        def set_deepspeed_weakref(self): made.append('weakref')
    monkeypatch.setattr(accelerate.utils, 'DeepSpeedPlugin', Plugin)
    assert ftnb.launch.job_setup() is None and made == []  # no DeepSpeed: nothing
    monkeypatch.setenv('ACCELERATE_USE_DEEPSPEED', 'true'); monkeypatch.setenv('ACCELERATE_DEEPSPEED_ZERO_STAGE', '2')
    assert ftnb.launch.job_setup() is None and made == []  # ZeRO-2 keeps whole weights in every process
    monkeypatch.setenv('ACCELERATE_DEEPSPEED_ZERO_STAGE', '3')
    assert isinstance(ftnb.launch.job_setup(), Plugin) and made == ['weakref']

def test_the_notebooks_model_leaves_the_gpu_while_a_job_trains(recwarn):
    "The notebook's model stayed on GPU 0 during a launched job, whose first process loads onto GPU 0 too."
    import torch
    from ftnb.models import Model
    from ftnb.launch import off_gpu
    class OnGPU(torch.nn.Module):  # no GPU here: a network that says its weights are on cuda:0, and records where it is sent
        def __init__(self): super().__init__(); self.w = torch.nn.Parameter(torch.zeros(4)); self.sent = []
        def parameters(self, recurse=True): yield type('P', (), dict(device=torch.device('cuda', 0), numel=lambda s: 4, element_size=lambda s: 2))()
        def to(self, *a, **k): self.sent.append(a[0]); return self
    t = tiny_model()
    net = OnGPU(); assert off_gpu(Model(net, t.tokenizer, 'x')) == torch.device('cuda', 0) and net.sent == ['cpu']
    q = OnGPU(); q.is_loaded_in_4bit = True
    assert off_gpu(Model(q, t.tokenizer, 'x')) is None and q.sent == [] and 'stays on cuda:0' in str(recwarn.pop().message)
    assert off_gpu(t) is None  # on the CPU already

def test_the_readmes_torchrun_line_trains_the_job(tmp_path):
    port = free_port()
    job = tiny_run(tmp_path/'nb', steps=3).export(tmp_path/'job', num_processes=2, main_address='127.0.0.1', main_port=port)
    line = next(l.strip() for l in (job/'README.md').read_text().splitlines() if l.strip().startswith('torchrun '))
    cmd = line.replace('$MACHINE_RANK', '0').replace('[run folder]', str(tmp_path/'run')).split()
    cmd[0] = str(Path(sys.executable).parent/'torchrun')
    p = subprocess.run(cmd, cwd=job, env=job_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and 'ftnb: process 1 of 2: finished at step 3/3' in p.stdout, (p.stdout + p.stderr)[-3000:]
    assert loss_steps(tmp_path/'run') == [1, 2, 3]

def test_one_process_with_a_bad_step_ends_the_job_with_that_processs_error(tmp_path, monkeypatch):
    """Suspected: a process whose own loss was not finite stops alone and the others wait for it forever (under a loss scaler an
    infinite norm is skipped by design, so only that process stops). Ruled out: torchrun's agent ends the others when one fails.
    What was wrong: the error shown was the others' 'Connection closed by peer', not the cause."""
    bad = ("import os, trl, ftnb.trainer\nftnb.trainer.loss_scaled = lambda trainer: True  # as with float16's scaler (none on a CPU)\n"
           "if os.environ.get('RANK') == '1':\n    fit = trl.SFTTrainer.compute_loss\n"
           "    def nan_loss(self, *a, **k):\n        l = fit(self, *a, **k)\n        return l * float('nan') if self.state.global_step >= 1 else l\n"
           "    trl.SFTTrainer.compute_loss = nan_loss\ntrain_job(run, resume=")
    monkeypatch.setattr(ftnb.launch, 'TRAIN_PY', ftnb.launch.TRAIN_PY.replace('train_job(run, resume=', bad))
    run = tiny_run(tmp_path/'run', steps=4)
    run.launch(num_processes=2)
    try:
        with pytest.raises(FtnbError, match=r'(?s)exit code 1\)\. .*\nprocess 1: Training stopped at step 2: the loss is nan'): run.wait(150)
    finally:
        if run.process.poll() is None: os.killpg(run.process.pid, signal.SIGKILL)
    assert run.state == 'failed'

@pytest.mark.parametrize('split', ['fsdp', 'zero3'])
def test_sharded_jobs_leave_placement_to_the_trainer_and_pack_4bit_weights_in_the_compute_dtype(tmp_path, monkeypatch, split):
    """Each process loaded onto its own GPU by device_map, which ZeRO-3 refuses ("not compatible with passing a device_map") and FSDP
    does not want (it places and shards the weights itself); and 4-bit weights packed as uint8 beside bf16 ones are not sharded by FSDP."""
    from unittest.mock import patch
    from ftnb.core import Hardware, sharded_job
    from ftnb.models import load_model, quantization_config
    t = tiny_model(); t.model.save_pretrained(tmp_path); t.tokenizer.save_pretrained(tmp_path)
    got = {}
    def fake(where, **kw): got.update(kw); return t.model
    if split == 'fsdp': monkeypatch.setenv('ACCELERATE_USE_FSDP', 'true')
    else: monkeypatch.setenv('ACCELERATE_USE_DEEPSPEED', 'true'); monkeypatch.setenv('ACCELERATE_DEEPSPEED_ZERO_STAGE', '3')
    monkeypatch.setenv('LOCAL_RANK', '1')
    assert sharded_job() == split
    a100 = Hardware('cuda', 'A100', (8, 0), 80., 2, free_gb=70.)
    with patch('ftnb.models.detect_hardware', return_value=a100), patch('transformers.AutoModelForCausalLM.from_pretrained', side_effect=fake), \
         patch.object(type(t.model), 'to', side_effect=AssertionError('moved by hand')):
        load_model(str(tmp_path))
        assert 'device_map' not in got
        got.clear()
        with patch('ftnb.models.quantization_config', side_effect=lambda bits, hw, sharded: ('4-bit', sharded)): load_model(str(tmp_path), quantize=4)
        assert got['quantization_config'] == ('4-bit', True) and got.get('device_map') == (None if split == 'zero3' else {'': 1})
    with patch('importlib.util.find_spec', return_value=object()):
        import torch
        q = quantization_config(4, a100, sharded=True)
        assert q.bnb_4bit_quant_storage == torch.bfloat16 and quantization_config(4, a100).bnb_4bit_quant_storage == torch.uint8
