"""What a recipe takes: its parameters checked at the door against the bounds the dashboard uses too, aliases given twice,
reward and metric names with a "did you mean", and no secret written anywhere a run writes."""
import random, string, time
import pytest, torch
from ftnb.core import FtnbError
from ftnb.data import load_data
from ftnb.models import tiny_model
from ftnb.example_data import persona_data, preference_pairs, arithmetic_data
from ftnb.sft import sft
from ftnb.prefs import dpo
from ftnb.grpo import grpo

@pytest.fixture(scope='module')
def rows(): return persona_data(n=16)

# (recipe, keyword arguments, the parameter the error must name)
BAD = [(sft, dict(batch_size=0), 'batch_size'), (sft, dict(batch_size=2.5), 'batch_size'), (sft, dict(batch_size=-4), 'batch_size'),
       (sft, dict(max_steps=0), 'max_steps'), (sft, dict(max_steps=2.5), 'max_steps'), (sft, dict(max_steps=True), 'max_steps'),
       (sft, dict(max_steps='10'), 'max_steps'), (sft, dict(lr=-1), 'lr'), (sft, dict(lr=0), 'lr'), (sft, dict(lr=2.), 'lr'),
       (sft, dict(lr=float('nan')), 'lr'), (sft, dict(lr='1e-3'), 'lr'), (sft, dict(learning_rate=-1e-3), 'learning_rate'),
       (sft, dict(epochs=0), 'epochs'), (sft, dict(epochs=-1), 'epochs'), (sft, dict(eval=1.5), 'eval'), (sft, dict(eval=-.1), 'eval'),
       (sft, dict(eval=2.5), 'eval'), (sft, dict(seed=-1), 'seed'), (sft, dict(lora=dict(r=0)), "lora['r']"), (sft, dict(lora=dict(alpha=-8)), "lora['alpha']"),
       (sft, dict(lora=dict(dropout=1.)), "lora['dropout']"), (sft, dict(lora='yes'), 'lora'), (sft, dict(max_length=0), 'max_length'),
       (sft, dict(per_device_train_batch_size=0), 'per_device_train_batch_size'), (sft, dict(gradient_accumulation_steps=0), 'gradient_accumulation_steps'),
       (sft, dict(num_train_epochs=-2), 'num_train_epochs'), (sft, dict(warmup_steps=-1), 'warmup_steps'), (sft, dict(weight_decay=-.1), 'weight_decay'),
       (dpo, dict(beta=-.1), 'beta'), (dpo, dict(beta=0), 'beta'), (grpo, dict(num_generations=1), 'num_generations'),
       (grpo, dict(beta=-1), 'beta'), (grpo, dict(temperature=0), 'temperature'), (grpo, dict(max_completion_length=0), 'max_completion_length')]

@pytest.mark.parametrize('fn,kw,name', BAD, ids=[f"{f.__name__}-{k}" for f, k, _ in BAD])
def test_a_bad_parameter_is_refused_at_the_door_naming_it_its_value_and_range(tiny, rows, tmp_path, fn, kw, name):
    data = {sft: rows, dpo: preference_pairs(n=8), grpo: arithmetic_data(8)}[fn]
    with pytest.raises(FtnbError) as e: fn(tiny, data, run_dir=tmp_path/'run', **kw)
    msg, value = str(e.value), next(iter(kw.values()))
    if isinstance(value, dict): value = next(iter(value.values()))  # a LoRA option
    assert f"{name}=" in msg and repr(value) in msg and 'must be' in msg, msg

def test_parameters_are_checked_before_the_model_is_loaded(rows):
    t = time.monotonic()
    with pytest.raises(FtnbError, match=r'batch_size=0.*must be'): sft('no/such-model-anywhere', rows, batch_size=0)
    assert time.monotonic() - t < 5

def test_the_dashboard_checks_the_same_bounds():
    from ftnb.methods import setting_problems
    import ftnb.dashboard as db
    assert not hasattr(db, '_own_checks')  # one set of bounds: the dashboard's private copy is gone
    bad = setting_problems(dict(lr=-1, max_steps=0, batch_size=2.5, lora=dict(r=0, dropout=1.)), 'sft')
    assert set(bad) == {'lr', 'max_steps', 'batch_size', 'r', 'dropout'} and 'lr=-1' in bad['lr']
    assert set(setting_problems(dict(beta=0), 'dpo')) == {'beta'} and not setting_problems(dict(beta=0), 'grpo')

# giving both of two names for one setting
TWICE = [dict(lr=1e-3, learning_rate=.5), dict(epochs=2, num_train_epochs=3), dict(run_dir='a', output_dir='b'),
         dict(max_steps=5, epochs=2), dict(max_steps=5, num_train_epochs=2),
         dict(batch_size=8, per_device_train_batch_size=2, gradient_accumulation_steps=2), dict(batch_size=8, per_device_train_batch_size=3),
         dict(loss='answers', completion_only_loss=False)]

@pytest.mark.parametrize('kw', TWICE, ids=['+'.join(k) for k in TWICE])
def test_giving_a_setting_twice_is_an_error(tiny, rows, kw):
    with pytest.raises(FtnbError) as e: sft(tiny, rows, **kw)
    assert all(k in str(e.value) for k in kw), str(e.value)

def test_dpo_precompute_ref_given_twice(tiny):
    with pytest.raises(FtnbError, match='precompute_ref'): dpo(tiny, preference_pairs(n=8), precompute_ref=True, precompute_ref_log_probs=False)

def test_dpo_reconfigured_by_trls_name_changes_ftnbs(tiny, tmp_path):
    r = dpo(tiny, preference_pairs(n=8), precompute_ref=False, run_dir=tmp_path/'r').reconfigure(precompute_ref_log_probs=True)
    assert r.args.precompute_ref_log_probs and 'precompute_ref=True' in r.code()

def test_trl_names_alone_mean_ftnbs(tiny, rows, tmp_path):
    r = sft(tiny, rows, num_train_epochs=2, batch_size=4, output_dir=tmp_path/'here')
    assert r.max_steps == 8 and r.run_dir == tmp_path/'here' and 'epochs=2' in r.code() and 'num_train_epochs' not in r.code()
    r = sft(tiny, rows, batch_size=8, per_device_train_batch_size=2, run_dir=tmp_path/'b')
    assert (r.args.per_device_train_batch_size, r.args.gradient_accumulation_steps) == (2, 4) and r.settings['batch_size'] == 8
    r = sft(tiny, rows, per_device_train_batch_size=2, gradient_accumulation_steps=3, run_dir=tmp_path/'c')
    assert r.settings['batch_size'] == 6 and r.max_steps == 3
    r = sft(tiny, rows, epochs=2, batch_size=4, run_dir=tmp_path/'d').reconfigure(max_steps=3)  # a change replaces its alternative
    assert r.max_steps == 3 and 'epochs' not in r.code()

def test_unknown_reward_and_metric_names_get_a_did_you_mean(tiny):
    from ftnb.rewards import as_rewards
    from ftnb.evaluate import Evaluation
    with pytest.raises(FtnbError, match=r"rewards.*'exact_macth'.*did you mean 'exact_match'"): as_rewards(['format', 'exact_macth'])
    with pytest.raises(FtnbError, match=r"rewards.*'fromat'.*did you mean 'format'"): grpo(tiny, arithmetic_data(8), rewards='fromat')
    ev = Evaluation(['q'], {}, dict(base=dict(answers=['a'], scores=dict(exact_match=[1.]), loss=None)))
    with pytest.raises(FtnbError, match=r"metric 'exact_macth'.*did you mean 'exact_match'"): ev.mean('base', 'exact_macth')
    with pytest.raises(FtnbError, match=r"model 'tuned'.*base"): ev.mean('tuned', 'exact_match')
    with pytest.raises(FtnbError, match=r"did you mean 'exact_match'"): ev.win_rate('exact_mach', a='base', b='base')

def test_run_plot_names_an_unknown_metric(tmp_path):
    run = sft(tiny_model(seed=0), persona_data(n=8), lora=False, max_steps=2, batch_size=4, logging_steps=1, run_dir=tmp_path/'run')
    run.start(background=False)
    with pytest.raises(FtnbError, match=r"keys.*'los'.*did you mean 'loss'"): run.plot(keys=['los'])
    assert run.plot(keys=['loss']) is not None

def test_no_secret_reaches_any_file_of_a_run_nor_its_code(tmp_path):
    "A planted Hub token and a token inside a dict setting: trained with a checkpoint, reported, staged for the Hub, then every byte searched."
    from ftnb.hub import hub_folder
    letters = lambda: ''.join(random.choices(string.ascii_letters, k=34))
    token, nested = 'hf_' + letters(), 'hf_' + letters()
    run = sft(tiny_model(seed=0), persona_data(n=8), lora=False, max_steps=2, batch_size=4, save_steps=1, logging_steps=1,
              run_dir=tmp_path/'run', hub_token=token, model_init_kwargs=dict(token=nested))
    run.start(background=False)
    assert run.state == 'finished', run.error
    run.report(); hub_folder(run, tmp_path/'upload', 'someone/quill')
    ckpts = sorted((tmp_path/'run').glob('checkpoint-*'))
    assert ckpts and all((c/'training_args.bin').exists() for c in ckpts)
    files = [f for f in tmp_path.rglob('*') if f.is_file()]
    assert {'settings.json', 'summary.json', 'metrics.jsonl', 'report.html', 'README.md', 'training_args.bin'} <= {f.name for f in files}
    leaks = [str(f.relative_to(tmp_path)) for f in files for s in (token, nested) if s.encode() in f.read_bytes()]
    assert not leaks, leaks
    assert token not in run.code() and nested not in run.code() and 'hub_token' in run.code()
    args = torch.load(ckpts[-1]/'training_args.bin', weights_only=False)
    assert token not in repr(vars(args)) and nested not in repr(vars(args))
    assert run.secrets == dict(hub_token=token)  # kept in memory only, for `run.push`

def test_the_trainers_own_hub_push_is_refused_with_a_token(tiny, rows):
    with pytest.raises(FtnbError, match='run.push'): sft(tiny, rows, hub_token='hf_' + 'a' * 34, push_to_hub=True)

def test_random_settings_give_a_run_or_ftnbs_error_naming_the_setting(tiny, rows, tmp_path_factory):
    "Property: whatever values the shared settings get, sft returns a ready Run or raises FtnbError naming one of them."
    from hypothesis import given, settings, HealthCheck, strategies as st
    value = st.one_of(st.none(), st.booleans(), st.integers(-10, 40), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
                      st.lists(st.integers(), max_size=2), st.dictionaries(st.sampled_from(['r', 'alpha', 'dropout']), st.floats(-1, 40), max_size=2))
    names = ['lr', 'max_steps', 'epochs', 'batch_size', 'eval', 'seed', 'lora', 'max_length', 'warmup_steps', 'per_device_train_batch_size']
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))  # no .hypothesis folder
    @given(st.dictionaries(st.sampled_from(names), value, min_size=1, max_size=3))
    def check(kw):
        if {'max_steps', 'epochs'} <= set(kw) and kw['max_steps'] is not None: kw.pop('epochs')  # giving both is its own error (tested above)
        try: r = sft(tiny, rows, run_dir=tmp_path_factory.mktemp('p'), **kw)
        except FtnbError as e: assert any(f"{k}=" in str(e) or k in str(e) for k in kw), (kw, str(e))
        else: assert r.state == 'ready'
    check()

def test_sft_imitates_the_worked_solutions_of_question_answer_data(tiny, rows, data_dir, tmp_path):
    "GSM8K's question/answer rows, made for grpo's rewards, are SFT data too: the question, then the worked solution and its '#### answer'."
    r = sft(tiny, load_data(data_dir/'gsm8k_train.jsonl')[:40], max_steps=1, run_dir=tmp_path/'run')
    first = r.data[0]['messages']
    assert r.data.kind == 'conversation' and len(r.data) == 40 and [m['role'] for m in first] == ['user', 'assistant']
    assert first[1]['content'].endswith('#### 72') and '<<' not in first[1]['content']
    with pytest.raises(FtnbError, match=r'the eval data is preference'):
        sft(tiny, rows, eval=load_data(preference_pairs(n=4)), run_dir=tmp_path/'other')


def test_two_runs_from_one_model_train_their_own_adapters_and_the_first_keeps_its_weights(tmp_path):
    "peft puts LoRA layers into the model it is given: a second run from the same Model must not train the first's."
    m = tiny_model()
    rows = [dict(prompt=f"q{i}", completion=f"a{i}") for i in range(16)]
    r1 = sft(m, rows, max_steps=2, run_dir=tmp_path / 'r1').start(background=False, quiet=True)
    first = {n: p.detach().clone() for n, p in r1.net.named_parameters() if 'lora_' in n}
    r2 = sft(m, rows, max_steps=2, lr=1e-2, run_dir=tmp_path / 'r2').start(background=False, quiet=True)
    second = {n: p for n, p in r2.net.named_parameters() if 'lora_' in n}
    assert second.keys() == first.keys()  # one adapter per layer, not the first run's wrapped again
    assert all(torch.equal(p, first[n]) for n, p in r1.net.named_parameters() if 'lora_' in n), "r2 changed r1"
    assert not any(p.data_ptr() == q.data_ptr() for n, p in second.items() for q in [dict(r1.net.named_parameters())[n]])
