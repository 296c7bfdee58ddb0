"""A regular API (issue 29, item 3): every recipe, `evaluate` and `rejection_sample` take `(model, data, *, options)`,
shared options in the same order, one meaning for `batch_size`, flags named for what they switch, and the names users
try first answered with ftnb's."""
import ast, inspect
from pathlib import Path
import pytest
from ftnb.core import FtnbError
from ftnb.models import tiny_model
from ftnb.example_data import arithmetic_data, chat_row, persona_data
from ftnb.sft import sft
from ftnb.prefs import dpo, kto, orpo
from ftnb.rewards import reward_model
from ftnb.grpo import grpo, rloo
from ftnb.rejection import rejection_sample
from ftnb.evaluate import evaluate
from ftnb.recipe import Shared

RECIPES = [sft, dpo, kto, orpo, reward_model, grpo, rloo]
ALL = RECIPES + [rejection_sample, evaluate]


@pytest.mark.parametrize('fn', ALL, ids=lambda f: f.__name__)
def test_model_and_data_come_first_and_required_then_keyword_only_options(fn):
    ps = list(inspect.signature(fn).parameters.values())
    assert [p.name for p in ps[:2]] == ['model', 'data']
    assert all(p.kind == p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in ps[:2]), ps[:2]
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in ps[2:]), ps[2:]
    own = [p.name for p in ps[2:]]
    first = 'max_length' if 'max_length' in own else 'rewards'  # the option a method's calls name most
    assert own[0] == first, own


def test_shared_options_come_in_one_order():
    "Two options that several functions take come in the same order in each."
    seen = {}  # (a, b) -> the function that put a before b
    for fn in ALL:
        names = [n for n, p in list(inspect.signature(fn).parameters.items())[2:] if p.kind != p.VAR_KEYWORD]
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                assert (b, a) not in seen, f"{fn.__name__} puts {a} before {b}, {seen.get((b, a))} {b} before {a}"
                seen[(a, b)] = fn.__name__


def test_recipe_bodies_read_their_shared_settings_from_one_declared_value():
    for fn in RECIPES:
        body = inspect.signature(fn.__wrapped__).parameters
        assert body['s'].annotation in (Shared, 'Shared'), fn.__name__
    for mod in ('sft', 'prefs', 'rewards', 'grpo'):
        tree = ast.parse((Path(__file__).parents[1] / 'ftnb' / f'{mod}.py').read_text())
        reads = [n for n in ast.walk(tree) if isinstance(n, ast.Subscript) and getattr(n.value, 'id', '') == 'kw']
        assert not reads, f"ftnb/{mod}.py reads kw[...] at line {reads[0].lineno}"


def test_batch_size_counts_what_one_step_learns_from_in_every_method(tmp_path):
    "grpo's batch_size counts sampled answers, as TRL does: 8 answers, 4 a prompt, is 2 prompts a step."
    run = grpo(tiny_model(), arithmetic_data(8), num_generations=4, batch_size=8, epochs=1, run_dir=tmp_path / 'g')
    a = run.args
    assert a.per_device_train_batch_size * a.gradient_accumulation_steps == 8 and run.settings['batch_size'] == 8
    assert run.max_steps == 4  # 8 prompts x 4 answers / 8 a step
    with pytest.raises(FtnbError, match=r'batch_size=6 is not a multiple of num_generations=4'):
        rloo(tiny_model(), arithmetic_data(8), num_generations=4, batch_size=6, max_steps=1, run_dir=tmp_path / 'r')
    for fn in RECIPES:
        assert 'batch_size' not in inspect.signature(fn.__wrapped__).parameters, fn.__name__  # one declaration


def test_evaluate_takes_model_and_names_its_loss_flag_for_what_it_switches():
    rows = [chat_row('Hi', 'Hello')] * 2
    ev = evaluate(model=tiny_model(), data=rows, rewards='format', max_new_tokens=2, answer_loss=False, quiet=True)
    assert ev.models['tiny']['loss'] is None
    ev = evaluate(tiny_model(), rows, rewards='format', max_new_tokens=2, quiet=True)
    assert ev.models['tiny']['loss'] > 0


def test_the_names_users_try_first_are_answered_with_ftnbs():
    with pytest.raises(FtnbError, match=r"evaluate got metrics=.*\(did you mean 'rewards'\?\)"):
        evaluate(tiny_model(), arithmetic_data(2), metrics=['exact_match'])
    with pytest.raises(FtnbError, match=r"\(did you mean 'max_new_tokens'\?\)"):
        rejection_sample(tiny_model(), arithmetic_data(2), max_new_token=4)
    with pytest.raises(FtnbError, match=r"'reward_funcs' \(did you mean 'rewards'\?\)"):
        grpo('no/such-model-anywhere', arithmetic_data(4), reward_funcs=['exact_match'])  # before the model loads
    with pytest.raises(FtnbError, match=r"'batch_sise' \(did you mean 'batch_size'\?\)"):
        sft('no/such-model-anywhere', persona_data(n=4), batch_sise=4)
