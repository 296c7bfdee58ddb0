"""bench/gpu_check.py, ftnb's GPU check, on a CPU: its preparation's offline parts, and every experiment run on a tiny stand-in
(1-2 steps, CUDA-only parts recorded as skipped), so the check does not die on the GPU machine over a typo or a changed API."""
import importlib.util, json, subprocess, sys, time, zipfile
from importlib import metadata
from pathlib import Path
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('gpu_check', ROOT/'bench'/'gpu_check.py')
gc = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(gc)

def test_the_shell_script_parses():
    for f in ('gpu_check.sh',):
        p = subprocess.run(['bash', '-n', str(ROOT/'bench'/f)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr

def test_pins_carry_the_versions_tested_here_and_meet_ftnb_requirements():
    "The GPU machine runs the TRL, peft, accelerate, datasets... that CI tests: this environment's versions, within settings.ini's bounds."
    pins = dict(p.split('==') for p in gc.pins())
    reqs = gc.requirements()
    for n in ('trl', 'peft', 'accelerate', 'datasets', 'gguf', 'fastcore', 'ipywidgets'):
        assert pins[n] == metadata.version(n), n
        assert Requirement(reqs[n]).specifier.contains(pins[n], prereleases=True), (n, reqs[n], pins[n])
    assert {'dill', 'multiprocess', 'ipython', 'traitlets'} <= set(pins)  # what those need and the GPU image lacks
    assert not {'torch', 'transformers', 'numpy', 'pyarrow', 'huggingface-hub'} & set(pins)  # the image's own (CUDA's torch cannot travel)
    assert {'bitsandbytes', 'liger-kernel'} <= set(pins) and len(pins) == len(gc.pins())  # one version of each: two would stop the install

def test_bitsandbytes_travels_with_one_cuda_library(tmp_path):
    w = tmp_path/'bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl'
    libs = ['cpu', 'cuda118', 'cuda128', 'cuda130', 'cuda132', 'rocm72', 'xpu2026']
    files = {f'bitsandbytes/libbitsandbytes_{l}.so': b'\0' * 100 for l in libs} | {'bitsandbytes/__init__.py': b'x = 1\n'}
    record = ''.join(f'{n},sha256=abc,{len(b)}\n' for n, b in files.items()) + 'bitsandbytes-0.50.2.dist-info/RECORD,,\n'
    with zipfile.ZipFile(w, 'w') as z:
        for n, b in files.items(): z.writestr(n, b)
        z.writestr('bitsandbytes-0.50.2.dist-info/RECORD', record)
    gc.strip_wheel(w)
    with zipfile.ZipFile(w) as z:
        names = set(z.namelist())
        rec = [l.split(',')[0] for l in z.read('bitsandbytes-0.50.2.dist-info/RECORD').decode().splitlines()]
    kept = {'bitsandbytes/libbitsandbytes_cpu.so', 'bitsandbytes/libbitsandbytes_cuda130.so', 'bitsandbytes/__init__.py'}
    assert names == kept | {'bitsandbytes-0.50.2.dist-info/RECORD'} and set(rec) == names  # RECORD lists exactly what is there

def test_the_report_is_written_after_every_record_and_a_cap_stops_an_experiment(tmp_path):
    r = gc.Report(tmp_path/'gpu_check.json')
    r['a'] = dict(x=1)
    assert json.loads((tmp_path/'gpu_check.json').read_text()) == dict(a=dict(x=1))  # a timeout after this keeps it
    t = time.monotonic()
    with pytest.raises(gc.Capped, match='cap of 1 s'):
        with gc.capped(1): time.sleep(5)
    assert time.monotonic() - t < 3

def _errors(x, where=''):
    "Every 'error' and every skip other than a CUDA-only one, anywhere in a record."
    if isinstance(x, dict):
        return [e for k, v in x.items() for e in ([f"{where}/{k}: {v}"] if k in ('error', 'skipped') else []) + _errors(v, f"{where}/{k}")]
    if isinstance(x, list): return [e for v in x for e in _errors(v, where)]
    return [f"{where}: {x}"] if isinstance(x, str) and x.startswith('skipped') and x != gc.NEEDS_CUDA else []

def test_the_smoke_run_records_every_experiment_without_an_error(tmp_path):
    "The whole check on a tiny stand-in (about 1.5 minutes on 2 CPU cores): every API call and JSON field the GPU run makes. In the fast suite, so CI runs the check's code as the GPU will."
    p = subprocess.run([sys.executable, str(ROOT/'bench'/'gpu_check.py'), '--smoke', '--out', str(tmp_path)], capture_output=True, text=True,
                       timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    d = json.loads((tmp_path/'gpu_check.json').read_text())
    assert d['check']['finished'] and d['standin']['stand_in'] and d['environment']['unmet_requirements'] == []
    assert [k for k in gc.EXPERIMENTS if k not in d] == []
    assert [e for k in gc.EXPERIMENTS for e in _errors(d[k], k)] == []  # a NameError, a changed API, a refused setting: all fail here
    for k in ('qlora_sft', 'qlora_dpo', 'qlora_kto', 'qlora_orpo', 'qlora_reward', 'qlora_grpo', 'qlora_rloo', 'full_sft'):
        assert d[k]['state'] == 'finished' and d[k]['step'] == d[k]['max_steps'], k
        assert d[k]['memory_gb']['estimate_training'] > 0 and d[k]['loss']['last'] is not None, k
    assert all(d[k]['quantize'] == gc.NEEDS_CUDA and d[k]['training'] == gc.NEEDS_CUDA for k in ('qlora_sft_fp16_t4like', 'qlora_sft_small_gpu'))
    s = d['stop_resume']
    assert s['stopped']['state'] == 'stopped' and s['resumed']['state'] == 'finished' and s['resumed']['step'] == 4 and s['continuous']
    assert d['ftnb_vs_trl']['raw_over_ftnb_runtime'] > 0 and d['ftnb_vs_trl']['raw_trl']['train_loss'] is not None
    assert d['gguf_from_qlora']['tensors'] > 0 and d['gguf_from_lora']['modelfile']
    k = d['kernels']  # raw TRL on ftnb's settings, kernels off; on and off need CUDA
    assert k['plain']['train_loss'] is not None and k['liger'] == k['padding_free'] == gc.NEEDS_CUDA
    cpu = d['gpu_runs_loaded_on_cpu']['runs']
    assert set(cpu) == {'qlora_sft', 'lora', 'full'} and all(r['use_cpu'] and r['device'] == 'cpu' and isinstance(r['answer'], str) for r in cpu.values())
