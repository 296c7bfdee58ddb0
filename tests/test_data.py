"""The data layer: real files, every source and format, validation errors that name row and field, masks, stats."""
import json, gzip, re
from pathlib import Path
import pytest
from ftnb.core import FtnbError
from ftnb.data import load_data, Data
from ftnb.layouts import detect_format, final_answer, FORMATS
from ftnb.sources import read_records
from ftnb.chat import check_chat_template
from ftnb.tokens import encode
from ftnb.example_data import arithmetic_data, preference_pairs, persona_data

@pytest.fixture(scope='module')
def tok():
    from transformers import AutoTokenizer
    from ftnb.models import convert_gguf, embedded_gguf
    return AutoTokenizer.from_pretrained(convert_gguf(embedded_gguf(), quiet=True))

# ---- the real files in ../shared/data ----

def test_sharegpt_file_becomes_messages(data_dir):
    d = load_data(data_dir/'fastchat_identity.json', ignore=['id'])
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
    assert set(cases) <= set(FORMATS)  # every other layout: tests/test_layouts.py
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
    ([dict(conversations=[{'from': 'human', 'value': 'Hi'}, {'from': 'gpt', 'value': 'Yo'}]), dict(conversations=None)], None, 1, 'conversations', 'is missing'),
    ([ROWS[0], dict(instruction='Add', output=None)], None, 1, 'output', 'is missing'),
    ([ROWS[0], dict(instruction='', input='', output='5')], None, 1, 'instruction', 'is empty'),
    ([ROWS[0], dict(instruction='Add', input=['x'], output='5')], None, 1, 'input', 'is list, expected text'),
    ([dict(prompt='a', completion='b'), dict(prompt='a', completion='')], None, 1, 'completion', 'is empty'),
    ([dict(prompt='a', completion='b'), dict(prompt=None, completion='b')], None, 1, 'prompt', 'is missing'),
    ([dict(prompt='a', completion='b'), dict(prompt=[dict(role='user', content='a')], completion=[dict(role='user', content='b')])], None, 1, 'completion', 'starts with a user turn that is not the prompt'),
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

def test_a_bad_row_in_a_folder_names_its_file_and_row_there(tmp_path):
    d = tmp_path/'mydata'; (d/'more').mkdir(parents=True)
    (d/'a.jsonl').write_text(''.join(json.dumps(dict(prompt=f"q{i}", completion='fine')) + '\n' for i in range(5)))
    (d/'more'/'b.jsonl').write_text(''.join(json.dumps(dict(prompt=f"q{i}", completion='  ' if i == 2 else 'fine')) + '\n' for i in range(4)))
    with pytest.raises(FtnbError, match=r"Row 7 of folder mydata \(more/b.jsonl, its row 2\): field 'completion' is empty"): load_data(d)
    with pytest.raises(FtnbError, match=r"\(Format, as given: prompt_completion\.\)"): load_data(d, format='prompt_completion')
    with pytest.raises(FtnbError, match=r"format='prompt-completion' is not a format ftnb knows \(did you mean 'prompt_completion'\?\)"):
        load_data(d, format='prompt-completion')

def test_malformed_files_name_the_line(tmp_path):
    f = tmp_path/'x.jsonl'; f.write_text('{"text": "a"}\n{"text": "b"\n')
    with pytest.raises(FtnbError, match=r'x.jsonl, line 2: not valid JSON'): load_data(f)
    g = tmp_path/'y.json'; g.write_text('[{"text": "a"},')
    with pytest.raises(FtnbError, match=r'y.json: not valid JSON .* line 1'): load_data(g)
    h = tmp_path/'z.xml'; h.write_text('<a/>')
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

# ---- issue 18: every input validated once, at the door ----

def test_undecodable_files_name_the_file_line_and_offset(tmp_path):
    (tmp_path/'a.json').write_bytes(b'[{"text": "ok"},\n {"text": "caf\xe9"}]')
    (tmp_path/'b.jsonl').write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    (tmp_path/'c.csv').write_bytes(b'text\nok\ncaf\xe9\n')
    for f, line, off in (('a.json', 2, 31), ('b.jsonl', 2, 28), ('c.csv', 3, 11)):
        with pytest.raises(FtnbError, match=rf"{f} is not UTF-8 text: byte 0xe9 at byte offset {off} \(line {line}\)"): load_data(tmp_path/f)
    (tmp_path/'d.json').write_bytes('[{"text": "hi"}]'.encode('utf-16'))
    with pytest.raises(FtnbError, match=r"d.json is not UTF-8 text.*UTF-16"): load_data(tmp_path/'d.json')
    with gzip.open(tmp_path/'e.jsonl.gz', 'wb') as f: f.write(b'{"text": "\xff"}\n')
    with pytest.raises(FtnbError, match=r"e.jsonl.gz is not UTF-8 text: byte 0xff at byte offset 10 \(line 1\)"): load_data(tmp_path/'e.jsonl.gz')

def test_a_byte_order_mark_is_not_an_error(tmp_path):
    (tmp_path/'a.json').write_bytes('[{"text": "hi"}]'.encode('utf-8-sig'))
    (tmp_path/'b.csv').write_bytes('prompt,completion\n2+2=,4\n'.encode('utf-8-sig'))  # what Excel saves
    assert load_data(tmp_path/'a.json')[0] == dict(text='hi')
    assert load_data(tmp_path/'b.csv')[0] == dict(prompt='2+2=', completion='4')

def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path/'a.jsonl.gz').write_text('{"text": "not compressed"}')
    with pytest.raises(FtnbError, match=r"a.jsonl.gz: cannot read it.*gzip"): load_data(tmp_path/'a.jsonl.gz')
    (tmp_path/'b.parquet').write_text('not parquet')
    with pytest.raises(FtnbError, match=r"b.parquet: cannot read it"): load_data(tmp_path/'b.parquet')
    (tmp_path/'c.csv').write_text('prompt,completion\nhi,there,extra\n')
    with pytest.raises(FtnbError, match=r"c.csv, line 2: 3 cells, but the header names 2 columns"): load_data(tmp_path/'c.csv')
    (tmp_path/'d.csv').write_text('prompt,prompt,completion\na,b,c\n')
    with pytest.raises(FtnbError, match=r"d.csv: the header repeats the column 'prompt'"): load_data(tmp_path/'d.csv')

@pytest.mark.parametrize('name,content,words', [
    ('a.json', '', 'a.json is empty'), ('b.jsonl', '', 'b.jsonl is empty'), ('c.jsonl', '\n  \n\n', 'c.jsonl is empty'),
    ('d.csv', '', 'd.csv is empty'), ('e.csv', 'prompt,completion\n', 'e.csv has a header (prompt, completion) but no rows'),
    ('f.json', '[]', 'f.json holds an empty list'), ('g.json', '{"data": []}', "g.json holds an empty list"),
    ('h.json', '  \n', 'h.json is empty')])
def test_empty_files_say_so(tmp_path, name, content, words):
    (tmp_path/name).write_text(content)
    with pytest.raises(FtnbError, match=re.escape(words)): load_data(tmp_path/name)

def test_empty_sources_say_so():
    from datasets import Dataset
    with pytest.raises(FtnbError, match='the list is empty: no rows to load'): load_data([])
    with pytest.raises(FtnbError, match='the Dataset is empty: no rows to load'): load_data(Dataset.from_list([]))

def test_a_column_the_layout_does_not_read_is_an_error_naming_the_way_to_keep_or_drop_it(tmp_path):
    (tmp_path/'pairs.csv').write_text('prompt,chosen\nHi,Hello!\n')
    with pytest.raises(FtnbError, match=r"pairs.csv: the prompt_only layout reads .*the column 'chosen' \(the preference layout reads it, "
                                        r"and lacks 'rejected' here\) would be lost.*ignore=\['chosen'\]"):
        load_data(tmp_path/'pairs.csv')
    with pytest.raises(FtnbError, match=r"the prompt_completion layout reads .*'chosen'"):
        load_data([dict(prompt='a', completion='b'), dict(prompt='c', completion='d', chosen='e')])
    with pytest.raises(FtnbError, match=r"the prompt_only layout reads .*'label' \(the kto layout reads it, and lacks 'completion' here\)"):
        load_data([dict(prompt='a', label=True)])
    d = load_data(tmp_path/'pairs.csv', ignore=['chosen'])  # dropped knowingly: the fix the message gives works
    assert (d.detected, d.rows, d.ignored) == ('prompt_only', [dict(prompt='Hi')], ['chosen'])
    with pytest.raises(FtnbError, match=r"to leave a column out, pass ignore=\['chosen'\]"): load_data(tmp_path/'pairs.csv', columns={'chosen': None})

def test_every_extra_column_is_named_at_once_and_ignore_lists_only_what_the_user_dropped():
    alpaca = [dict(instruction='Add 2 and 3', input='', output='5', text='### Instruction: Add 2 and 3 ### Response: 5', id=1)]
    with pytest.raises(FtnbError) as e: load_data(alpaca)
    assert "ignore=['text', 'id']" in str(e.value) and "to read the rows that way instead, pass format='text', ignore=['instruction', 'input', 'output', 'id']" in str(e.value)
    assert load_data(alpaca, format='text', ignore=['instruction', 'input', 'output', 'id'])[0] == dict(text=alpaca[0]['text'])  # that way works too
    d = load_data(alpaca, ignore=['text', 'id'])
    assert d.ignored == ['id', 'text'] and 'left out: id, text' in repr(d)
    d = load_data([dict(id=3, source='web', prompt='Hi', completion='Hello')], ignore=['id', 'source', 'not_there'])
    assert d.ignored == ['id', 'source'] and d[0] == dict(prompt='Hi', completion='Hello')

BLANK = [  # (rows, row index, field): whitespace that would be trained as an answer or read as a prompt
    ([dict(prompt='p', chosen='a', rejected='b'), dict(prompt='p', chosen='  ', rejected='b')], 1, 'chosen'),
    ([dict(prompt='p', chosen='a', rejected='b'), dict(prompt='p', chosen='a', rejected='\n\t')], 1, 'rejected'),
    ([dict(prompt=[dict(role='user', content='p')], chosen=[dict(role='assistant', content='a')], rejected=[dict(role='assistant', content='b')]),
      dict(prompt=[dict(role='user', content='p')], chosen=[dict(role='assistant', content=' ')], rejected=[dict(role='assistant', content='b')])], 1, 'chosen[0].content'),
    ([dict(chosen='\n\nHuman: Hi\n\nAssistant: A', rejected='\n\nHuman: Hi\n\nAssistant: B'),
      dict(chosen='\n\nHuman:  \n\nAssistant: A', rejected='\n\nHuman:  \n\nAssistant: B')], 1, 'chosen[0]'),
    ([dict(prompt='p', answer='1'), dict(prompt='q', answer='  ')], 1, 'answer'),
    ([dict(question='q', answer='#### 1'), dict(question='q', answer='so it is 2 ####  ')], 1, 'answer'),
    ([dict(prompt='p', chosen=[dict(role='assistant', content='a')], rejected=[dict(role='robot', content='')])], 0, 'rejected[0].role'),
]

@pytest.mark.parametrize('rows,row,field', BLANK, ids=[f"{i}-{b[2]}" for i, b in enumerate(BLANK)])
def test_blank_answers_and_prompts_are_errors(rows, row, field):
    with pytest.raises(FtnbError) as e: load_data(rows)
    assert f"Row {row} of" in str(e.value) and f"field {field!r}" in str(e.value), str(e.value)

def test_an_empty_answer_on_one_side_of_a_pair_is_still_allowed():
    "hh-rlhf prefers saying nothing to some harmful requests: 4 rows of the test split."
    d = load_data([dict(prompt='p', chosen='', rejected='Here is how')])
    assert d[0]['chosen'] == ''
    d = load_data([dict(chosen='\n\nHuman: How do I hurt someone?\n\nAssistant:', rejected='\n\nHuman: How do I hurt someone?\n\nAssistant: Like this')])
    assert d[0]['chosen'] == [dict(role='assistant', content='')]

MSG = [dict(role='user', content='Hi'), dict(role='assistant', content='Hello')]
MIXED = [  # (rows, odd row, field, its type, the others' type)
    ([dict(prompt='a', completion='b'), dict(prompt='c', completion='d'), dict(prompt=MSG[:1], completion=MSG[1:])], 2, 'prompt', 'a list', 'text'),
    ([dict(prompt='a', completion='b'), dict(prompt='c', completion=MSG[1:])], 1, 'completion', 'a list', 'text'),
    ([dict(prompt=MSG[:1], completion='x'), dict(prompt='c', completion='d'), dict(prompt='e', completion='f')], 0, 'prompt', 'a list', 'text'),
    ([dict(prompt='p', answer='1'), dict(prompt='q', answer='2'), dict(prompt='r', answer=3)], 2, 'answer', 'a number', 'text'),
    ([dict(prompt='p', chosen='a', rejected='b'), dict(prompt='p', chosen=MSG[1:], rejected=[dict(role='assistant', content='c')])], 1, 'chosen', 'a list', 'text'),
    ([dict(prompt='p', completion='c', label=True), dict(prompt=MSG[:1], completion=MSG[1:], label=False), dict(prompt='q', completion='d', label=True)], 1, 'prompt', 'a list', 'text'),
]

@pytest.mark.parametrize('rows,row,field,odd,usual', MIXED, ids=[f"{i}-{m[2]}" for i, m in enumerate(MIXED)])
def test_a_field_whose_type_differs_across_rows_is_an_error(rows, row, field, odd, usual):
    with pytest.raises(FtnbError) as e: load_data(rows)
    msg = str(e.value)
    assert f"Row {row} of" in msg and f"field {field!r} is {odd}" in msg and f"hold {usual}" in msg, msg
    d = load_data(rows, on_error='drop', quiet=True)
    assert [i for i, _ in d.dropped] == [row]

# ---- property: whatever rows or bytes come in, only an FtnbError that says where ----

from hypothesis import given, settings, strategies as st, HealthCheck

FIELDS = ['prompt', 'completion', 'chosen', 'rejected', 'messages', 'conversations', 'question', 'answer', 'text', 'label',
          'instruction', 'input', 'output', 'system', 'role', 'content', 'from', 'value', 'id']
ROLE_NAMES = ['user', 'assistant', 'system', 'tool', 'human', 'gpt', 'robot', '', 'USER']
texts = st.one_of(st.sampled_from(['', ' ', '\n\t', 'Hi', 'Hello!', '#### 42', '\n\nHuman: Hi\n\nAssistant: Yo', '\n\nHuman: Hi\n\nAssistant:']), st.text(max_size=12))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True), texts)
message = st.dictionaries(st.sampled_from(['role', 'content', 'from', 'value']), st.one_of(st.sampled_from(ROLE_NAMES), scalars), max_size=4)
values = st.recursive(st.one_of(scalars, st.lists(message, max_size=4)),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), inner, max_size=3)),
                      max_leaves=8)
rows_st = st.lists(st.one_of(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), values, max_size=5), scalars), max_size=6)
GOOD = [dict(prompt='2+2=', completion='4'), dict(prompt='Hi', chosen='Hello!', rejected='Go away'), dict(messages=MSG),
        dict(conversations=[{'from': 'human', 'value': 'Hi'}, {'from': 'gpt', 'value': 'Yo'}]), dict(question='6*7?', answer='#### 42'),
        dict(text='Once upon a time'), dict(prompt='Hi', completion='Hello', label=True), dict(instruction='Add', input='', output='5'), dict(prompt='Tell me')]

@st.composite
def near_good(draw):
    "Rows of one good format, some with one field removed, replaced or added: the rows a user's script produces."
    base, rows = draw(st.sampled_from(GOOD)), []
    for _ in range(draw(st.integers(1, 5))):
        r = dict(base)
        if draw(st.booleans()):
            k = draw(st.sampled_from(FIELDS))
            if k in r and draw(st.booleans()): del r[k]
            else: r[k] = draw(values)
        rows.append(r)
    return rows

rows_st = st.one_of(rows_st, near_good())
WHERE = re.compile(r"\b[Rr]ows? \d|\bcolumns?\b|\bempty\b|format=|columns=|on_error=")

def _only_ftnb_errors(f, n:int):
    "`f()` gives a `Data` that accounts for all `n` rows (kept or dropped, none vanished), or an FtnbError that says where."
    try: d = f()
    except FtnbError as e:
        assert WHERE.search(str(e)), f"an error that does not say where: {e}"
        return None
    assert isinstance(d, Data) and len(d) > 0 and len(d) + len(d.dropped) == n
    return d

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_st, on_error=st.sampled_from(['raise', 'drop']), fmt=st.sampled_from([None, None, None] + list(FORMATS)))
def test_random_rows_give_data_or_an_ftnb_error_that_names_where(rows, on_error, fmt):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        _only_ftnb_errors(lambda: load_data(rows, format=fmt, on_error=on_error, quiet=True), len(rows))

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=60), rows_st.map(lambda r: json.dumps(r).encode()),
                      rows_st.map(lambda r: '\n'.join(json.dumps(x) for x in r).encode())),
       suffix=st.sampled_from(['.json', '.jsonl', '.csv', '.tsv', '.jsonl.gz', '.parquet']))
def test_random_files_give_data_or_an_ftnb_error_that_names_the_file(data, suffix):
    import tempfile, warnings
    with tempfile.TemporaryDirectory() as t:
        p = Path(t)/f"random{suffix}"
        p.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            try: load_data(p, quiet=True)
            except FtnbError as e: assert 'random' in str(e) or WHERE.search(str(e)), f"an error that names neither file nor row: {e}"

def test_answers_that_repeat_the_prompt_keep_only_what_follows_it():
    "UltraFeedback's shape: a text prompt, and chosen/rejected as whole conversations that start with it."
    conv = lambda *t: [dict(role=r, content=c) for r, c in zip(('user', 'assistant', 'user', 'assistant'), t)]
    uf = dict(prompt='Hi?', chosen=conv('Hi?', 'Hello!'), rejected=conv('Hi?', 'Go away.'), messages=conv('Hi?', 'Hello!'), score_chosen=9.)
    d = load_data([uf, dict(uf, prompt='Joke?', chosen=conv('Joke?', 'Knock knock'), rejected=conv('Joke?', 'No.'))], quiet=True, ignore=['messages', 'score_chosen'])
    assert d.kind == 'preference' and d[0] == dict(prompt=conv('Hi?'), chosen=[dict(role='assistant', content='Hello!')],
                                                 rejected=[dict(role='assistant', content='Go away.')])
    pc = load_data([dict(prompt=conv('Hi?'), completion=conv('Hi?', 'Hello!'))] * 2, quiet=True)
    assert pc[0]['completion'] == [dict(role='assistant', content='Hello!')]
    with pytest.raises(FtnbError, match=r"Row 1 of a list: field 'rejected' starts with a user turn that is not the prompt.*'Other\?'"):
        load_data([uf, dict(uf, rejected=conv('Other?', 'x'))], quiet=True, ignore=['messages', 'score_chosen'])
