"""Every peer's layout, read as its project documents it (rows written here, in the shapes LLaMA-Factory, axolotl, TRL and OpenAI
document), checked field by field; and a property: no column and no message key disappears without an error."""
import json, pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from ftnb.core import FtnbError
from ftnb.data import load_data
from ftnb.layouts import LAYOUTS, FORMATS, detect_format

U = lambda c: dict(role='user', content=c)
A = lambda c, **kw: dict(role='assistant', content=c, **kw)
S = lambda c: dict(role='system', content=c)
H = lambda c: {'from': 'human', 'value': c}
G = lambda c: {'from': 'gpt', 'value': c}
WEATHER = dict(type='function', function=dict(name='get_weather', description='The weather now in a city',
                                              parameters=dict(type='object', properties=dict(city=dict(type='string')), required=['city'])))
CALL = dict(type='function', function=dict(name='get_weather', arguments=dict(city='Oslo')))

def one(rows, **kw):
    d = load_data(rows, quiet=True, **kw)
    return d, d.rows[0]

# ---- LLaMA-Factory (data/README.md): alpaca and sharegpt, SFT, preference, KTO, tools ----

def test_llamafactory_alpaca_with_system_and_history():
    d, r = one([dict(instruction='And times 4?', input='', output='20', system='You do sums.', history=[['2 plus 3?', '5'], ['Minus 1?', '4']])])
    assert (d.detected, d.kind) == ('alpaca', 'conversation')
    assert r['messages'] == [S('You do sums.'), U('2 plus 3?'), A('5'), U('Minus 1?'), A('4'), U('And times 4?'), A('20')]

def test_llamafactory_alpaca_input_joins_the_instruction():
    _, r = one([dict(instruction='Translate to French.', input='Good morning', output='Bonjour')])
    assert r['messages'] == [U('Translate to French.\n\nGood morning'), A('Bonjour')]

def test_llamafactory_alpaca_preference_pairs():
    d, r = one([dict(instruction='Capital of Peru?', input='', chosen='Lima.', rejected='Cusco.', system='Be terse.')])
    assert (d.detected, d.kind) == ('alpaca_preference', 'preference')
    assert r == dict(prompt=[S('Be terse.'), U('Capital of Peru?')], chosen=[A('Lima.')], rejected=[A('Cusco.')])

def test_llamafactory_alpaca_kto():
    d, r = one([dict(instruction='Capital of Peru?', output='Cusco.', kto_tag=False), dict(instruction='Capital of Chile?', output='Santiago.', kto_tag=True)])
    assert (d.detected, d.kind) == ('alpaca_kto', 'unpaired_preference')
    assert r == dict(prompt=[U('Capital of Peru?')], completion=[A('Cusco.')], label=False) and d.rows[1]['label'] is True

def test_llamafactory_sharegpt_preference_chosen_and_rejected_are_single_messages():
    rows = [dict(conversations=[H('Name a fruit.'), G('Apple.'), H('Another?')], chosen=G('Pear.'), rejected=G('Carrot.'), system='Answer with one word.')]
    d, r = one(rows)
    assert (d.detected, d.kind) == ('sharegpt_preference', 'preference')
    assert r == dict(prompt=[S('Answer with one word.'), U('Name a fruit.'), A('Apple.'), U('Another?')], chosen=[A('Pear.')], rejected=[A('Carrot.')])

def test_llamafactory_sharegpt_kto_tag_false_is_a_bad_example_not_sft():
    rows = [dict(conversations=[H('2+2?'), G('5')], kto_tag=False), dict(conversations=[H('3+3?'), G('6')], kto_tag=True)]
    d, r = one(rows)
    assert (d.detected, d.kind) == ('sharegpt_kto', 'unpaired_preference')
    assert r == dict(prompt=[U('2+2?')], completion=[A('5')], label=False)
    from ftnb.sft import sft
    from ftnb.models import tiny_model
    with pytest.raises(FtnbError, match='sft trains on conversation, prompt_completion, text data; this data is unpaired_preference'):
        sft(tiny_model(seed=0), d)

def test_llamafactory_sharegpt_tools_function_call_and_observation():
    tools = json.dumps([dict(name='get_weather', description='The weather now in a city', parameters=WEATHER['function']['parameters'])])
    conv = [H('Weather in Oslo?'), {'from': 'function_call', 'value': json.dumps(dict(name='get_weather', arguments=dict(city='Oslo')))},
            {'from': 'observation', 'value': '{"temp_c": 3}'}, G('3 °C.')]
    d, r = one([dict(conversations=conv, tools=tools, system='You check the weather.')])
    assert d.detected == 'sharegpt'
    assert r['tools'] == [WEATHER]
    assert r['messages'] == [S('You check the weather.'), U('Weather in Oslo?'), A('', tool_calls=[CALL]), dict(role='tool', content='{"temp_c": 3}'), A('3 °C.')]

def test_llamafactory_openai_layout_with_kto_tag():
    d, r = one([dict(messages=[S('Be kind.'), U('Hi'), A('Go away.')], kto_tag=False)])
    assert (d.detected, r) == ('messages_kto', dict(prompt=[S('Be kind.'), U('Hi')], completion=[A('Go away.')], label=False))

# ---- axolotl (docs/dataset-formats, docs/rlhf.qmd) ----

def test_axolotl_instruction_variants():
    _, r = one([dict(instruction='Name a prime.', input='below 10', response='7')])  # gpteacher
    assert r['messages'] == [U('Name a prime.\n\nbelow 10'), A('7')]
    d, r = one([dict(system_prompt='Be brief.', question='Sky colour?', response='Blue.')])  # open_orca
    assert (d.detected, r['messages']) == ('open_orca', [S('Be brief.'), U('Sky colour?'), A('Blue.')])
    d, r = one([dict(context='A spider has eight legs.', question='How many legs?', answer='8')])  # context_qa
    assert (d.detected, d.kind, r['prompt'], r['answer']) == ('qa', 'prompt_only', [U('A spider has eight legs.\n\nHow many legs?')], '8')

def test_axolotl_chat_template_with_from_value_and_system():
    d, r = one([dict(messages=[{'from': 'system', 'value': 'Be brief.'}, H('Hi'), G('Hello.')])])
    assert (d.detected, r['messages']) == ('messages', [S('Be brief.'), U('Hi'), A('Hello.')])

def test_axolotl_dpo_types():
    d, r = one([dict(system='Be brief.', question='Sky colour?', chosen='Blue.', rejected='Green.')])  # chatml.intel
    assert (d.detected, r) == ('question_preference', dict(prompt=[S('Be brief.'), U('Sky colour?')], chosen=[A('Blue.')], rejected=[A('Green.')]))
    d, r = one([dict(instruction='Sky colour?', chosen_response='Blue.', rejected_response='Green.')])  # chatml.argilla
    assert (d.detected, r) == ('argilla_preference', dict(prompt=[U('Sky colour?')], chosen=[A('Blue.')], rejected=[A('Green.')]))
    d, r = one([dict(instruction='Sky colour?', chosen='Blue.', rejected='Green.')])  # chatml.icr
    assert (d.detected, r['prompt'], r['chosen']) == ('alpaca_preference', [U('Sky colour?')], [A('Blue.')])
    d, r = one([dict(messages=[U('Sky colour?')], chosen=A('Blue.'), rejected=A('Green.'))])  # chat_template.default
    assert (d.detected, r) == ('messages_preference', dict(prompt=[U('Sky colour?')], chosen=[A('Blue.')], rejected=[A('Green.')]))
    d, r = one([dict(system='Be brief.', prompt='Sky colour?', chosen='Blue.', rejected='Green.')])  # chatml.prompt_pairs
    assert (d.detected, r['prompt']) == ('preference', [S('Be brief.'), U('Sky colour?')])

def test_axolotl_kto_types():
    d, r = one([dict(instruction='Sky colour?', completion='Green.', label=False)])  # chatml.argilla
    assert (d.detected, r) == ('instruction_kto', dict(prompt=[U('Sky colour?')], completion=[A('Green.')], label=False))
    d, r = one([dict(system='Be brief.', question='Sky colour?', completion='Blue.', label=True)])  # chatml.intel
    assert (d.detected, r) == ('question_kto', dict(prompt=[S('Be brief.'), U('Sky colour?')], completion=[A('Blue.')], label=True))

# ---- TRL (docs/source/dataset_formats.md) ----

def test_trl_standard_types():
    assert one([dict(text='The sky is blue.')])[1] == dict(text='The sky is blue.')
    assert one([dict(prompt='The sky is')])[1] == dict(prompt='The sky is')
    assert one([dict(prompt='The sky is', completion=' blue.')])[1] == dict(prompt='The sky is', completion=' blue.')
    assert one([dict(prompt='The sky is', chosen=' blue.', rejected=' green.')])[1] == dict(prompt='The sky is', chosen=' blue.', rejected=' green.')
    assert one([dict(prompt='The sky is', completion=' blue.', label=True)])[1] == dict(prompt='The sky is', completion=' blue.', label=True)

def test_trl_implicit_prompt_text_pairs_split_where_they_part():
    d, r = one([dict(chosen='The sky is blue.', rejected='The sky is green.')])
    assert (d.detected, r) == ('implicit_preference', dict(prompt='The sky is', chosen=' blue.', rejected=' green.'))
    with pytest.raises(FtnbError, match="shares no beginning with rejected"): load_data([dict(chosen='Blue.', rejected='Green.')])

def test_trl_conversational_types_and_implicit_prompt_messages():
    d, r = one([dict(chosen=[U('Sky colour?'), A('Blue.')], rejected=[U('Sky colour?'), A('Green.')])])
    assert r == dict(prompt=[U('Sky colour?')], chosen=[A('Blue.')], rejected=[A('Green.')])
    d, r = one([dict(prompt=[U('Sky colour?')], completion=[A('Blue.')], label=True)])
    assert (d.kind, r['completion']) == ('unpaired_preference', [A('Blue.')])

def test_trl_tool_calling_rows_keep_tools_calls_and_results():
    rows = [dict(messages=[U('Weather in Oslo?'), A('', tool_calls=[CALL]), dict(role='tool', name='get_weather', content='{"temp_c": 3}'), A('3 °C.')],
                 tools=[WEATHER])]
    d, r = one(rows)
    assert r['tools'] == [WEATHER] and r['messages'][1] == A('', tool_calls=[CALL]) and r['messages'][2] == dict(role='tool', name='get_weather', content='{"temp_c": 3}')

def test_harmony_developer_role_and_thinking():
    d, r = one([dict(messages=[dict(role='developer', content='Answer in French.'), U('Hello?'), A('Bonjour !', thinking='The user wants French.')])])
    assert r['messages'] == [S('Answer in French.'), U('Hello?'), A('Bonjour !', thinking='The user wants French.')]
    _, r = one([dict(messages=[U('2+2?'), dict(role='assistant', content='4', reasoning_content='Two and two make four.')])])  # Qwen 3, DeepSeek
    assert r['messages'][1] == A('4', thinking='Two and two make four.')

def test_content_as_a_list_of_text_parts_is_joined():
    _, r = one([dict(messages=[dict(role='user', content=[dict(type='text', text='Sky colour?')]), dict(role='assistant', content=[dict(type='text', text='Blue.')])])])
    assert r['messages'] == [U('Sky colour?'), A('Blue.')]

@pytest.mark.parametrize('part,what', [(dict(type='image_url', image_url=dict(url='cat.png')), 'an image'), (dict(type='input_audio', input_audio={}), 'audio'),
                                       (dict(type='video'), 'a video'), (dict(type='image'), 'an image')])
def test_media_parts_are_refused_by_name(part, what):
    with pytest.raises(FtnbError, match=rf"Row 0 of a list: field 'messages\[0\].content\[1\]' holds {what}; ftnb trains language models on text only"):
        load_data([dict(messages=[dict(role='user', content=[dict(type='text', text='What is this?'), part]), A('A cat.')])])

def test_media_columns_are_refused_and_ignore_keeps_the_text():
    rows = [dict(messages=[U('<image>What is this?'), A('A cat.')], images=['cat.png'])]
    with pytest.raises(FtnbError, match=r"column 'images' holds images.*ignore=\['images'\]"): load_data(rows)
    assert load_data(rows, ignore=['images']).ignored == ['images']

def test_stepwise_supervision_is_refused_by_name():
    with pytest.raises(FtnbError, match="stepwise supervision.*which no ftnb method trains"):
        load_data([dict(prompt='2+2*3?', completions=['2*3=6', '2+6=8'], labels=[True, True])])

# ---- OpenAI chat JSONL ----

def test_openai_chat_jsonl_with_tool_calls_as_json_text(tmp_path):
    row = dict(messages=[S('You check the weather.'), U('Weather in Oslo?'),
                         dict(role='assistant', content=None, tool_calls=[dict(id='call_1', type='function', function=dict(name='get_weather', arguments='{"city": "Oslo"}'))]),
                         dict(role='tool', tool_call_id='call_1', content='{"temp_c": 3}'), A('3 °C.')],
               tools=[WEATHER], parallel_tool_calls=False)
    (tmp_path/'chat.jsonl').write_text(json.dumps(row) + '\n')
    with pytest.raises(FtnbError, match=r"'parallel_tool_calls'.*ignore=\['parallel_tool_calls'\]"): load_data(tmp_path/'chat.jsonl')
    d = load_data(tmp_path/'chat.jsonl', ignore=['parallel_tool_calls'])
    m = d[0]['messages']
    assert m[2] == A('', tool_calls=[dict(CALL, id='call_1')]) and m[3] == dict(role='tool', tool_call_id='call_1', content='{"temp_c": 3}')

def test_an_unknown_message_key_is_named_and_can_be_ignored():
    rows = [dict(messages=[U('Hi'), dict(role='assistant', content='Hello', rating=5), U('Bye'), A('Bye!')])]
    with pytest.raises(FtnbError, match=r"field 'messages\[1\]' has the key 'rating'.*ignore=\['rating'\]"): load_data(rows)
    d = load_data(rows, ignore=['rating'])
    assert d.ignored == ['rating'] and d[0]['messages'][1] == A('Hello')

def test_bad_tool_calls_name_their_place():
    bad = dict(role='assistant', content='', tool_calls=[dict(type='function', function=dict(name='get_weather', arguments='{city: Oslo'))])
    with pytest.raises(FtnbError, match=r"field 'messages\[1\].tool_calls\[0\].function.arguments' is not valid JSON"):
        load_data([dict(messages=[U('Weather?'), bad])])
    with pytest.raises(FtnbError, match=r"field 'tools' is text that is not a JSON list of tools"):
        load_data([dict(messages=[U('Hi'), A('Hello')], tools='[{oops')])

# ---- plain text ----

@pytest.mark.parametrize('documents,texts', [('line', ['First.', 'Second,', 'still second.']), ('paragraph', ['First.', 'Second,\nstill second.']),
                                             ('file', ['First.\n\nSecond,\nstill second.'])])
def test_txt_files(tmp_path, documents, texts):
    (tmp_path/'notes.txt').write_text('First.\n\nSecond,\nstill second.\n')
    d = load_data(tmp_path/'notes.txt', documents=documents)
    assert (d.detected, [r['text'] for r in d]) == ('text', texts)

# ---- system prompts with pairs and KTO rows ----

def test_a_system_column_beside_pairs_and_kto_rows_becomes_the_prompts_system_turn():
    _, r = one([dict(prompt='Sky colour?', chosen='Blue.', rejected='Green.', system='Be brief.')])
    assert r == dict(prompt=[S('Be brief.'), U('Sky colour?')], chosen=[A('Blue.')], rejected=[A('Green.')])
    _, r = one([dict(prompt='Sky colour?', completion='Blue.', label=True, system_prompt='Be brief.')])
    assert r['prompt'] == [S('Be brief.'), U('Sky colour?')]
    _, r = one([dict(chosen='\n\nHuman: Hi\n\nAssistant: Hello', rejected='\n\nHuman: Hi\n\nAssistant: Go', system='Be kind.')])
    assert r['prompt'] == [S('Be kind.'), U('Hi')]

def test_every_layout_example_loads_as_documented():
    for l in LAYOUTS:
        if l.refused: continue
        d = load_data([l.example])
        assert (d.detected, d.kind) == (l.name, l.kind), l.name

# ---- the property: no column and no message key disappears without an error ----

NAMES = st.text('abcdefghijklmnopqrstuvwxyz_', min_size=3, max_size=12)
VALUES = st.text(st.characters(codec='utf-8', exclude_categories=('Cs', 'Cc')), min_size=1, max_size=20).filter(lambda s: s.strip())

def _messages_in(row):
    for v in row.values():
        if isinstance(v, dict) and ('role' in v or 'from' in v): yield v
        if isinstance(v, list): yield from (m for m in v if isinstance(m, dict) and ('role' in m or 'from' in m))

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([l for l in LAYOUTS if not l.refused]), NAMES, VALUES, st.booleans())
def test_no_column_or_message_key_disappears_without_an_error(l, key, value, in_message):
    row = json.loads(json.dumps(l.example))
    msgs = list(_messages_in(row))
    target = msgs[0] if in_message and msgs else row
    if key in target: return
    target[key] = value
    try: d = load_data([row], quiet=True)
    except FtnbError as e:
        assert repr(key) in str(e), str(e)
        d = load_data([row], quiet=True, ignore=[key])  # the way out the message gives works
        assert d.ignored == [key]
        return
    def texts(x):  # every string in the converted rows, unescaped
        if isinstance(x, str): yield x
        elif isinstance(x, dict): yield from (t for v in x.values() for t in texts(v))
        elif isinstance(x, list): yield from (t for v in x for t in texts(v))
    assert any(value in t for t in texts(d.rows)), (l.name, key, value, d.rows)

# ---- more of axolotl's and LLaMA-Factory's shapes; OpenAI's weight ----

def test_axolotl_oasst_icr_and_argilla_chat_kto():
    d, r = one([dict(INSTRUCTION='Name a colour.', RESPONSE='Teal.')])
    assert (d.detected, r['messages']) == ('oasst', [U('Name a colour.'), A('Teal.')])
    d, r = one([dict(system='Be brief.', input='Sky colour?', chosen='Blue.', rejected='Green.')])  # chatml.icr, bradley_terry
    assert (d.detected, r) == ('input_preference', dict(prompt=[S('Be brief.'), U('Sky colour?')], chosen=[A('Blue.')], rejected=[A('Green.')]))
    d, r = one([dict(completion=[U('Sky colour?'), A('Green.')], label=False)])  # chatml.argilla_chat KTO
    assert (d.detected, r) == ('conversation_kto', dict(prompt=[U('Sky colour?')], completion=[A('Green.')], label=False))
    d, r = one([dict(article='A spider has eight legs.', question='How many legs?', answer='8')])  # context_qa
    assert r['prompt'] == [U('A spider has eight legs.\n\nHow many legs?')]

def test_ranked_answers_become_best_against_worst():
    d, r = one([dict(prompt='Sky colour?', answers=[dict(answer='Sky blue.', rank=2), dict(answer='Green.', rank=3), dict(answer='Blue.', rank=1)])])
    assert (d.detected, r) == ('ranked', dict(prompt='Sky colour?', chosen='Blue.', rejected='Green.'))
    _, r = one([dict(prompt='Sky colour?', answers=[dict(answer='Green.', score=0.1), dict(answer='Blue.', score=0.9)])])
    assert (r['chosen'], r['rejected']) == ('Blue.', 'Green.')
    _, r = one([dict(prompt='Sky colour?', answers=['Blue.', 'Sky blue.', 'Green.'])])  # listed best first
    assert (r['chosen'], r['rejected']) == ('Blue.', 'Green.')
    rows = [dict(prompt='Sky colour?', answers=[dict(answer='Blue.', rank=1, model='m1'), dict(answer='Green.', rank=2, model='m2')])]
    with pytest.raises(FtnbError, match=r"field 'answers\[0\]' has the key 'model'.*ignore=\['model'\]"): load_data(rows)
    assert load_data(rows, ignore=['model']).ignored == ['model']
    with pytest.raises(FtnbError, match="ranks every answer the same"): load_data([dict(prompt='Q?', answers=[dict(answer='a', rank=1), dict(answer='b', rank=1)])])

def test_llamafactory_v1_content_parts_with_value():
    _, r = one([dict(messages=[dict(role='user', content=[dict(type='text', value='Hi')]), dict(role='assistant', content=[dict(type='text', value='Hello')])])])
    assert r['messages'] == [U('Hi'), A('Hello')]

def test_openai_weight_zero_is_kept_and_masks_that_turn():
    from ftnb.tokens import encode
    from ftnb.models import tiny_model
    tok = tiny_model().tokenizer
    d = load_data([dict(messages=[U('Hi'), dict(role='assistant', content='Hello there', weight=0), U('Bye'), dict(role='assistant', content='Goodbye friend', weight=1)])])
    assert d[0]['messages'][1] == A('Hello there', weight=0) and d[0]['messages'][3] == A('Goodbye friend')
    e = encode(tok, d.kind, d[0])[0]
    trained = ''.join(e['text'][a:b] for (a, b), m in zip(e['offsets'], e['mask']) if m)
    assert 'Goodbye friend' in trained and 'Hello there' not in trained and 'Hello there' in e['text']
    with pytest.raises(FtnbError, match=r"'messages\[0\].weight' belongs to a user turn"): load_data([dict(messages=[dict(U('Hi'), weight=1), A('Yo')])])
    with pytest.raises(FtnbError, match=r"is not 0 or 1"): load_data([dict(messages=[U('Hi'), dict(role='assistant', content='Yo', weight=0.5)])])
