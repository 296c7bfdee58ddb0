"""Batched generation (issue 30): prompts sorted by length and batched as memory allows, answers in the prompts' order,
greedy answers the same as plain `model.generate` gives."""
import pytest, torch
from unittest.mock import patch
from ftnb.models import load_model, generate, generation_rows, kv_bytes_per_token, MAX_GENERATION_ROWS, with_pad_token
from ftnb.chat import chat_text
from ftnb.core import free_memory_gb

QUESTIONS = [
    'What is the capital of France?', 'Name a primary color.', 'What is 2 + 2?',
    'Write one sentence about the sea, in the style of a weather report for sailors on a stormy night.',
    'Hi', 'Which planet is the largest in our solar system, and roughly how many Earths would fit inside it?',
    'Spell cat backwards.', 'What do bees make?', 'Give a synonym of happy.', 'Who wrote Romeo and Juliet?',
    'What is the boiling point of water at sea level in degrees Celsius?', 'Translate "thank you" into French.',
    'How many legs does a spider have?', 'Name a fruit that is yellow.',
    'If a train leaves at noon and travels for three hours, at what time does it arrive?', 'What is ice made of?',
]

@pytest.fixture(scope='module')
def smol():
    "The embedded model in float32: in bfloat16 any change of batch (plain generate's too) can flip a near-tie token."
    return load_model('smollm2-135m-instruct', dtype='float32')

def plain_generate(m, prompts, max_new_tokens, batch=8):
    "transformers' `generate` as a user calls it: the prompts in their order, 8 at a time, left-padded, greedy."
    tok = with_pad_token(m.tokenizer); tok.padding_side = 'left'
    m.model.eval(); out = []
    for i in range(0, len(prompts), batch):
        texts = [chat_text(tok, [dict(role='user', content=q)], generation_prompt=True) for q in prompts[i:i + batch]]
        enc = tok(texts, return_tensors='pt', padding=True, add_special_tokens=False)
        with torch.no_grad():
            ids = m.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                   top_k=None, pad_token_id=tok.pad_token_id)
        out += [s.strip() for s in tok.batch_decode(ids[:, enc['input_ids'].shape[1]:], skip_special_tokens=True)]
    tok.padding_side = 'right'
    return out

def test_greedy_answers_are_those_of_plain_generate(smol):
    "The fast path (one batch of all 16 prompts, sorted by length) answers exactly as plain generate does."
    fast = smol.generate(QUESTIONS, max_new_tokens=24)
    assert fast == plain_generate(smol, QUESTIONS, 24)
    assert fast[0].startswith('The capital of France is Paris')  # and in the prompts' order

def test_batches_follow_free_memory_and_keep_the_order(smol):
    "With room for 3 rows only, generate makes 6 batches of at most 3, longest prompts first, answers in order."
    kv, seen, qs = kv_bytes_per_token(smol.model.config, next(smol.model.parameters()).element_size()), [], QUESTIONS[:8]
    longest = max(len(smol.tokenizer(chat_text(smol.tokenizer, [dict(role='user', content=q)], generation_prompt=True),
                                     add_special_tokens=False)['input_ids']) for q in qs) + 8
    real = smol.model.generate
    def spy(**kw): seen.append(kw['input_ids'].shape); return real(**kw)
    with patch('ftnb.models.free_memory_gb', return_value=4 * kv * longest * 3.5 / 1e9), patch.object(smol.model, 'generate', spy):
        out = smol.generate(qs, max_new_tokens=8)
    assert [s[0] for s in seen] == [3, 3, 2]
    assert [s[1] for s in seen] == sorted((s[1] for s in seen), reverse=True)  # longest first
    assert out == [smol.generate(q, max_new_tokens=8) for q in qs]

def test_several_answers_a_prompt_stay_with_their_prompt(tiny):
    "num_return_sequences=n: each prompt's n answers in a row, whatever batch it fell in (top_k=1: sampling is greedy)."
    qs = ['Hi', 'A much longer question than the others, to be sorted first', 'Yes?']
    one = [tiny.generate(q, max_new_tokens=5) for q in qs]
    out = tiny.generate(qs, max_new_tokens=5, do_sample=True, top_k=1, num_return_sequences=2, generation_batch_size=2)
    assert out == [a for a in one for _ in range(2)]
    assert tiny.generate(qs[0], max_new_tokens=5, do_sample=True, top_k=1, num_return_sequences=2) == [one[0]] * 2

def test_generation_rows_on_a_faked_gpu():
    "On CUDA the free memory counts what torch's allocator reserved but does not use; rows follow from it."
    from types import SimpleNamespace
    GB = 10**9
    with patch('torch.cuda.mem_get_info', return_value=(6 * GB, 16 * GB)), \
         patch('torch.cuda.memory_reserved', return_value=3 * GB), patch('torch.cuda.memory_allocated', return_value=1 * GB):
        assert free_memory_gb('cuda:0') == 8.0
    cfg = SimpleNamespace(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, hidden_size=4096)  # an 8B
    net = SimpleNamespace(config=cfg, parameters=lambda: iter([torch.zeros(1, dtype=torch.bfloat16)]))
    assert kv_bytes_per_token(cfg, 2) == 2 * 32 * 8 * 128 * 2  # 131 kB a token
    assert generation_rows(net, 4096, free_gb=8.0) == 3  # 2 GB for the cache: 3 rows of 4,096 tokens
    assert generation_rows(net, 512, free_gb=70.0) == MAX_GENERATION_ROWS

def test_no_prompts_no_answers(tiny):
    assert tiny.generate([], max_new_tokens=3) == []
