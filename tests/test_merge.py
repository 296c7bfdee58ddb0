"""Merging a QLoRA run (4/8-bit base) goes onto the base loaded again in 16 bits, not into the quantized weights, where small
LoRA updates round away (issue 28, bug 7). No GPU and no bitsandbytes here: the QLoRA base is imitated honestly, loaded from a
folder, marked as bitsandbytes marks it, and its frozen weights coarsened as 4-bit storage leaves them."""
import json, shutil, types, pytest, torch
from safetensors.torch import load_file
from ftnb.core import FtnbError
from ftnb.models import Model, load_model, tiny_model, lora_config
from ftnb.example_data import chat_row
from ftnb.data import load_data
from ftnb.sft import sft
import ftnb.saving  # Model.save

LIN = 'model.layers.0.self_attn.q_proj'

def int4(w):
    "`w` rounded to 16 levels a row, scaled by the row's largest weight: what 4-bit storage keeps of it, roughly (NF4 scales blocks of 64)."
    s = w.abs().amax(-1, keepdim=True) / 7
    return (w / s).round().clamp(-8, 7) * s

def qlora(tmp_path):
    "A LoRA network on a base loaded from `tmp_path/'base'` that looks 4-bit: (network, its tokenizer, the base's 16-bit weights)."
    from peft import get_peft_model
    m = tiny_model(); base_dir = tmp_path/'base'; m.save(base_dir)
    b = load_model(str(base_dir), dtype='float32', device='cpu')
    w16 = {k: v.clone() for k, v in b.model.state_dict().items()}
    net = get_peft_model(b.model, lora_config(r=2))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if 'lora_B' in n: p.normal_(0, 1e-3)  # a small trained update
            elif 'lora_' not in n and p.ndim == 2: p.copy_(int4(p))  # the frozen weights as 4-bit storage leaves them
    net.get_base_model().is_loaded_in_4bit = True  # what bitsandbytes marks
    return net, b.tokenizer, w16

def update(net, lin=LIN):
    "scale·B@A of the adapter on the linear layer `lin`."
    sd, cfg = net.state_dict(), net.peft_config['default']
    A, B = sd[f'base_model.model.{lin}.lora_A.default.weight'], sd[f'base_model.model.{lin}.lora_B.default.weight']
    return cfg.lora_alpha / cfg.r * B @ A

def check_16bit_merge(out, net, w16):
    "The folder `out` holds base16 + scale·B@A, plain (no quantization_config), and merging into the 4-bit copy would have differed."
    assert 'quantization_config' not in json.loads((out/'config.json').read_text())
    saved = load_file(out/'model.safetensors')[f'{LIN}.weight']
    torch.testing.assert_close(saved, w16[f'{LIN}.weight'] + update(net), atol=1e-6, rtol=1e-5)
    into_4bit = net.state_dict()[f'base_model.model.{LIN}.base_layer.weight'] + update(net)  # what merging into the quantized copy gives
    assert (saved - into_4bit).abs().max() > 1e-3
    assert net.get_base_model().is_loaded_in_4bit and hasattr(net, 'peft_config')  # the run's network keeps its adapters

def test_a_qlora_merge_is_made_onto_the_16bit_base(tmp_path):
    net, tok, w16 = qlora(tmp_path)
    check_16bit_merge(Model(net, tok, str(tmp_path/'base')).save(tmp_path/'merged', merged=True), net, w16)

def test_run_save_merged_of_a_qlora_run_reloads_the_base_from_where_it_was_loaded(tmp_path):
    "Run.save names the model '<model>-<method>', which no folder holds: the base is found by where its weights were loaded from."
    net, tok, w16 = qlora(tmp_path)
    rows = load_data([chat_row('Who are you?', 'Quill.')] * 4)
    run = sft(Model(net, tok, str(tmp_path/'base')), rows, max_steps=1, run_dir=tmp_path/'run')
    check_16bit_merge(run.save(merged=True), net, w16)

def test_a_qlora_gguf_export_writes_the_16bit_merge(tmp_path):
    import gguf
    net, tok, w16 = qlora(tmp_path)
    f = Model(net, tok, 'base-sft').save(tmp_path/'gguf', format='gguf', quantize='f32', progress=False)
    t = {x.name: x for x in gguf.GGUFReader(f).tensors}['blk.0.attn_q.weight']
    assert (f.parent/'Modelfile').exists()
    from ftnb.saving import merge_onto_16bit, gguf_tensors
    want = dict(gguf_tensors(merge_onto_16bit(net), 'llama'))['blk.0.attn_q.weight']
    torch.testing.assert_close(torch.from_numpy(t.data.copy()).reshape(want.shape), want, atol=1e-6, rtol=1e-5)

def test_a_qlora_base_that_cannot_be_loaded_again_is_refused_with_what_to_do(tmp_path):
    net, tok, _ = qlora(tmp_path)
    shutil.rmtree(tmp_path/'base')  # a base loaded from a temporary folder, gone since
    with pytest.raises(FtnbError, match=r"cannot be loaded again.*PeftModel.from_pretrained"): Model(net, tok, 'tiny').save(tmp_path/'merged', merged=True)
    assert not (tmp_path/'merged').exists()

def test_a_base_stored_quantized_is_refused_before_it_is_loaded_again(tmp_path, monkeypatch):
    "A checkpoint saved in 4 bits (an '...-bnb-4bit' repository) loads in 4 bits again: there is no 16-bit copy to merge onto."
    net, tok, _ = qlora(tmp_path)
    net.get_base_model().hf_quantizer = types.SimpleNamespace(pre_quantized=True)  # transformers' mark of such a checkpoint
    monkeypatch.setattr(ftnb.saving, 'load_model', lambda *a, **k: pytest.fail('loaded again'))
    with pytest.raises(FtnbError, match='stored quantized.*16-bit original'): Model(net, tok, 'tiny').save(tmp_path/'merged', merged=True)

def test_the_16bit_copy_goes_to_the_gpu_where_it_fits_else_the_cpu():
    from ftnb.saving import merge_place
    assert merge_place('cuda:0', 1_700_000_000, free_gb=10) == ('cuda:0', 'bfloat16')
    assert merge_place('cuda:1', 8_000_000_000, free_gb=12.5) == ('cpu', 'bfloat16')  # 16 GB does not fit: the CPU, still 16 bits
    assert merge_place('cuda:0', 8_000_000_000, free_gb=40, bf16=False) == ('cuda:0', 'float16')  # a T4
