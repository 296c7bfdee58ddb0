"""The data layer: real files, every source and format, validation errors that name row and field, masks, stats."""
import json, gzip, re
from pathlib import Path
import pytest
from ftnb.core import FtnbError
from ftnb.data import load_data, detect_format, read_records, check_chat_template, encode, final_answer, FORMATS, Data
from ftnb.samples import arithmetic_data, preference_pairs, persona_data

@pytest.fixture(scope='module')
def tok():
    from transformers import AutoTokenizer
    from ftnb.models import convert_gguf, embedded_gguf
    return AutoTokenizer.from_pretrained(convert_gguf(embedded_gguf(), quiet=True))

# ---- the real files in ../shared/data ----

def test_sharegpt_file_becomes_messages(data_dir):
    d = load_data(data_dir/'fastchat_identity.json')
    assert (len(d), d.kind, d.detected) == (500, 'conversation', 'sharegpt')
    for r in d:
        roles = [m['role'] for m in r['messages']]
        assert set(roles) == {'user', 'assistant'} and roles[0] == 'user' and roles[-1] == 'assistant'
    assert 'Vicuna' in d[0]['messages'][1]['content']

def test_hh_rlhf_pairs_share_a_prompt_and_differ_in_the_final_turn(data_dir):
    raw = [json.loads(l) for l in gzip.open(data_dir/'hh_rlhf_harmless_test.jsonl.gz', 'rt')]
    d = load_data(data_dir/'hh_rlhf_harmless_test.jsonl.gz')
    assert (len(d), d.kind, d.detected, d.dropped) == (2312, 'preference', 'implicit_preference', [])
    for r, x in zip(d, raw):
        assert r['prompt'][-1]['role'] == 'user' and r['prompt'][0]['role'] == 'user'
        assert len(r['chosen']) == len(r['rejected']) == 1 and r['chosen'][0]['role'] == r['rejected'][0]['role'] == 'assistant'
        assert r['chosen'] != r['rejected']
        last = x['chosen'].rsplit('\n\nAssistant:', 1)[1].strip()
        assert r['chosen'][0]['content'].endswith(last)

def test_gsm8k_becomes_prompt_and_numeric_answer(data_dir):
    d = load_data(data_dir/'gsm8k_train.jsonl')
    assert (len(d), d.kind, d.detected) == (7473, 'prompt_only', 'qa')
    assert d[0]['answer'] == '72' and d[0]['prompt'][0]['content'].startswith('Natalia sold clips')
    assert all(re.fullmatch(r'-?\d+(\.\d+)?', r['answer']) for r in d)
    assert '<<' not in d[0]['solution'] and '####' not in d[0]['solution']

# ---- sources ----

ROWS = [dict(instruction='Add 2 and 3', input='', output='5'), dict(instruction='Translate', input='chat', output='cat')]

def test_every_source_reads_the_same_rows(tmp_path):
    import pandas as pd
    from datasets import Dataset, DatasetDict
    (tmp_path/'a.json').write_text(json.dumps(ROWS))
    (tmp_path/'a.jsonl').write_text('\n'.join(json.dumps(r) for r in ROWS))
    with gzip.open(tmp_path/'a.jsonl.gz', 'wt') as f: f.write('\n'.join(json.dumps(r) for r in ROWS))
    pd.DataFrame(ROWS).to_csv(tmp_path/'a.csv', index=False); pd.DataFrame(ROWS).to_parquet(tmp_path/'a.parquet')
    folder = tmp_path/'dir'; folder.mkdir(); (folder/'x.jsonl').write_text(json.dumps(ROWS[0])); (folder/'y.jsonl').write_text(json.dumps(ROWS[1]))
    srcs = [ROWS, pd.DataFrame(ROWS), Dataset.from_list(ROWS), DatasetDict(train=Dataset.from_list(ROWS)), folder] + \
           [tmp_path/f for f in ('a.json', 'a.jsonl', 'a.jsonl.gz', 'a.csv', 'a.parquet')]
    want = load_data(ROWS).rows
    assert want[1]['messages'][0]['content'] == 'Translate\n\nchat'
    for s in srcs:
        d = load_data(s)
        assert d.rows == want, s
    assert 'alpaca' in repr(load_data(tmp_path/'a.csv'))

def test_hub_id_offline_is_explained():
    with pytest.raises(FtnbError, match=r"Could not load 'nobody/nothing' from the Hugging Face Hub.*Offline"): load_data('nobody/nothing')

def test_datasetdict_without_train_asks_for_a_split():
    from datasets import Dataset, DatasetDict
    dd = DatasetDict(a=Dataset.from_list(ROWS), b=Dataset.from_list(ROWS))
    with pytest.raises(FtnbError, match=r"splits \['a', 'b'\]"): load_data(dd)
    assert len(load_data(dd, split='b')) == 2

# ---- detection and conversion of every format ----

def test_each_format_converts_to_its_kind():
    cases = {
        'messages': ([dict(messages=[dict(role='system', content='Be brief'), dict(role='user', content='Hi'), dict(role='assistant', content='Hello')])], 'conversation'),
        'sharegpt': ([dict(conversations=[dict(**{'from': 'user', 'value': 'Hi'}), dict(**{'from': 'assistant', 'value': 'Hello'})], system='Be brief')], 'conversation'),
        'alpaca': (ROWS, 'conversation'),
        'prompt_completion': ([dict(prompt='2+2=', completion='4')], 'prompt_completion'),
        'text': ([dict(text='Once upon a time')], 'text'),
        'preference': ([dict(prompt='Hi', chosen='Hello!', rejected='Go away')], 'preference'),
        'implicit_preference': ([dict(chosen=[dict(role='user', content='Hi'), dict(role='assistant', content='Hello!')],
                                      rejected=[dict(role='user', content='Hi'), dict(role='assistant', content='Go away')])], 'preference'),
        'kto': ([dict(prompt='Hi', completion='Hello!', label=True)], 'unpaired_preference'),
        'qa': ([dict(question='What is 6*7?', answer='6*7=<<6*7=42>>42\n#### 42')], 'prompt_only'),
        'prompt_only': ([dict(prompt='Tell me a story')], 'prompt_only'),
    }
    assert set(cases) == set(FORMATS)
    for fmt, (rows, kind) in cases.items():
        d = load_data(rows)
        assert (d.detected, d.kind) == (fmt, kind), fmt
    sg = load_data(cases['sharegpt'][0])[0]['messages']
    assert [m['role'] for m in sg] == ['system', 'user', 'assistant'] and sg[0]['content'] == 'Be brief'
    ip = load_data(cases['implicit_preference'][0])[0]
    assert ip['prompt'] == [dict(role='user', content='Hi')] and ip['chosen'] == [dict(role='assistant', content='Hello!')]

def test_system_turns_are_kept_and_added():
    d = load_data([dict(messages=[dict(role='user', content='Hi'), dict(role='assistant', content='Hey')])], system='You are terse.')
    assert d[0]['messages'][0] == dict(role='system', content='You are terse.')

def test_column_mapping():
    d = load_data([dict(query='Hi', response='Hello')], columns={'query': 'prompt', 'response': 'completion'})
    assert d.detected == 'prompt_completion' and d[0] == dict(prompt='Hi', completion='Hello')
    with pytest.raises(FtnbError, match=r"\['qry'\] not among the data's columns"): load_data([dict(query='Hi')], columns={'qry': 'prompt'})

def test_hh_transcript_string_form():
    d = load_data([dict(chosen='\n\nHuman: Hi\n\nAssistant: Hello!', rejected='\n\nHuman: Hi\n\nAssistant: What?')])
    assert d[0]['prompt'] == [dict(role='user', content='Hi')] and d[0]['rejected'][0]['content'] == 'What?'

def test_final_answer_extraction():
    assert final_answer('so 3 + 4 = 7\n#### 7') == '7'
    assert final_answer('#### 1,234') == '1234' and final_answer('#### -5') == '-5' and final_answer('Paris') == 'Paris'

# ---- validation: each malformed input names its row and field ----

OK_MSG = [dict(role='user', content='Hi'), dict(role='assistant', content='Hello')]
BAD = [  # (rows, format or None, row index, field, words)
    ([dict(messages=OK_MSG), dict(messages='hello')], None, 1, 'messages', 'expected a list of messages'),
    ([dict(messages=OK_MSG), dict(messages=[])], None, 1, 'messages', 'empty conversation'),
    ([dict(messages=OK_MSG), dict(messages=[dict(role='user', content='Hi')])], None, 1, 'messages', 'no assistant turn'),
    ([dict(messages=OK_MSG), dict(messages=[dict(role='robot', content='Hi'), OK_MSG[1]])], None, 1, 'messages[0].role', "unknown role"),
    ([dict(messages=OK_MSG), dict(messages=[dict(content='Hi'), OK_MSG[1]])], None, 1, 'messages[0].role', 'is missing'),
    ([dict(messages=OK_MSG), dict(messages=[dict(role='user'), OK_MSG[1]])], None, 1, 'messages[0].content', 'is missing'),
    ([dict(messages=OK_MSG), dict(messages=[dict(role='user', content=42), OK_MSG[1]])], None, 1, 'messages[0].content', 'is int, expected text'),
    ([dict(messages=OK_MSG), dict(messages=[dict(role='user', content='   '), OK_MSG[1]])], None, 1, 'messages[0].content', 'is empty'),
    ([dict(messages=OK_MSG), dict(messages=['Hi', 'Hello'])], None, 1, 'messages[0]', 'is str, expected a message'),
    ([dict(messages=OK_MSG), dict(messages=OK_MSG, system=3)], None, 1, 'system', 'is int, expected text'),
    ([dict(conversations=[{'from': 'human', 'value': 'Hi'}, {'from': 'gpt', 'value': 'Yo'}]), dict(conversations=[{'from': 'human', 'value': 'Hi'}, {'from': 'bot', 'value': 'Yo'}])], None, 1, 'conversations[1].from', "unknown role"),
    ([dict(conversations=[{'from': 'human', 'value': 'Hi'}, {'from': 'gpt', 'value': 'Yo'}]), dict(conversations=[{'from': 'human', 'value': 'Hi'}, {'from': 'gpt'}])], None, 1, 'conversations[1].value', 'is missing'),
    ([dict(conversations=[{'from': 'human', 'value': 'Hi'}, {'from': 'gpt', 'value': 'Yo'}]), dict(conversations=[{'from': 'human', 'value': 'Hi'}])], None, 1, 'conversations', 'no assistant turn'),
    ([dict(conversations=[{'from': 'human', 'value': 'Hi'}, {'from': 'gpt', 'value': 'Yo'}]), dict(id=7)], None, 1, 'conversations', 'is missing'),
    ([ROWS[0], dict(instruction='Add', output=None)], None, 1, 'output', 'is missing'),
    ([ROWS[0], dict(instruction='', input='', output='5')], None, 1, 'instruction', 'is empty'),
    ([ROWS[0], dict(instruction='Add', input=['x'], output='5')], None, 1, 'input', 'is list, expected text'),
    ([dict(prompt='a', completion='b'), dict(prompt='a', completion='')], None, 1, 'completion', 'is empty'),
    ([dict(prompt='a', completion='b'), dict(prompt=None, completion='b')], None, 1, 'prompt', 'is missing'),
    ([dict(prompt='a', completion='b'), dict(prompt=[dict(role='user', content='a')], completion=[dict(role='user', content='b')])], None, 1, 'completion', 'no assistant turn'),
    ([dict(text='ok'), dict(text=5)], None, 1, 'text', 'is int, expected text'),
    ([dict(prompt='p', chosen='a', rejected='b'), dict(prompt='p', chosen='same', rejected='same')], None, 1, 'chosen', 'identical to rejected'),
    ([dict(prompt='p', chosen='a', rejected='b'), dict(prompt='p', chosen='a')], None, 1, 'rejected', 'is missing'),
    ([dict(prompt='p', chosen='a', rejected='b'), dict(prompt='', chosen='a', rejected='b')], None, 1, 'prompt', 'is empty'),
    ([dict(chosen='\n\nHuman: Hi\n\nAssistant: A', rejected='\n\nHuman: Hi\n\nAssistant: B'), dict(chosen='no markers here', rejected='\n\nHuman: Hi\n\nAssistant: B')], None, 1, 'chosen', 'transcript without'),
    ([dict(chosen='\n\nHuman: Hi\n\nAssistant: A', rejected='\n\nHuman: Hi\n\nAssistant: B'), dict(chosen='\n\nHuman: Hi\n\nAssistant: A', rejected='\n\nHuman: Hi\n\nAssistant: A')], None, 1, 'chosen', 'identical to rejected'),
    ([dict(chosen='\n\nHuman: Hi\n\nAssistant: A', rejected='\n\nHuman: Hi\n\nAssistant: B'), dict(chosen='\n\nHuman: Hi\n\nAssistant: A', rejected='\n\nHuman: Bye\n\nAssistant: B')], None, 1, 'chosen', 'shares no opening turn'),
    ([dict(chosen='\n\nHuman: Hi\n\nAssistant: A', rejected='\n\nHuman: Hi\n\nAssistant: B'), dict(chosen='\n\nHuman: Hi\n\nAssistant: A\n\nHuman: more', rejected='\n\nHuman: Hi\n\nAssistant: B')], None, 1, 'chosen', 'before its final assistant turn'),
    ([dict(chosen='\n\nHuman: Hi\n\nAssistant: A', rejected='\n\nHuman: Hi\n\nAssistant: B'), dict(chosen='Preamble\n\nHuman: Hi\n\nAssistant: A', rejected='\n\nHuman: Hi\n\nAssistant: B')], None, 1, 'chosen', 'text before its first'),
    ([dict(prompt='p', completion='c', label=True), dict(prompt='p', completion='c', label='yes')], None, 1, 'label', 'is str, expected True or False'),
    ([dict(prompt='p', completion='c', label=True), dict(prompt='p', completion='c', label=1)], None, 1, 'label', 'is int, expected True or False'),
    ([dict(prompt='p', completion='c', label=False), dict(prompt='p', completion='c')], None, 1, 'label', 'is missing'),
    ([dict(question='q', answer='#### 1'), dict(question='q', answer=42)], None, 1, 'answer', 'is int, expected text'),
    ([dict(question='q', answer='#### 1'), dict(question='', answer='#### 1')], None, 1, 'question', 'is empty'),
    ([dict(prompt='p'), dict(prompt=7)], 'prompt_only', 1, 'prompt', 'expected a list of messages'),
]

@pytest.mark.parametrize('rows,fmt,row,field,words', BAD, ids=[f"{i}-{b[3]}" for i, b in enumerate(BAD)])
def test_bad_row_is_named_with_its_field_and_value(rows, fmt, row, field, words):
    with pytest.raises(FtnbError) as e: load_data(rows, format=fmt)
    msg = str(e.value)
    assert f"Row {row} of" in msg and f"field {field!r}" in msg and words in msg, msg
    d = load_data(rows, format=fmt, on_error='drop', quiet=True)
    assert len(d) == len(rows) - 1 and d.dropped[0][0] == row and field in d.dropped[0][1]

def test_rows_that_are_not_records():
    with pytest.raises(FtnbError, match=r"Row 1 of a list: is not a record \(a dict of fields\) but a str: 'oops'"):
        load_data([dict(text='fine'), 'oops'])
    with pytest.raises(FtnbError, match='Row 2 of a list: is not a record.*list'): load_data([dict(text='a'), dict(text='b'), [1, 2]])

def test_malformed_files_name_the_line(tmp_path):
    f = tmp_path/'x.jsonl'; f.write_text('{"text": "a"}\n{"text": "b"\n')
    with pytest.raises(FtnbError, match=r'x.jsonl, line 2: not valid JSON'): load_data(f)
    g = tmp_path/'y.json'; g.write_text('[{"text": "a"},')
    with pytest.raises(FtnbError, match=r'y.json: not valid JSON .* line 1'): load_data(g)
    h = tmp_path/'z.txt'; h.write_text('hello')
    with pytest.raises(FtnbError, match='unknown file type'): load_data(h)
    with pytest.raises(FtnbError, match='No such file or folder'): load_data(tmp_path/'missing.jsonl')
    (tmp_path/'empty_dir').mkdir()
    with pytest.raises(FtnbError, match='no data files'): load_data(tmp_path/'empty_dir')

def test_unknown_columns_explain_the_formats():
    with pytest.raises(FtnbError, match=r"Could not tell the format from the columns \['input_text', 'target'\].*columns="):
        load_data([dict(input_text='a', target='b')])

def test_drop_reports_counts(capsys):
    rows = [dict(text='a'), dict(text=''), dict(text=3), dict(text='b')]
    d = load_data(rows, on_error='drop')
    assert len(d) == 2 and [i for i, _ in d.dropped] == [1, 2]
    out = capsys.readouterr().out
    assert 'Dropped 2 of 4 rows' in out and 'first: row 1' in out
    with pytest.raises(FtnbError, match='Every row'): load_data([dict(text='')], on_error='drop', quiet=True)
    with pytest.raises(FtnbError, match="on_error must be"): load_data(rows, on_error='skip')

def test_long_values_are_shortened_in_messages():
    with pytest.raises(FtnbError) as e: load_data([dict(text='a'), dict(text=['x' * 5000])])
    assert len(str(e.value)) < 400

# ---- templates, masks, the view ----

def test_assistant_mask_covers_exactly_the_answers_and_their_end_tokens(tok):
    d = load_data([dict(messages=[dict(role='user', content='Who are you?'), dict(role='assistant', content='I am Quill.'),
                                  dict(role='user', content='Bye'), dict(role='assistant', content='Goodbye!')])])
    e = encode(tok, 'conversation', d[0])[0]
    trained = ''.join(e['text'][a:b] for (a, b), m in zip(e['offsets'], e['mask']) if m)
    assert trained == 'I am Quill.<|im_end|>Goodbye!<|im_end|>'

def test_prompt_completion_and_text_masks(tok):
    e = encode(tok, 'prompt_completion', dict(prompt='2+2=', completion='4'))[0]
    assert ''.join(e['text'][a:b] for (a, b), m in zip(e['offsets'], e['mask']) if m) == '4<|im_end|>'
    e = encode(tok, 'text', dict(text='hello world'))[0]
    assert all(e['mask']) and e['text'].endswith(tok.eos_token)

def test_trl_trains_only_the_assistant_tokens_for_smollm2(tok):
    "TRL's own assistant_only_loss refuses SmolLM2's template; ftnb's masks give TRL the right labels."
    from trl import SFTTrainer, SFTConfig
    from ftnb.models import tiny_model
    from ftnb.core import detect_hardware
    d = load_data(persona_data(n=8))
    ds = d.tokenize(tok, max_length=128)
    m = tiny_model()
    tr = SFTTrainer(model=m.model, processing_class=tok, train_dataset=ds,
                    args=SFTConfig('/tmp/ftnb-test-sft', max_steps=1, report_to='none', per_device_train_batch_size=2, **detect_hardware().trainer_args))
    row = tr.train_dataset[0]
    trained = tok.decode([i for i, l in zip(row['input_ids'], row['labels']) if l != -100])
    assert 'Quill' in trained and 'user' not in trained and 'SmolLM' not in trained and trained.endswith('<|im_end|>')
    tr.train()

def test_every_label_masked_is_caught_before_training(tok):
    d = load_data([dict(prompt='word ' * 200, completion='yes'), dict(prompt='short', completion='fine')])
    with pytest.raises(FtnbError, match=r'1 of 2 rows would train nothing.*row 0: its answer starts at token \d+, beyond max_length=50'):
        d.tokenize(tok, max_length=50)
    with pytest.raises(FtnbError, match='is for SFT data'): load_data(preference_pairs(n=2)).tokenize(tok)

def test_base_model_without_template_gets_chatml(tok):
    from transformers import AutoTokenizer
    t = AutoTokenizer.from_pretrained(tok.name_or_path); t.chat_template = None
    notes = check_chat_template(t, quiet=True)
    assert 'ChatML' in notes[0] and t.chat_template
    assert check_chat_template(tok, quiet=True) == []
    t.eos_token = '<|endoftext|>'
    assert any('not the EOS token' in n for n in check_chat_template(t, quiet=True))

def test_loss_mask_view_html_and_ansi(tok):
    d = load_data(preference_pairs('concise', 2))
    v = d.show(tok, rows=1, max_length=40)
    h = v._repr_html_()
    assert 'row 0 chosen' in h and 'row 0 rejected' in h and 'background:#b7ebb7' in h and 'line-through' in h
    assert '\x1b[1;32m' in repr(v) and '\x1b[2m' in repr(v)

def test_stats_lengths_truncation_roles_duplicates(tok):
    rows = persona_data(n=20) + persona_data(n=5)
    st = load_data(rows).stats(tok, max_length=40)
    assert len(st.lengths) == 25 and st.duplicates == 5 and st.roles['assistant'] == 25
    assert st.truncated == sum(l > 40 for l in st.lengths) > 0
    assert 'truncates' in repr(st) and '<img' in st._repr_html_()
    fig = st.plot(); assert fig.axes[0].get_legend() is not None

def test_split_is_deterministic_and_disjoint():
    d = load_data(arithmetic_data(100))
    a, b = d.split(0.2, seed=1); c, e = d.split(0.2, seed=1)
    assert (len(a), len(b)) == (80, 20) and a.rows == c.rows and b.rows == e.rows
    assert not {json.dumps(r) for r in a} & {json.dumps(r) for r in b}
    with pytest.raises(FtnbError, match='at least one row'): d.split(0.0)

def test_conversions_between_kinds():
    p = load_data(preference_pairs(n=3))
    u = p.to_unpaired()
    assert (len(u), u.kind) == (6, 'unpaired_preference') and [r['label'] for r in u][:2] == [True, False]
    assert p.to_prompts()[0] == dict(prompt=p[0]['prompt'])
    c = load_data(persona_data(n=2)).to_prompts()
    assert c.kind == 'prompt_only'

def test_samples_load_as_their_formats():
    a = load_data(arithmetic_data(50))
    assert a.detected == 'qa' and all(r['answer'].lstrip('-').isdigit() for r in a)
    for kind in ('correct', 'concise'): assert load_data(preference_pairs(kind, 20)).kind == 'preference'
