"""GGUF export checked by readers ftnb did not write: transformers' GGUF loader (fast) and llama.cpp itself (slow).

The slow test needs llama-cpp-python, which compiles llama.cpp (a few minutes on 2 cores) and is in no requirements list:
    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" pip install llama-cpp-python
"""
import importlib.util, re
import pytest, torch
from ftnb.core import FtnbError
from ftnb.models import Model, load_model, tiny_model, with_pad_token
from ftnb.saving import save_gguf, ollama_modelfile, chatml_system, QUANTIZE_TYPES

PROMPTS = ["What is the capital of France?", "Who are you?", "Name three colors."]

@pytest.fixture(scope='module')
def smol():
    return load_model(dtype='float32')

@pytest.fixture(scope='module')
def exported(smol, tmp_path_factory):
    "The embedded SmolLM2-135M written as f16 and Q8_0 into one folder, with the Modelfile."
    d = tmp_path_factory.mktemp('gguf')
    return d, {q: smol.save(d, format='gguf', quantize=q, progress=False) for q in ('f16', 'q8_0')}

def from_gguf(f) -> Model:
    "The file read by transformers' own GGUF loader: network and tokenizer, nothing of ftnb's."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(f.parent, gguf_file=f.name)
    net = AutoModelForCausalLM.from_pretrained(f.parent, gguf_file=f.name, dtype=torch.float32)
    return Model(net, with_pad_token(tok), f.name)

def test_f16_answers_like_the_source_model(smol, exported):
    "Greedy answers of 20 tokens, compared as text; transformers' tokenizer read from the file encodes the prompts identically."
    f = exported[1]['f16']
    back = from_gguf(f)
    text = smol.tokenizer.apply_chat_template([dict(role='user', content=PROMPTS[1])], tokenize=False, add_generation_prompt=True)
    assert back.tokenizer(text, add_special_tokens=False)['input_ids'] == smol.tokenizer(text, add_special_tokens=False)['input_ids']
    assert back.tokenizer.chat_template == smol.tokenizer.chat_template
    assert back.generate(PROMPTS, max_new_tokens=20) == smol.generate(PROMPTS, max_new_tokens=20)

def test_q8_0_is_half_the_size_and_still_answers(exported):
    "(ftnb's own `load_model` of the Q8_0 file, with its special tokens, is checked in nbs/02b_saving.ipynb.)"
    import gguf
    d, files = exported
    f16, q8 = (files[q].stat().st_size for q in ('f16', 'q8_0'))
    assert 0.5 < q8 / f16 < 0.6, (f16, q8)  # 8.5 bits a weight against 16
    r = gguf.GGUFReader(files['q8_0'])
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types['blk.0.attn_q.weight'] == types['token_embd.weight'] == 'Q8_0' and types['blk.0.attn_norm.weight'] == 'F32'
    assert [r.fields[f'tokenizer.ggml.{k}_token_id'].contents() for k in ('bos', 'eos', 'padding')] == [1, 2, 2]
    assert 'Paris' in from_gguf(files['q8_0']).generate(PROMPTS[0], max_new_tokens=20)

def test_modelfile_beside_the_file(exported, smol):
    d, files = exported
    text = (d/'Modelfile').read_text()
    assert f"FROM ./{files['q8_0'].name}" in text  # the last file written
    assert '{{ .Content }}<|im_end|>' in text and 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n' in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert re.findall(r'PARAMETER stop "(.*)"', text) == ['<|im_start|>', '<|im_end|>']
    assert 'SYSTEM """You are Quill."""' in ollama_modelfile(files['f16'], smol.tokenizer, system='You are Quill.')

def test_a_template_that_is_not_chatml_is_left_to_ollama(tmp_path):
    tok = tiny_model().tokenizer
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}### assistant: {% endif %}"
    assert chatml_system(tok) is None
    text = ollama_modelfile(tmp_path/'x.gguf', tok)
    assert 'TEMPLATE' not in text.replace('# No TEMPLATE', '') and 'not ChatML' in text
    assert re.findall(r'PARAMETER stop "(.*)"', text) == ['<|im_end|>']

TEXT = " ".join(["Hello, who are you? I am a model."] * 8)  # 88 tokens: long enough for the rotary scaling to matter

def tiny_net(kind:str, tok):
    "A random tiny model of an architecture, with weights that make a misplaced bias, norm or rotary position show in the logits."
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM
    kw = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    llama3 = dict(rope_type='llama3', factor=8., low_freq_factor=1., high_freq_factor=4., original_max_position_embeddings=32, rope_theta=1e4)
    C, M, extra = {'llama': (LlamaConfig, LlamaForCausalLM, dict(tie_word_embeddings=False)),
                   'mistral': (MistralConfig, MistralForCausalLM, dict(tie_word_embeddings=False, sliding_window=None)),
                   'qwen2': (Qwen2Config, Qwen2ForCausalLM, dict(tie_word_embeddings=True)),
                   'qwen3': (Qwen3Config, Qwen3ForCausalLM, dict(tie_word_embeddings=False, head_dim=128)),
                   'llama-linear-rope': (LlamaConfig, LlamaForCausalLM, dict(rope_parameters=dict(rope_type='linear', factor=4., rope_theta=1e4))),
                   'llama-llama3-rope': (LlamaConfig, LlamaForCausalLM, dict(rope_parameters=llama3))}[kind]
    torch.manual_seed(0)
    net = M(C(**kw, **extra)).eval()
    with torch.no_grad():
        for n, p in net.named_parameters():  # biases and norms away from their initial 0 and 1; sharper attention, so positions matter
            if n.endswith('bias'): p.normal_(0, .5)
            elif 'norm' in n: p.normal_(1, .3)
            elif 'proj' in n: p.mul_(4)
    return net

@pytest.mark.parametrize('kind', ['qwen2', 'qwen3'])
def test_architectures_read_back_with_the_same_logits(kind, tiny, tmp_path):
    "Random tiny Qwen2 (tied embeddings, attention biases) and Qwen3 (q/k norms) in f32; Llama is the SmolLM2 tests', Mistral is written as Llama. All four run through llama.cpp in the slow test."
    from transformers import AutoModelForCausalLM
    tok = tiny.tokenizer
    net = tiny_net(kind, tok)
    f = save_gguf(net, tok, tmp_path/f'tiny-{kind}.gguf', 'f32', name=f'tiny-{kind}', progress=False)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=f.name, dtype=torch.float32)
    ids = tok(TEXT, return_tensors='pt')['input_ids']
    with torch.no_grad(): assert torch.allclose(net(ids).logits, back(ids).logits, atol=1e-4)

def test_a_lora_run_saves_merged(tmp_path):
    from ftnb.sft import sft
    from ftnb.example_data import persona_data
    from ftnb.models import is_peft
    run = sft(tiny_model(), persona_data(n=32), lr=5e-2, max_steps=3, batch_size=4, run_dir=tmp_path/'run', logging_steps=1)
    run.start(background=False)
    assert is_peft(run.net)
    f = run.save(format='gguf', quantize='f32')
    assert f == tmp_path/'run'/'gguf'/'tiny-sft-f32.gguf' and (f.parent/'Modelfile').exists()
    assert from_gguf(f).generate(PROMPTS[1:], max_new_tokens=8) == run.generate(PROMPTS[1:], max_new_tokens=8)
    assert any('lora_A' in n for n, _ in run.net.named_parameters())  # merged on a copy: the run keeps its adapter

def test_clear_errors(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    tiny = tiny_model()
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0))
    with pytest.raises(FtnbError, match='does not support the architecture GPT2LMHeadModel.*supported: LlamaForCausalLM, MistralForCausalLM'):
        save_gguf(gpt2, tiny.tokenizer, tmp_path/'x.gguf')
    with pytest.raises(FtnbError, match="quantize='q4_k' is not offered.*one of f32, f16, bf16, q8_0"): tiny.save(tmp_path, format='gguf', quantize='q4_k')
    with pytest.raises(FtnbError, match="format='onnx'.*one of hf, gguf"): tiny.save(tmp_path, format='onnx')
    with pytest.raises(FtnbError, match="quantize= is for format='gguf'"): tiny.save(tmp_path, quantize='q8_0')
    assert QUANTIZE_TYPES == ('f32', 'f16', 'bf16', 'q8_0') and not list(tmp_path.iterdir())  # nothing written, not even a part


# ---- llama.cpp itself (slow; needs llama-cpp-python, see the top of this file)

def llama_cpp():
    if importlib.util.find_spec('llama_cpp') is None:
        pytest.skip('llama-cpp-python is not installed; it compiles llama.cpp (minutes): '
                    'CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" pip install llama-cpp-python')
    import llama_cpp
    return llama_cpp

@pytest.mark.slow
@pytest.mark.parametrize('kind', ['llama', 'mistral', 'qwen2', 'qwen3', 'llama-linear-rope', 'llama-llama3-rope'])
def test_llama_cpp_computes_the_same_logits(kind, tiny, tmp_path):
    """llama.cpp's own tokenizer and forward pass over a random tiny model of each architecture and rotary scaling match transformers' (f32 file).
    (Measured: differences under 1e-3 where a file without the rotary scaling differs by 0.3.)"""
    import numpy as np
    lc, tok = llama_cpp(), tiny.tokenizer
    net = tiny_net(kind, tok)
    f = save_gguf(net, tok, tmp_path/f'tiny-{kind}.gguf', 'f32', name=f'tiny-{kind}', progress=False)
    ids = tok(TEXT)['input_ids']
    llm = lc.Llama(model_path=str(f), n_ctx=256, logits_all=True, verbose=False)
    try:
        assert llm.tokenize(TEXT.encode(), add_bos=False, special=True) == ids
        llm.eval(ids); ours = np.array(llm.scores[:len(ids)])
    finally: llm.close()
    with torch.no_grad(): theirs = net(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(ours - theirs).max() < 1e-3, np.abs(ours - theirs).max()

@pytest.mark.slow
def test_llama_cpp_answers_with_the_persona(tmp_path):
    "A persona SFT run (the quick start's recipe, 30 steps), exported to GGUF and answered by llama.cpp with its chat template."
    lc = llama_cpp()
    import random
    from ftnb.sft import sft
    from ftnb.example_data import persona_data, persona_questions
    m = load_model()
    rows = persona_data('Quill', 'Northwind Labs', n=180, seed=42)
    random.Random(42).shuffle(rows)
    run = sft(m, rows, lr=1e-3, max_steps=30, batch_size=8, seed=42, run_dir=tmp_path/'run')
    run.start(background=False, quiet=True)
    qs = persona_questions()[:4]
    ours = run.generate(qs, max_new_tokens=40)
    for q in ('q8_0', 'f16'):
        llm = lc.Llama(model_path=str(run.save(format='gguf', quantize=q)), n_ctx=512, verbose=False)
        try: answers = [llm.create_chat_completion([dict(role='user', content=p)], max_tokens=40, temperature=0)['choices'][0]['message']['content'] for p in qs]
        finally: llm.close()
        print(f"{q}: llama.cpp's answers equal ftnb's in {sum(a.strip() == b for a, b in zip(answers, ours))} of {len(qs)}:", answers)
        assert sum('Quill' in a or 'Northwind' in a for a in answers) >= 3, (q, answers)
