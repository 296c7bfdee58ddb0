"""Tool calls and reasoning reach the text the model trains on, for a template that renders them and for one that does not (SmolLM2's)."""
import json, pytest
from ftnb.data import load_data
from ftnb.chat import chat_text, chat_messages, template_support
from ftnb.tokens import encode
from ftnb.example_data import tool_call_data, TOOLS
from ftnb.rewards import parse_tool_calls, tool_call

@pytest.fixture(scope='module')
def tok():
    from transformers import AutoTokenizer
    from ftnb.models import convert_gguf, embedded_gguf
    return AutoTokenizer.from_pretrained(convert_gguf(embedded_gguf(), quiet=True))

TOOL_TEMPLATE = ("{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n"
                 "{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}"
                 "{% for c in m.tool_calls or [] %}<call>{{ c.function.name }}</call>{% endfor %}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

def test_smollm2_template_gets_tools_calls_and_reasoning_as_text_and_the_calls_train(tok):
    assert template_support(tok) == dict(tools=False, calls=False, results=True, thinking=None)
    row = tool_call_data(1)[0]
    row['messages'][1]['thinking'] = 'A currency question: I call the converter.' if row['messages'][1]['tool_calls'][0]['function']['name'] == 'convert_currency' else 'I call the tool.'
    d = load_data([row])
    e = encode(tok, d.kind, d[0])[0]
    trained = ''.join(e['text'][a:b] for (a, b), m in zip(e['offsets'], e['mask']) if m)
    call = row['messages'][1]['tool_calls'][0]['function']
    assert '<tools>' in e['text'] and all(t['function']['name'] in e['text'].split('<|im_end|>')[0] for t in TOOLS)  # the tool list, in the system turn
    assert '<tool_call>' in trained and json.dumps(call['arguments']) in trained and '<think>' in trained  # the call and the reasoning train
    assert '<tools>' not in trained and row['messages'][2]['content'] not in trained  # the tool list and the tool's result do not
    assert row['messages'][3]['content'] in trained
    assert parse_tool_calls(trained.split('<|im_end|>')[0]) == [dict(name=call['name'], arguments=call['arguments'])]

def test_a_template_that_renders_tools_gets_them_natively(tok):
    import copy
    t = copy.deepcopy(tok); t.chat_template = TOOL_TEMPLATE
    s = template_support(t)
    assert s['tools'] and s['calls'] and s['thinking'] in ('thinking', 'reasoning_content')  # transformers 5.2x hands `thinking` on as reasoning_content itself
    msgs = [dict(role='user', content='Weather in Oslo?'), dict(role='assistant', content='', thinking='Call it.',
            tool_calls=[dict(type='function', function=dict(name='get_weather', arguments=dict(city='Oslo')))])]
    out, native = chat_messages(t, msgs, TOOLS)
    assert native == TOOLS and out[0]['role'] == 'user' and out[1][s['thinking']] == 'Call it.'
    text = chat_text(t, msgs, TOOLS)
    assert text.startswith('<tools>') and '<call>get_weather</call>' in text and '<think>Call it.</think>' in text and '<tool_call>' not in text

def test_generation_prompt_with_tools_matches_training(tok):
    p = tool_call_data(1, 'test', prompts=True)[0]
    text = chat_text(tok, p['prompt'], p['tools'], generation_prompt=True)
    assert text.endswith('<|im_start|>assistant\n') and '<tools>' in text

def test_preference_rows_with_tools_reach_trl_written_for_the_template(tok):
    rows = [dict(prompt=[dict(role='user', content='Weather in Oslo?')], tools=TOOLS,
                 chosen=[dict(role='assistant', content='', tool_calls=[dict(type='function', function=dict(name='get_weather', arguments=dict(city='Oslo')))])],
                 rejected=[dict(role='assistant', content='It is sunny.')])]
    d = load_data(rows).for_template(tok)
    r = d[0]
    assert 'tools' not in r and '<tools>' in r['prompt'][0]['content'] and '<tool_call>' in r['chosen'][0]['content']
    assert d.dataset[0]['chosen'][0]['content'] == r['chosen'][0]['content']

def test_tool_call_reward_scores_name_and_arguments():
    ref = json.dumps(dict(name='set_timer', arguments=dict(minutes=5, label='the tea')))
    said = ['<tool_call>{"name": "set_timer", "arguments": {"minutes": 5, "label": "The tea"}}</tool_call>',
            '<tool_call>{"name": "set_timer", "arguments": {"minutes": 6, "label": "the tea"}}</tool_call>',
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>', 'Sure, five minutes.']
    assert tool_call(said, answer=[ref] * 4) == [1., .5, 0., 0.]

def test_prompts_of_tool_conversations_keep_their_tools():
    p = load_data(tool_call_data(2)).to_prompts()
    assert p.columns == ['prompt', 'tools'] and p[0]['tools'] == TOOLS and [m['role'] for m in p[0]['prompt']] == ['user', 'assistant', 'tool']
