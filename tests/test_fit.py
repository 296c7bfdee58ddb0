"""The memory fit (issue 28, bugs 6 and 9, suspects a-c), with faked hardware: weights made float32 after the fit count as
training state (full fine-tuning of 16-bit weights; ORPO's QLoRA), an Apple GPU (MPS) gets a budget, a fitted batch and a
measured peak of its own, `auto_find_batch_size` is refused, and GRPO's sampling of the whole batch is in the estimate."""
import time
from contextlib import contextmanager
from types import SimpleNamespace
from unittest.mock import patch
import pytest, torch
from ftnb.core import FtnbError, Hardware, detect_hardware
from ftnb.models import tiny_model, count_params
from ftnb.example_data import persona_data, preference_pairs, arithmetic_data
from ftnb.trainer import CHECKPOINTING
from ftnb.budget import train_settings, memory_estimate, training_state_gb, reset_peak_memory, peak_memory_gb, memory_gb
from ftnb.sft import sft
from ftnb.prefs import orpo
from ftnb.grpo import grpo
from ftnb.rewards import exact_match

def _meta_llama(hidden, layers, inter, heads, kv, vocab):
    "A model of a real size on the meta device: its parameters have shapes but no memory."
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter, num_attention_heads=heads,
                      num_key_value_heads=kv, vocab_size=vocab)
    with torch.device('meta'): return LlamaForCausalLM(cfg)

@contextmanager
def _on(hw):
    "Run a recipe as if on `hw` (its speed probe, which would need the device, answers 1 second a step)."
    with patch('ftnb.recipe.detect_hardware', return_value=hw), patch('ftnb.recipe.time_estimate', return_value=1.): yield

# ---- bug 6: full fine-tuning loads 16-bit weights, then trains float32 copies of them ----

def test_full_fine_tuning_of_an_8b_model_counts_its_float32_copies():
    "Llama-3-8B fully fine-tuned on an H200 (141 GB, 16 GB of bf16 weights loaded): the old fit took 8 rows a step, 126 GB beside the weights where 125 were free."
    net = _meta_llama(4096, 32, 14336, 32, 8, 128256)
    n = count_params(net)[0]
    hw = Hardware('cuda', 'NVIDIA H200', (9, 0), 141., free_gb=141. - n * 2 / 1e9)
    memory = lambda rows, ckpt: memory_estimate(net, rows, 512, 'bfloat16', checkpointing=ckpt)  # loaded in the training dtype, as load_model does
    s = train_settings(hw, 100, 8, memory=memory)
    assert s['per_device_train_batch_size'] < 8 and s[CHECKPOINTING]
    e = memory(s['per_device_train_batch_size'], s[CHECKPOINTING])
    assert abs(e['weights'] - n * 2 / 1e9) < 1e-6 and abs(e['float32 copies'] - n * 2 / 1e9) < 1e-6  # as loaded, and what fp32_trainables adds
    assert training_state_gb(e) >= n * (2 + 4 + 8) / 1e9  # copies, gradients, AdamW's moments: all after the fit
    assert training_state_gb(e) < hw.free_gb

def test_a_full_fine_tuning_recipe_counts_the_copies_of_its_16bit_weights(tmp_path):
    m = tiny_model(); m.model.to(torch.bfloat16)  # as load_model loads it on a GPU
    n = count_params(m.model)[0]
    with _on(Hardware('cuda', 'GPU', (8, 0), 16., free_gb=15., dtype='float32')):
        run = sft(m, persona_data(n=8), lora=False, max_steps=1, batch_size=4, run_dir=tmp_path)
    assert run.estimate['float32 copies'] == pytest.approx(n * 2 / 1e9) and run.estimate['weights'] == pytest.approx(n * 2 / 1e9)
    assert training_state_gb(run.estimate) > run.estimate['float32 copies'] + run.estimate['gradients']

def test_loaded_float32_weights_need_no_copies_and_lora_adapters_come_after_the_fit():
    net = tiny_model().model
    n = count_params(net)[0]
    assert 'float32 copies' not in memory_estimate(net, 4, 128, 'bfloat16', loaded_dtype='float32')  # a CPU run of float32 weights
    e = memory_estimate(net, 4, 128, 'bfloat16', trainable=1000)
    assert e['LoRA adapters'] == pytest.approx(1000 * 4 / 1e9) and e['weights'] == pytest.approx(n * 2 / 1e9)
    assert abs(e['total'] - sum(v for k, v in e.items() if k != 'total')) < 1e-9

# ---- suspect c: ORPO's trainer upcasts a quantized model's other weights ----

def test_orpo_on_a_4bit_model_counts_what_peft_makes_float32(tmp_path):
    "peft's prepare_model_for_kbit_training (ORPO's trainer, not DPO's) casts every unquantized weight to float32 after the fit; on fp16 they stay so."
    m = tiny_model(); m.model.half(); m.model.is_loaded_in_4bit = True  # no bitsandbytes here: nothing packed, every weight fp16
    n = count_params(m.model)[0]
    t4 = Hardware('cuda', 'Tesla T4', (7, 5), 15.6, free_gb=14.5, dtype='float32')  # precision flags off: TRL checks them against this CPU
    with _on(t4): run = orpo(m, preference_pairs(n=8), max_steps=1, batch_size=4, run_dir=tmp_path)
    assert run.estimate['float32 copies'] == pytest.approx(n * 2 / 1e9)
    assert training_state_gb(run.estimate) > run.estimate['float32 copies']

# ---- bug 9: Apple GPUs ----

def _fake_mps(recommended=21.5e9, allocated=3e9):
    return [patch('torch.cuda.is_available', return_value=False), patch('torch.backends.mps.is_available', return_value=True),
            patch('torch.mps.recommended_max_memory', return_value=recommended),
            patch('torch.mps.current_allocated_memory', return_value=allocated)]

def test_an_apple_gpu_gets_a_budget_from_metal():
    ps = _fake_mps()
    for p in ps: p.start()
    try: hw = detect_hardware()
    finally:
        for p in ps: p.stop()
    assert hw.device == 'mps' and hw.free_gb == pytest.approx(18.5)  # Metal's working set less the tensors loaded

def test_an_apple_gpu_fits_its_batch():
    "MPS got the whole batch on the device whatever its memory; now it is fitted as a GPU's is (checkpointing included)."
    mps = Hardware('mps', 'Apple GPU', memory_gb=32., free_gb=18.5)
    memory = lambda rows, ckpt: (lambda a: {'weights': 1., 'activations': a, 'total': 1. + a})(rows * (3. if not ckpt else .5))
    s = train_settings(mps, 10, 16, memory=memory)
    assert s['per_device_train_batch_size'] < 16 and s['per_device_train_batch_size'] * s['gradient_accumulation_steps'] == 16
    assert memory(s['per_device_train_batch_size'], s[CHECKPOINTING])['total'] - 1. <= .8 * mps.free_gb
    assert train_settings(Hardware('mps', free_gb=100.), 10, 16, memory=memory)['per_device_train_batch_size'] == 16

def test_the_mps_peak_is_its_tensors_sampled_where_torch_keeps_none():
    now = [3e9]
    with patch('torch.mps.current_allocated_memory', lambda: now[0]), patch('torch.accelerator.memory_stats', side_effect=RuntimeError):
        reset_peak_memory('mps')
        now[0] = 5e9; time.sleep(.1); now[0] = 3.5e9; time.sleep(.1)
        assert memory_gb('mps') == 3.5 and peak_memory_gb('mps') == 5.  # not the process's resident memory
        now[0] = 9e9; time.sleep(.05)
        assert peak_memory_gb('mps') == 9.  # the sampling has stopped: the present counts, not what came between

def test_the_mps_peak_comes_from_torch_where_it_keeps_one():
    stats = {'allocated_bytes.all.peak': 7e9}
    with patch('torch.accelerator.memory_stats', return_value=stats), patch('torch.accelerator.max_memory_allocated', return_value=7e9), \
         patch('torch.accelerator.reset_peak_memory_stats') as reset:
        reset_peak_memory('mps')
        assert reset.called and peak_memory_gb('mps') == 7.

# ---- suspect a: auto_find_batch_size ----

@pytest.mark.parametrize('recipe', ['sft', 'grpo'])
def test_auto_find_batch_size_is_refused(recipe, tmp_path):
    "transformers would cut the device batch by a tenth on each out-of-memory error, keep the accumulation, and so change the batch silently."
    with pytest.raises(FtnbError, match=r'auto_find_batch_size=True: ftnb fits the batch'):
        if recipe == 'sft': sft(tiny_model(), persona_data(n=8), max_steps=1, auto_find_batch_size=True, run_dir=tmp_path)
        else: grpo(tiny_model(), arithmetic_data(8), rewards=exact_match, num_generations=4, batch_size=8, max_steps=1, auto_find_batch_size=True, run_dir=tmp_path)

# ---- suspect b: GRPO samples the whole batch's answers at once ----

def test_grpo_memory_counts_sampling_the_whole_batch():
    "SmolLM2-1.7B (no grouped KV heads) with LoRA on a T4, 2 prompts x 8 answers of 768 tokens: sampling holds 16 answers' KV cache whatever the micro-batch."
    net = _meta_llama(2048, 24, 8192, 32, 32, 49152)
    memory = lambda rows, ckpt, gen=16: memory_estimate(net, rows, 768, 'float16', trainable=18_000_000, checkpointing=ckpt, generation_rows=gen)
    one = memory(1, True)
    kv = 16 * 768 * 2 * 24 * 2048 * 2 / 1e9  # 2.4 GB of keys and values in fp16
    assert one['generation'] > kv - (one['activations'] + one['logits'] + one['gradients'])
    assert training_state_gb(one) > training_state_gb(memory(1, True, gen=0)) + 1.
    assert memory(16, False)['generation'] == 0.  # a whole-batch step holds more than sampling does: it sets the peak

def test_the_grpo_recipe_sizes_sampling_from_its_batch(tmp_path):
    seen = []
    def spy(*a, **k): seen.append(k.get('generation_rows')); return memory_estimate(*a, **k)
    with _on(Hardware('cuda', 'small', (8, 6), 2., free_gb=1., dtype='float32')), patch('ftnb.recipe.memory_estimate', spy):
        r = grpo(tiny_model(), arithmetic_data(12), rewards=exact_match, num_generations=4, batch_size=12, max_steps=1, run_dir=tmp_path)
    assert set(seen) == {12} and 'generation' in r.estimate  # 3 prompts x 4 answers, sampled at once

def test_a_reference_made_with_the_trainer_is_training_state(tmp_path):
    "GRPO's full-fine-tuning reference is copied from the policy as the trainer is built, after the fit; DPO's recipe copies its own before."
    g = grpo(tiny_model(), arithmetic_data(8), rewards=exact_match, num_generations=4, batch_size=8, lora=False, max_steps=1, run_dir=tmp_path/'g')
    assert 'reference model' not in g.estimate and training_state_gb(g.estimate) >= g.estimate['reference copy'] + g.estimate['gradients']
    from ftnb.prefs import dpo
    d = dpo(tiny_model(), preference_pairs(n=8), lora=False, max_steps=1, batch_size=4, run_dir=tmp_path/'d')
    assert 'reference copy' not in d.estimate and training_state_gb(d.estimate) == pytest.approx(d.estimate['total'] - d.estimate['weights'] - d.estimate['reference model'])

def test_an_apple_gpu_plan_beyond_its_budget_is_refused_unless_insisted(tmp_path):
    "Only a CPU plan was checked against its memory before starting; on an Apple GPU, running over swaps the Mac to a crawl."
    run = sft(tiny_model(), persona_data(n=8), max_steps=1, batch_size=4, run_dir=tmp_path/'r')
    run.hardware = Hardware('mps', 'Apple GPU', memory_gb=16, free_gb=.01)
    with pytest.raises(FtnbError, match=r'Metal recommends.*exceed_memory=True'): run.start(background=False, quiet=True)
    assert not (tmp_path/'r').exists()
