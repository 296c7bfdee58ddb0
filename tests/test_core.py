"""Hardware decisions from faked devices, where the code runs, seeding, the cache folder."""
import sys, os
from unittest.mock import patch, MagicMock
import pytest, torch
from ftnb.core import Hardware, detect_hardware, environment, set_seed, cache_dir, FtnbError

def fake_cuda(cap, name='GPU', mem=16e9, count=1):
    props = MagicMock(total_memory=mem); props.name = name
    return [patch('torch.cuda.is_available', return_value=True), patch('torch.cuda.get_device_capability', return_value=cap),
            patch('torch.cuda.get_device_properties', return_value=props), patch('torch.cuda.device_count', return_value=count),
            patch('torch.cuda.mem_get_info', return_value=(mem * .75, mem))]

@pytest.mark.parametrize('cap,dtype,bf16,fp16', [((7, 0), 'float16', False, True), ((7, 5), 'float16', False, True),
                                                 ((8, 0), 'bfloat16', True, False), ((8, 9), 'bfloat16', True, False), ((9, 0), 'bfloat16', True, False)])
def test_cuda_capability_picks_precision(cap, dtype, bf16, fp16):
    ps = fake_cuda(cap, 'Fake GPU', count=2)
    for p in ps: p.start()
    try: hw = detect_hardware()
    finally:
        for p in ps: p.stop()
    assert (hw.device, hw.capability, hw.dtype, hw.count) == ('cuda', cap, dtype, 2)
    assert hw.trainer_args == dict(bf16=bf16, fp16=fp16, use_cpu=False)
    assert hw.torch_dtype == getattr(torch, dtype)
    assert f'compute {cap[0]}.{cap[1]}' in repr(hw) and dtype in repr(hw)
    assert hw.free_gb == 12. and '12.0 GB free' in repr(hw) and 'on one GPU' in repr(hw)  # two GPUs, one process

def test_mps_trains_in_fp32():
    with patch('torch.cuda.is_available', return_value=False), patch('torch.backends.mps.is_available', return_value=True):
        hw = detect_hardware()
    assert hw.device == 'mps' and hw.trainer_args == dict(bf16=False, fp16=False, use_cpu=False)

def _cpu(flags, gflops):
    "detect_hardware on a CPU machine with these feature flags and matmul speeds {dtype: GFLOP/s}."
    with patch('torch.cuda.is_available', return_value=False), patch('torch.backends.mps.is_available', return_value=False), \
         patch('ftnb.core.cpu_flags', return_value=set(flags)), patch('ftnb.core.bf16_speedup', return_value=gflops['bfloat16'] / gflops['float32']):
        return detect_hardware()

def test_cpu_without_bf16_uses_fp32_and_use_cpu():
    for flags, speed in [({'avx2', 'fma'}, {'float32': 100, 'bfloat16': 400}),  # no bf16 instructions: not even probed
                         ({'avx512_bf16'}, {'float32': 100, 'bfloat16': 110})]:  # the flag, but bf16 no faster here (an emulating build)
        hw = _cpu(flags, speed)
        assert hw.device == 'cpu' and hw.dtype == 'float32' and hw.trainer_args['use_cpu'] and not hw.trainer_args['bf16']
        assert hw.cpus >= 1 and 'cores' in repr(hw) and '(use_cpu)' in hw._repr_markdown_()

def test_cpu_with_bf16_instructions_trains_in_bf16():
    for flags in ({'avx512_bf16', 'avx512f'}, {'amx_bf16'}, {'bf16', 'asimd'}):  # AVX-512 BF16, AMX, Arm's BF16
        hw = _cpu(flags, {'float32': 100, 'bfloat16': 400})
        assert hw.dtype == 'bfloat16' and hw.trainer_args == dict(bf16=True, fp16=False, use_cpu=True) and 'bfloat16' in repr(hw)

def test_trainer_args_are_accepted_by_trl_on_this_machine():
    "TRL's configs default to bf16=True, which raises on a CPU; the detected flags must make a valid config here."
    from trl import SFTConfig
    cfg = SFTConfig(output_dir='/tmp/ftnb-test-cfg', report_to='none', **detect_hardware().trainer_args)
    assert cfg.bf16 == detect_hardware().bf16

def test_explicit_dtype_wins_and_bad_device_is_refused():
    assert Hardware('cuda', capability=(8, 0), dtype='float32').trainer_args['bf16'] is False
    with pytest.raises(FtnbError, match="'tpu'"): Hardware('tpu')

def test_environment_detection():
    assert environment() == 'console'
    with patch.dict(sys.modules, {'google.colab': MagicMock()}): assert environment() == 'colab'
    for cls, want in [('ZMQInteractiveShell', 'notebook'), ('TerminalInteractiveShell', 'ipython')]:
        shell = type(cls, (), {})()
        with patch('IPython.get_ipython', return_value=shell): assert environment() == want

def test_set_seed_repeats_torch_and_python_randomness():
    import random
    set_seed(123); a = (torch.randn(4), random.random())
    set_seed(123); b = (torch.randn(4), random.random())
    assert torch.equal(a[0], b[0]) and a[1] == b[1]

def test_cache_dir_follows_environment(tmp_path):
    with patch.dict(os.environ, {'FTNB_CACHE': str(tmp_path/'c')}): assert cache_dir('models') == tmp_path/'c'/'models'
    env = {k: v for k, v in os.environ.items() if k != 'FTNB_CACHE'} | {'XDG_CACHE_HOME': str(tmp_path)}
    with patch.dict(os.environ, env, clear=True): assert cache_dir() == tmp_path/'ftnb'
