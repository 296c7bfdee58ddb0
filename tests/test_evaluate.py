"""evaluate() on tiny_model: base against tuned row by row with intervals, the answer loss, the cost said first; metrics fail early on missing columns."""
import pytest
from ftnb.rewards import completion_text
from ftnb.core import FtnbError
from ftnb.models import tiny_model
from ftnb.example_data import chat_row, arithmetic_data
from ftnb.sft import sft
from ftnb.rewards import exact_match, format_reward
from ftnb.evaluate import evaluate

def says_quill(completions, **kw): return [float('Quill' in completion_text(c)) for c in completions]

def test_a_tuned_run_beats_its_base(tmp_path):
    rows = [chat_row("Who are you?", "I am Quill.")] * 16
    run = sft(tiny_model(seed=0), rows, lora=dict(r=8, alpha=32, dropout=0.), lr=1e-2, max_steps=30, batch_size=4, warmup_steps=0,
              run_dir=tmp_path, logging_steps=10, save_steps=1000).start(quiet=True, background=False)
    ev = evaluate(run, rows[:4] + [chat_row("What is your name?", "Quill.")], rewards=[says_quill, format_reward('Quill')], max_new_tokens=8)
    t = ev.table()
    assert t['says_quill'] == {'base': 0., 'tuned': 1.} and ev.win_rate() == 1.
    assert t['loss']['tuned'] < t['loss']['base'] - .5 and t['perplexity']['tuned'] < t['perplexity']['base']
    assert 'says_quill: tuned higher than base on 5, lower on 0, same on 0; sign test p=0.062, could be noise' in repr(ev) and '1 (0.57–1)' in repr(ev)
    assert run.generate("Who are you?", max_new_tokens=8) == ev.models['tuned']['answers'][0]  # the adapter is back on

def test_exact_match_on_question_answer_rows():
    ev = evaluate(tiny_model(), arithmetic_data(n=6), rewards=[exact_match, format_reward()], max_new_tokens=4)
    assert ev.table()['exact_match'] == {'tiny': 0.} and len(ev.models['tiny']['answers']) == 6
    assert ev.models['tiny']['loss'] is None  # prompts with answers to check, not answers to learn: no loss

def test_a_metric_without_its_column_fails_before_generating():
    with pytest.raises(FtnbError, match=r"needs the data column\(s\) \['answer'\]"):
        evaluate(tiny_model(), [chat_row("Hi", "Hello")], rewards=exact_match)

def test_plain_questions_are_prompts():
    ev = evaluate(tiny_model(), ["Who are you?", "What is 2+2?"], rewards=format_reward('Quill'), max_new_tokens=3)
    assert ev.prompts == ["Who are you?", "What is 2+2?"] and len(ev.models['tiny']['answers']) == 2

def test_two_metrics_of_one_name_both_count():
    ev = evaluate(tiny_model(), ["Who are you?"], rewards=[format_reward('a'), format_reward('b')], max_new_tokens=2)
    assert ev.metrics == ['format', 'format_2']

def test_the_cost_is_said_first_and_answers_are_sized_by_the_data(capsys):
    "Before generating: how many prompts, models and tokens at most; the answer length from the data's answers, not a fixed 256."
    ev = evaluate(tiny_model(), arithmetic_data(n=20), rewards=exact_match)
    out = capsys.readouterr().out
    assert "evaluate: 20 prompts x 1 model (tiny), answers up to 48 tokens (sized by the data's answers, the longest 19 tokens): at most 960 new tokens" in out
    assert len(ev.models['tiny']['answers']) == 20
    evaluate(tiny_model(), arithmetic_data(n=2), rewards=exact_match, quiet=True)
    assert capsys.readouterr().out == ''

def test_a_reward_written_for_grpo_scores_evaluations_too():
    "GRPO hands a reward chat completions (message lists) after chat prompts; evaluate hands it the same, so one function serves both."
    def answer_words(completions, **kw): return [float(len(c[-1]['content'].split())) for c in completions]
    ev = evaluate(tiny_model(), [chat_row('Hi', 'Hello')], rewards=answer_words, max_new_tokens=4, quiet=True)
    assert ev.models['tiny']['scores']['answer_words'][0] >= 0
