"""A local judge (`ftnb.judge`): a reward-model judge measured against scripted human labels on pairs whose better side
is known, a judge prompt asked in both orders, and `evaluate`'s judged win rate."""
import math
import pytest
from ftnb.core import FtnbError
from ftnb.models import tiny_model
from ftnb.example_data import preference_pairs, persona_data
from ftnb.feedback import feedback_from_pairs
from ftnb.judge import judge
from ftnb.rewards import reward_model
from ftnb.sft import sft
from ftnb.evaluate import evaluate

def test_a_reward_model_judge_agrees_with_scripted_labels_where_the_better_answer_is_known(tmp_path):
    rm = reward_model(tiny_model(), preference_pairs('concise', n=32), max_steps=25, batch_size=8, lr=3e-3, run_dir=tmp_path/'rm').start(quiet=True)
    fb = feedback_from_pairs(preference_pairs('concise', n=24, seed=7), tmp_path/'fb.jsonl')  # pairs it did not train on, 'chosen' picked
    a = fb.agreement(judge(rm))
    assert a.rate >= .8 and all(a.consistent) and len(a.agree) == 24  # a reward model cannot depend on the order
    lo, hi = a.interval
    assert lo < a.rate < hi or a.rate == 1 and hi == 1
    assert f"agrees with the person on {sum(a.agree)} of 24 pairs" in repr(a)

def test_a_judge_prompt_asks_in_both_orders_so_swapping_the_answers_swaps_the_verdict(tmp_path):
    j = judge(tiny_model(seed=1))
    pairs = preference_pairs('correct', n=6)
    ps, good, bad = [r['prompt'] for r in pairs], [r['chosen'] for r in pairs], [r['rejected'] for r in pairs]
    ab, ba = j.compare(ps, good, bad), j.compare(ps, bad, good)
    assert all(math.isclose(x['p'] + y['p'], 1, abs_tol=1e-5) for x, y in zip(ab, ba))
    assert [x['consistent'] for x in ab] == [y['consistent'] for y in ba]
    with pytest.raises(FtnbError, match=r'must hold \{question\}, \{a\} and \{b\}'): judge(tiny_model(), prompt='Which is better, {a} or {b}?')
    with pytest.raises(FtnbError, match='6 prompts, 6 first and 5 second answers'): j.compare(ps, good, bad[:5])

def test_evaluate_reports_the_judged_win_rate_of_tuned_against_base(tmp_path):
    run = sft(tiny_model(seed=0), persona_data(n=8), max_steps=2, batch_size=4, lr=1e-2, run_dir=tmp_path/'sft').start(quiet=True)
    j = judge(tiny_model(seed=1), name='tiny judge')
    ev = evaluate(run, ['Who are you?', 'What is your name?', 'Say hi.'], rewards='length', max_new_tokens=4, judge=j, quiet=True)
    assert 'tiny judge' in ev.metrics
    assert all(math.isclose(t + b, 1, abs_tol=1e-6) for t, b in zip(ev._scores('tuned', 'tiny judge'), ev._scores('base', 'tiny judge')))
    assert 'tiny judge: tuned higher than base on' in repr(ev)
    with pytest.raises(FtnbError, match='a judge compares two models'): evaluate(tiny_model(), ['Hi'], rewards='length', judge=j, quiet=True)
