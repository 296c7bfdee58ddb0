"""GPU decisions with faked hardware, and the GPU bugs that a CPU can show: precision and memory choices for a T4 or an A100,
QLoRA's half-precision adapters, several GPUs in one process, a GPU run loaded on a CPU, 4-bit parameter counts, memory held
after a run, the full-fine-tuning reference. Tests flagged `cuda` need a GPU and skip here, saying so; the others pass on a CPU host
and on a GPU host alike (a CPU machine is faked where a test is about one). `bash .gpu/gpu_check.sh` runs this file on a GPU."""
import json, gc, weakref, importlib.util
from types import SimpleNamespace
from unittest.mock import patch
import pytest, torch
from ftnb.core import FtnbError, Hardware, detect_hardware
from ftnb.models import tiny_model, load_model, count_params, lora_config, Model, generate, quantized_bits
from ftnb.example_data import persona_data, preference_pairs, arithmetic_data
from ftnb.trainer import fp32_trainables, CHECKPOINTING
from ftnb.budget import train_settings, memory_estimate, CPU_TOKENS
from ftnb.sft import sft
from ftnb.recipe import default_lr
from ftnb.prefs import dpo, kto, preference_accuracy
from ftnb.rewards import reward_model, scoring_model, exact_match
from ftnb.grpo import grpo
from ftnb.history import load_run

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs an NVIDIA GPU with CUDA (none on this machine)')
T4 = lambda free=14.5: Hardware('cuda', 'Tesla T4', (7, 5), 15.6, free_gb=free)

# ---- memory and batch decisions on a GPU ----

def _meta_llama(hidden, layers, inter, heads, kv, vocab):
    "A model of a real size on the meta device: its parameters have shapes but no memory."
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter, num_attention_heads=heads,
                      num_key_value_heads=kv, vocab_size=vocab)
    with torch.device('meta'): return LlamaForCausalLM(cfg)

def _lora_params(net, r=16):
    return sum(r * (m.in_features + m.out_features) for n, m in net.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith('lm_head'))

def _need(s, net, dtype, seq=512):
    "What the chosen device batch costs beyond the loaded weights."
    e = memory_estimate(net, s['per_device_train_batch_size'], seq, dtype, trainable=_lora_params(net), checkpointing=s[CHECKPOINTING])
    return e['total'] - e['weights']

@pytest.mark.parametrize('name, dims, hw, dtype', [
    ('SmolLM2-1.7B on a T4', (2048, 24, 8192, 32, 32, 49152), T4(free=15.6 - 3.4), 'float16'),
    ('Llama-3-8B on an A100-40GB', (4096, 32, 14336, 32, 8, 128256), Hardware('cuda', 'A100', (8, 0), 40., free_gb=40. - 16.1), 'bfloat16')])
def test_gpu_batch_fits_the_memory_left_after_the_weights(name, dims, hw, dtype):
    net = _meta_llama(*dims)
    memory = lambda rows, ckpt: memory_estimate(net, rows, 512, dtype, trainable=_lora_params(net), checkpointing=ckpt)
    s = train_settings(hw, 100, 8, memory=memory)
    old = 8  # the old rule (half the total memory, a third of these activations, no logits) kept all 8 rows: out of memory on both
    assert s['per_device_train_batch_size'] < old or s[CHECKPOINTING], (name, s)
    assert _need(s, net, dtype) <= .9 * hw.free_gb, name
    assert s['per_device_train_batch_size'] * s['gradient_accumulation_steps'] == 8  # the effective batch is kept exactly

def _memory(act, logits, fixed=0.):
    return lambda rows, ckpt: (lambda a: {'weights': 1., 'activations': a, 'logits': logits * rows, 'total': 1. + fixed + a + logits * rows})(act * rows * (.1 if ckpt else 1))

def test_more_free_memory_gives_bigger_device_batches():
    per = [train_settings(T4(free), 10, 8, memory=_memory(1.0, .25, fixed=.3))['per_device_train_batch_size'] for free in (3., 6., 12.)]
    assert per == sorted(per) and per[0] < per[-1] == 8

def test_kto_keeps_two_rows_a_device_and_grpo_whole_groups():
    s = train_settings(T4(3.), 10, 8, memory=_memory(3.0, .5), min_batch=2)  # even 1 row without checkpointing does not fit 2.7 GB
    assert s['per_device_train_batch_size'] >= 2 and s[CHECKPOINTING]
    g = train_settings(T4(3.), 10, 16, memory=_memory(3.0, .5), has_eval=True, eval_multiple=8)
    assert g['per_device_eval_batch_size'] % 8 == 0
    assert 16 % g['per_device_train_batch_size'] == 0 and g['per_device_train_batch_size'] * g['gradient_accumulation_steps'] == 16

def test_kto_refuses_batches_of_one():
    with pytest.raises(FtnbError, match='at least 2'): kto(tiny_model(), preference_pairs(n=8), batch_size=1, max_steps=1)

def test_grpo_recipe_on_a_small_gpu_keeps_trl_rules(tmp_path):
    with patch('ftnb.recipe.detect_hardware', return_value=Hardware('cuda', 'small', (8, 6), 2., free_gb=.3, dtype='float32')), \
         patch('ftnb.run.detect_hardware', return_value=Hardware('cuda', 'small', (8, 6), 2., free_gb=.3, dtype='float32')):
        try: r = grpo(tiny_model(), arithmetic_data(12), rewards=exact_match, num_generations=4, batch_size=12, eval=4, max_steps=2, run_dir=tmp_path)
        except Exception as e: pytest.fail(f"TRL's config rejected ftnb's GPU batch choice: {e}")
    a = r.args
    assert a.per_device_train_batch_size * a.gradient_accumulation_steps == 12 and a.generation_batch_size % 4 == 0
    assert a.per_device_eval_batch_size % 4 == 0

# ---- precision ----

def test_cpu_micro_batches_hold_enough_tokens_and_fit_the_ram():
    "A CPU gets the fewest rows a micro-batch that hold CPU_TOKENS tokens (bigger ones are no faster there), fewer if RAM is short."
    cpu = lambda free: Hardware('cpu', free_gb=free, cpu_bf16=True)
    per = lambda hw, seq, mem=_memory(.1, .05): train_settings(hw, 10, 8, memory=mem, seq=seq)['per_device_train_batch_size']
    assert per(cpu(16.), 600) == 1 and per(cpu(16.), 100) == 8 and per(cpu(16.), 200) == 4  # DPO pairs; short SFT rows
    assert CPU_TOKENS / 200 <= 4 < CPU_TOKENS / 100
    big = _memory(1.0, .5)  # 1.5 GB a row
    assert per(cpu(16.), 100, big) == 8 and per(cpu(5.), 100, big) == 2  # 80% of 5 GB holds two rows, not four
    s = train_settings(cpu(16.), 10, 8, memory=_memory(.1, .05), seq=600)
    assert s['gradient_accumulation_steps'] == 8 and not s[CHECKPOINTING] and s['bf16'] and s['use_cpu']

def test_weights_load_in_bf16_on_a_cpu_that_has_it(tmp_path):
    t = tiny_model(); t.model.save_pretrained(tmp_path); t.tokenizer.save_pretrained(tmp_path)
    for bf16, want in ((True, torch.bfloat16), (False, torch.float32)):
        with patch('ftnb.models.detect_hardware', return_value=Hardware('cpu', cpu_bf16=bf16)):
            assert load_model(str(tmp_path)).model.dtype == want
    assert load_model(str(tmp_path), dtype='float32').model.dtype == torch.float32  # an explicit dtype wins

def test_weights_load_straight_to_the_gpu_in_its_half_precision(tmp_path):
    t = tiny_model(); t.model.save_pretrained(tmp_path); t.tokenizer.save_pretrained(tmp_path)
    got = {}
    def fake(where, **kw): got.update(kw); return t.model
    with patch('ftnb.models.detect_hardware', return_value=T4()), \
         patch('transformers.AutoModelForCausalLM.from_pretrained', side_effect=fake):
        load_model(str(tmp_path))
    assert got['dtype'] == torch.float16 and got['device_map'] == {'': 0}  # not float32 through CPU RAM

def test_fp16_training_gets_float32_adapters_where_trl_made_them_bf16(tmp_path):
    run = sft(tiny_model(), persona_data(n=8), max_steps=1, run_dir=tmp_path)
    run._build()
    lora = [p for p in run.trainer.model.parameters() if p.requires_grad]
    for p in lora: p.data = p.data.to(torch.bfloat16)  # what TRL 1.16 does to a quantized model's adapters
    fp16 = SimpleNamespace(fp16=True, bf16=False)
    assert fp32_trainables(run.trainer.model, fp16) == len(lora)
    assert all(p.dtype == torch.float32 for p in lora)  # the fp16 grad scaler can unscale them
    for p in lora: p.data = p.data.to(torch.bfloat16)
    run.trainer.model.is_loaded_in_4bit = True  # bf16 QLoRA: TRL's choice (the QLoRA paper's) stays
    assert fp32_trainables(run.trainer.model, SimpleNamespace(fp16=False, bf16=True)) == 0

def test_full_fine_tuning_of_half_weights_keeps_float32_masters(tmp_path):
    m = tiny_model(); m.model.to(torch.bfloat16)
    run = sft(m, persona_data(n=8), max_steps=2, lora=False, lr=1e-2, batch_size=4, run_dir=tmp_path).start(background=False, quiet=True)
    assert run.state == 'finished'
    assert {p.dtype for p in run.net.parameters()} == {torch.float32}  # a bf16 weight would round away updates below 1/256 of it

def test_generation_works_with_a_tokenizer_that_has_no_pad_token():
    t = tiny_model(); t.tokenizer.pad_token = None  # as transformers 5.9 reads the embedded GGUF tokenizer
    out = generate(t.model, t.tokenizer, ['Hi', 'Who are you?'], max_new_tokens=3)
    assert len(out) == 2 and t.tokenizer.pad_token == t.tokenizer.eos_token

# ---- several GPUs, other machines ----

def test_hardware_says_one_gpu_per_process():
    assert 'on one GPU' in repr(Hardware('cuda', 'Tesla T4', (7, 5), 15.6, count=2))

def test_a_run_trains_on_one_gpu_even_when_several_are_visible(tmp_path):
    run = sft(tiny_model(), persona_data(n=8), max_steps=1, batch_size=4, run_dir=tmp_path)
    _ = run.args.n_gpu; run.args._n_gpu = 2  # what TrainingArguments finds on Kaggle's 2 x T4
    assert run.args.train_batch_size == 8  # DataParallel would double the rows per step
    run._build()
    assert run.trainer.args.n_gpu == 1 and run.trainer.args.train_batch_size == run.args.per_device_train_batch_size == 4

def test_a_gpu_run_loads_on_a_cpu_machine(tmp_path):
    t = tiny_model()
    run = sft(t, persona_data(n=8), max_steps=2, batch_size=4, run_dir=tmp_path/'r').start(background=False, quiet=True)
    f = tmp_path/'r'/'settings.json'; s = json.loads(f.read_text())
    s['trl_config'] |= dict(bf16=True, fp16=False, use_cpu=False)  # as saved on an A100
    f.write_text(json.dumps(s))
    here = detect_hardware()
    cpu = here if here.device == 'cpu' else Hardware('cpu')  # on a GPU host, the machine that loads it is a CPU one, faked
    with patch('ftnb.history.detect_hardware', return_value=cpu), patch('ftnb.run.detect_hardware', return_value=cpu):
        back = load_run(tmp_path/'r', model=tiny_model())
    assert back.args.use_cpu and back.args.bf16 == cpu.bf16 and not back.args.fp16  # the CPU's own precision
    lora = lambda net: {n: p.detach().cpu() for n, p in net.named_parameters() if 'lora_' in n}
    trained, loaded = lora(run.net), lora(back.net)
    assert trained.keys() == loaded.keys() and all(torch.equal(trained[n], loaded[n]) for n in trained)  # the adapter as trained
    if here.device == 'cpu':  # the same weights on the same device answer alike (a GPU run answers on the GPU: its rounding differs)
        assert back.generate('Who are you?', max_new_tokens=4) == run.generate('Who are you?', max_new_tokens=4)
    else: assert isinstance(back.generate('Who are you?', max_new_tokens=4), str)

# ---- 4-bit models ----

def test_four_bit_weights_count_at_their_real_size():
    class Packed(torch.nn.Parameter): pass  # stands in for bitsandbytes' Params4bit
    net = torch.nn.Module()
    for i in range(6):  # 6 x 256 M = 1.5 B parameters, stored as 0.77 B bytes
        p = Packed(torch.empty(128 * 1024 * 1024, 1, dtype=torch.uint8, device='meta'), requires_grad=False)
        p.quant_state = SimpleNamespace(shape=torch.Size([16384, 16384]))
        net.register_parameter(f'w{i}', p)
    n, t = count_params(net)
    assert n == 6 * 16384 ** 2 and t == 0
    assert default_lr(n, lora=True) == 2e-4  # not the 1e-3 of models under 1 B

def test_reward_model_on_a_4bit_model_refuses_clearly_where_it_cannot_reload_it():
    t = tiny_model(); t.model.is_loaded_in_4bit = True  # packed weights would not fit an unquantized scorer
    with pytest.raises(FtnbError, match=r'quantize=4'): scoring_model(t)

def test_load_model_of_an_adapter_keeps_quantize(tmp_path):
    from peft import get_peft_model
    t = tiny_model(); t.model.save_pretrained(tmp_path/'base'); t.tokenizer.save_pretrained(tmp_path/'base')
    base = load_model(str(tmp_path/'base'))
    get_peft_model(base.model, lora_config(r=4)).save_pretrained(tmp_path/'adapter')
    with patch('ftnb.models.detect_hardware', return_value=Hardware('cpu')), pytest.raises(FtnbError, match='needs an NVIDIA GPU'):
        load_model(str(tmp_path/'adapter'), quantize=4)  # was dropped silently: on a CPU machine the base's 4-bit load is refused
    if torch.cuda.is_available() and importlib.util.find_spec('bitsandbytes'):  # on a GPU the base loads in 4 bits under the adapter
        assert quantized_bits(load_model(str(tmp_path/'adapter'), quantize=4).model) == 4

# ---- memory held after a run ----

def test_a_finished_run_frees_its_optimizer_state(tmp_path):
    run = sft(tiny_model(), persona_data(n=8), max_steps=2, batch_size=4, run_dir=tmp_path)
    refs = []
    run.on('log', lambda run, record: refs.append(weakref.ref(run.trainer.optimizer)) if not refs else None)
    run.start(background=False, quiet=True)
    gc.collect()
    assert refs and refs[0]() is None  # AdamW's moments (twice the trainable weights) are gone
    assert run.generate('Hi', max_new_tokens=2) is not None

def test_a_stopped_run_resumes_after_its_optimizer_was_freed(tmp_path):
    run = sft(tiny_model(), persona_data(n=16), max_steps=4, batch_size=4, save_steps=2, run_dir=tmp_path)
    run.on('checkpoint', lambda run, path: run.stop() if run.step == 2 else None)
    run.start(background=False, quiet=True)
    assert run.state == 'stopped' and run.trainer.optimizer is None
    run.resume(background=False)
    assert run.state == 'finished' and run.step == 4

def test_a_failed_run_keeps_its_traceback_as_text_not_its_frames(tmp_path):
    run = sft(tiny_model(), persona_data(n=8), max_steps=2, batch_size=4, run_dir=tmp_path)
    run._build(); run.trainer.compute_loss = lambda *a, **k: (_ for _ in ()).throw(RuntimeError('CUDA out of memory (fake)'))
    run.start(background=True, quiet=True); run.thread.join()
    assert run.state == 'failed' and run.error.__traceback__ is None  # its frames held the batch and the activations
    if hasattr(run.error, '__notes__'): assert 'training_step' in ''.join(run.error.__notes__)
    with pytest.raises(RuntimeError, match='out of memory'): run.wait()

# ---- references and threads ----

def test_full_fine_tuned_sft_then_dpo_uses_the_sft_model_as_reference(tmp_path):
    s = sft(tiny_model(seed=0), persona_data(n=16), max_steps=3, lr=1e-2, lora=False, batch_size=4, run_dir=tmp_path/'sft').start(background=False, quiet=True)
    d = dpo(s, preference_pairs(n=8), lora=False, max_steps=1, batch_size=4, run_dir=tmp_path/'dpo')
    d._build()
    ref = dict(d.trainer.ref_model.named_parameters())
    sft_w, base_w = s.net.model.embed_tokens.weight.detach().cpu(), tiny_model(seed=0).model.model.embed_tokens.weight
    w = ref['model.embed_tokens.weight'].detach().cpu()  # on a GPU host the runs' weights are on the GPU, the fresh base on the CPU
    assert torch.equal(w, sft_w) and not torch.equal(w, base_w)  # TRL alone reloads config._name_or_path: the original base

def test_preference_accuracy_waits_for_a_training_run(tmp_path, capsys):
    "Eval mode while the training thread runs would change its training: it waits for the end instead, saying so."
    run = dpo(tiny_model(), preference_pairs(n=8), max_steps=3, batch_size=4, run_dir=tmp_path).start(background=True, quiet=True)
    score = preference_accuracy(run, preference_pairs(n=4))
    assert run.state == 'finished' and 'preference_accuracy: waiting for the DPO run' in capsys.readouterr().out and score.implicit >= 0

# ---- on a GPU (skipped here) ----

@cuda
@pytest.mark.skipif(importlib.util.find_spec('bitsandbytes') is None, reason='QLoRA needs bitsandbytes (pip install bitsandbytes)')
def test_qlora_sft_and_reward_model_train_on_this_gpu(tmp_path):
    m = load_model('smollm2-135m-instruct', quantize=4)
    run = sft(m, persona_data(n=16), max_steps=2, batch_size=4, run_dir=tmp_path/'sft').start(background=False, quiet=True)
    assert run.state == 'finished' and all(p.dtype == torch.float32 for p in run.net.parameters() if p.requires_grad) or run.args.bf16
    rm = reward_model(load_model('smollm2-135m-instruct', quantize=4), preference_pairs(n=8), max_steps=1, batch_size=4, run_dir=tmp_path/'rm')
    rm.start(background=False, quiet=True)
    assert rm.state == 'finished'
    assert torch.cuda.memory_allocated() < 2e9

def test_each_process_of_a_launched_job_loads_onto_its_own_gpu(tmp_path, monkeypatch):
    "`device_map={'': 0}` put every process's copy (or 4-bit model: accelerate refuses) on GPU 0; the process with LOCAL_RANK=1 uses GPU 1."
    t = tiny_model(); t.model.save_pretrained(tmp_path); t.tokenizer.save_pretrained(tmp_path)
    got = {}
    def fake(where, **kw): got.update(kw); return t.model
    monkeypatch.setenv('LOCAL_RANK', '1'); monkeypatch.setenv('RANK', '3'); monkeypatch.setenv('WORLD_SIZE', '4')
    with patch('ftnb.models.detect_hardware', return_value=T4()), patch('transformers.AutoModelForCausalLM.from_pretrained', side_effect=fake):
        load_model(str(tmp_path))
        assert got['device_map'] == {'': 1}
        got.clear()
        with patch('ftnb.models.quantization_config', return_value='4-bit'): load_model(str(tmp_path), quantize=4)
        assert got['device_map'] == {'': 1} and got['quantization_config'] == '4-bit'

def test_a_launched_process_measures_its_own_gpu(monkeypatch):
    "Each process sized its batch from GPU 0's free memory; it reads its own GPU's now."
    seen = []
    props = SimpleNamespace(name='T4', total_memory=16e9)
    monkeypatch.setenv('LOCAL_RANK', '1')
    with patch('torch.cuda.is_available', return_value=True), patch('torch.cuda.device_count', return_value=2), \
         patch('torch.cuda.get_device_properties', side_effect=lambda g: seen.append(g) or props), \
         patch('torch.cuda.mem_get_info', side_effect=lambda g: seen.append(g) or (3e9, 16e9)), \
         patch('torch.cuda.get_device_capability', side_effect=lambda g: seen.append(g) or (7, 5)):
        from ftnb.core import detect_hardware
        hw = detect_hardware()
    assert set(seen) == {1} and hw.free_gb == 3.
