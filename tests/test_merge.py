"Merging a QLoRA run (4/8-bit base) must merge onto a 16-bit reload of the base, not into the quantized weights (issue 28, bug 7)."
import json, pytest, torch
from safetensors.torch import load_file
from ftnb.core import FtnbError
from ftnb.models import Model, load_model, tiny_model, lora_config
import ftnb.formats  # Model.save

def _qlora(tmp_path, name=None):
    "A LoRA model whose base looks 4-bit (as bitsandbytes marks it) and has coarsened weights; the original weights, and the folder."
    from peft import get_peft_model
    m = tiny_model(); base_dir = tmp_path/'base'; m.model.save_pretrained(base_dir); m.tokenizer.save_pretrained(base_dir)
    b = load_model(str(base_dir), dtype='float32', device='cpu')
    orig = {k: v.clone() for k, v in b.model.state_dict().items()}
    net = get_peft_model(b.model, lora_config(r=2))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if 'lora_B' in n: p.copy_(torch.randn_like(p) * 1e-3)
            elif 'lora_' not in n: p.copy_((p * 4).round() / 4)  # what 4-bit storage does to the frozen weights, roughly
    net.get_base_model().is_loaded_in_4bit = True
    return Model(net, b.tokenizer, name or str(base_dir), b.source), orig

def test_a_qlora_merge_is_made_onto_the_16bit_base(tmp_path):
    m, orig = _qlora(tmp_path)
    net, sd = m.model, m.model.state_dict()
    out = m.save(tmp_path/'merged', merged=True)
    saved = load_file(out/'model.safetensors')
    assert 'quantization_config' not in json.loads((out/'config.json').read_text())
    lin = 'model.layers.0.self_attn.q_proj'
    A, B = sd[f'base_model.model.{lin}.lora_A.default.weight'], sd[f'base_model.model.{lin}.lora_B.default.weight']
    scale = net.peft_config['default'].lora_alpha / net.peft_config['default'].r
    want = orig[f'{lin}.weight'] + scale * B @ A
    torch.testing.assert_close(saved[f'{lin}.weight'], want, atol=1e-6, rtol=1e-5)
    coarse = sd[f'base_model.model.{lin}.base_layer.weight'] + scale * B @ A  # what merging into the quantized copy gives
    assert (saved[f'{lin}.weight'] - coarse).abs().max() > 1e-3
    assert net.get_base_model().is_loaded_in_4bit and hasattr(net, 'peft_config')  # the run's network keeps its adapters

def test_a_qlora_merge_of_a_base_that_cannot_be_reloaded_says_what_to_do(tmp_path):
    m, _ = _qlora(tmp_path, name='tiny')
    with pytest.raises(FtnbError, match='16-bit.*run.save'): m.save(tmp_path/'merged', merged=True)
    assert not (tmp_path/'merged').exists()
