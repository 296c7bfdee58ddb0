"""Settings at the door (issue 27): numpy and torch scalars are taken as the Python numbers they hold, absurd values are refused
naming the limit and where it comes from (the model's context and width, ftnb's ceiling on steps), and the dashboard shows
every value exactly as it is: a value out of range is named, never clamped, and Start applies only what the user gave."""
import json, html
from types import SimpleNamespace
import numpy as np, pytest, torch
from ftnb.core import FtnbError
from ftnb.methods import BOUNDS, MAX_STEPS, model_bounds, plain, setting_problems
from ftnb.models import tiny_model
from ftnb.example_data import persona_data, arithmetic_data
from ftnb.sft import sft
from ftnb.grpo import grpo
from ftnb.dashboard import Dashboard

@pytest.fixture(scope='module')
def rows(): return persona_data(n=16)

def kinds(d): return {k: type(v) for k, v in d.items()}
def reason(d): return html.unescape(d.reason.value)  # what the dashboard says, as read

# numpy and torch scalars

def test_plain_turns_scalars_into_python_numbers():
    got = plain(dict(a=np.int64(3), b=np.float32(.5), c=torch.tensor(2), d=torch.tensor(.25), e=np.array(7), f=np.bool_(True),
                     g=[np.int8(1), (np.float16(2.),)], h='text', i=None, j=np.arange(3)))
    assert got['a'] == 3 and got['b'] == .5 and got['c'] == 2 and got['d'] == .25 and got['e'] == 7 and got['f'] is True
    assert kinds(got) | dict(g=list, j=np.ndarray) == dict(a=int, b=float, c=int, d=float, e=int, f=bool, g=list, h=str, i=type(None), j=np.ndarray)
    assert type(got['g'][0]) is int and type(got['g'][1]) is tuple and type(got['g'][1][0]) is float
    assert isinstance(got['j'], np.ndarray)  # an array is not a scalar: left as it is (and refused by the bounds where a number is due)

def test_numpy_and_torch_scalars_are_taken_as_the_python_numbers_they_hold(tiny, rows, tmp_path):
    run = sft(tiny, rows, max_steps=np.int64(3), lr=np.float32(1e-3), batch_size=torch.tensor(4), seed=np.uint32(7), warmup_steps=np.int32(0),
              lora={'r': np.int64(4), 'alpha': np.float64(8.), 'dropout': torch.tensor(0.)}, max_length=np.int64(256), run_dir=tmp_path/'run')
    a = run.args
    assert kinds(dict(steps=a.max_steps, lr=a.learning_rate, seed=a.seed, warmup=a.warmup_steps, length=a.max_length)) == \
           dict(steps=int, lr=float, seed=int, warmup=int, length=int)
    assert (a.max_steps, a.seed, a.max_length, run.settings['batch_size']) == (3, 7, 256, 4) and a.learning_rate == 1e-3  # the decimal written, not float32's binary expansion (0.0010000000474974513)
    assert run.call[1]['lora'] == dict(r=4, alpha=8., dropout=0.) and kinds(run.call[1]['lora']) == dict(r=int, alpha=float, dropout=float)
    assert type(run.trainer_kwargs['peft_config'].r) is int
    json.dumps(run.settings)  # what settings.json and the summary are made of
    assert 'np.' not in run.code() and 'tensor' not in run.code() and 'max_steps=3' in run.code()

def test_a_run_given_numpy_scalars_trains_and_writes_its_files(tmp_path):
    "The probe's case: before, the run failed at step 1 (`int64 is not JSON serializable`)."
    run = sft(tiny_model(seed=0), persona_data(n=8), max_steps=np.int64(1), lr=np.float32(1e-3), batch_size=np.int64(4),
              lora={'r': np.int64(4)}, logging_steps=np.int64(1), run_dir=tmp_path/'run')
    run.start(background=False)
    assert run.state == 'finished', run.error
    saved = json.loads((tmp_path/'run'/'settings.json').read_text())
    assert saved['settings']['max_steps'] == 1 and saved['settings']['lora']['r'] == 4 and 'np.' not in (tmp_path/'run'/'settings.json').read_text()

# absurd values

ABSURD = [(dict(lora={'r': 10**6}), "lora['r']=1000000", '≤ 64', 'hidden size of model', 'config.hidden_size'),
          (dict(max_steps=10**12), 'max_steps=1000000000000', '≤ 10000000', "ftnb's ceiling", ''),
          (dict(max_length=10**9), 'max_length=1000000000', '≤ 2048', 'context of model', 'config.max_position_embeddings'),
          (dict(max_length=2049), 'max_length=2049', '≤ 2048', 'context of model', 'config.max_position_embeddings')]

@pytest.mark.parametrize('kw,said,limit,why,source', ABSURD, ids=[next(iter(k)) + str(i) for i, (k, *_) in enumerate(ABSURD)])
def test_an_absurd_value_is_refused_naming_the_limit_and_where_it_comes_from(tiny, rows, tmp_path, kw, said, limit, why, source):
    with pytest.raises(FtnbError) as e: sft(tiny, rows, run_dir=tmp_path/'run', **kw)
    msg = str(e.value)
    assert msg.startswith('sft: ') and said in msg and limit in msg and why in msg and source in msg, msg

def test_values_at_the_limits_are_accepted(tiny, rows, tmp_path):
    r = sft(tiny, rows, max_length=2048, lora=dict(r=64), max_steps=MAX_STEPS, run_dir=tmp_path/'run')
    assert (r.args.max_length, r.trainer_kwargs['peft_config'].r, r.max_steps) == (2048, 64, MAX_STEPS)

def test_grpo_lengths_are_held_to_the_context(tiny, tmp_path):
    with pytest.raises(FtnbError, match=r"grpo: max_completion_length=100000: .*≤ 2048 \(the context of model 'tiny'"):
        grpo(tiny, arithmetic_data(8), num_generations=2, max_completion_length=10**5, run_dir=tmp_path/'g')

def test_epochs_that_make_too_many_steps_are_refused(tiny, rows, tmp_path):
    with pytest.raises(FtnbError, match=r"sft: epochs=1e\+300 of 16 rows at batch_size=8 make .* optimizer steps; max_steps must be .*≤ 10000000"):
        sft(tiny, rows, epochs=1e300, run_dir=tmp_path/'run')

def test_model_bounds_read_the_config_then_the_tokenizer():
    assert model_bounds(tiny_model())['max_length'].hi == 2048 and model_bounds(tiny_model(hidden=32))['r'].hi == 32
    from transformers import LlamaConfig
    yarn = LlamaConfig(max_position_embeddings=32768, hidden_size=64, rope_scaling=dict(rope_type='yarn', factor=4., original_max_position_embeddings=32768))
    b = model_bounds(SimpleNamespace(name='long', model=SimpleNamespace(config=yarn), tokenizer=None))
    assert b['max_length'].hi == 131072 and 'rope_scaling' in str(b['max_length'])  # a context stretched by RoPE scaling is the longer one
    bare = SimpleNamespace(name='bare', model=SimpleNamespace(config=SimpleNamespace()), tokenizer=SimpleNamespace(model_max_length=512))
    assert model_bounds(bare)['max_length'].hi == 512 and 'model_max_length' in str(model_bounds(bare)['max_length']) and 'r' not in model_bounds(bare)
    unknown = SimpleNamespace(name='x', model=SimpleNamespace(config=SimpleNamespace()), tokenizer=SimpleNamespace(model_max_length=int(1e30)))
    assert model_bounds(unknown) == {}  # transformers' "no limit" is no limit: nothing to hold to

def test_the_max_steps_ceiling_is_in_the_bounds_the_dashboard_reads():
    assert BOUNDS['max_steps'].hi == MAX_STEPS and set(setting_problems(dict(max_steps=MAX_STEPS + 1))) == {'max_steps'}

# the dashboard shows values as they are

def test_a_learning_rate_below_the_slider_is_shown_exactly_and_start_applies_it(tmp_path):
    assert BOUNDS['lr'].ok(1e-8)
    run = sft(tiny_model(seed=0), persona_data(n=8), lr=1e-8, max_steps=1, batch_size=4, run_dir=tmp_path/'run')
    d = Dashboard(run, samples_every=0)
    assert d.panel.common['lr'].value == 1e-8 and d.panel.changes() == {} and not d.start_btn.disabled
    d.start(); run.wait()
    assert run.state == 'finished' and run.args.learning_rate == 1e-8

def test_a_value_typed_is_applied_exactly(tmp_path):
    run = sft(tiny_model(seed=0), persona_data(n=8), lr=1e-3, max_steps=1, batch_size=4, run_dir=tmp_path/'run')
    d = Dashboard(run, samples_every=0)
    d.panel.common['lr'].value = 1.2345e-8  # below the slider's usual range, and not three significant digits
    assert d.panel.common['lr'].value == 1.2345e-8 and d.panel.changes() == dict(lr=1.2345e-8) and not d.start_btn.disabled
    d.start(); run.wait()
    assert run.state == 'finished' and run.args.learning_rate == 1.2345e-8 and run.call[1]['lr'] == 1.2345e-8

def test_the_slider_sets_the_learning_rate_it_shows(tmp_path):
    run = sft(tiny_model(seed=0), persona_data(n=8), lr=1e-3, max_steps=1, batch_size=4, run_dir=tmp_path/'run')
    p = Dashboard(run, samples_every=0).panel
    p.lr_slider.value = 10 ** -2.5
    assert p.common['lr'].value == 0.00316 and p.changes() == dict(lr=0.00316)  # what the box shows is what Start applies
    p.common['lr'].value = 1e-9
    assert p.lr_slider.value == pytest.approx(1e-9) and p.common['lr'].value == 1e-9  # the slider follows, widened; the box keeps its value

OUT = [('max_steps', 10**8, ['max_steps=100000000', '≤ 10000000', "ftnb's ceiling"]),
       ('max_length', 10**9, ['max_length=1000000000', '≤ 2048', 'context of model']),
       ('lr', 2., ['lr=2.0', '< 1']), ('lr', 0., ['lr=0.0', '> 0']), ('batch_size', 0, ['batch_size=0', '≥ 1'])]

@pytest.mark.parametrize('name,value,said', OUT, ids=[f"{n}={v}" for n, v, _ in OUT])
def test_a_value_out_of_bounds_is_shown_as_it_is_and_start_refuses_naming_it(tmp_path, name, value, said):
    run = sft(tiny_model(seed=0), persona_data(n=8), max_steps=2, batch_size=4, run_dir=tmp_path/'run')
    d = Dashboard(run, samples_every=0)
    d.panel.common[name].value = value
    assert d.panel.common[name].value == value  # not clamped
    assert d.start_btn.disabled and all(s in reason(d) for s in said) and d.panel.common[name].layout.border, reason(d)
    d.start()
    assert run.state == 'ready' and run.max_steps == 2 and run.args.learning_rate != value

def test_a_lora_rank_above_the_hidden_size_is_named_in_the_panel(tmp_path):
    run = sft(tiny_model(seed=0), persona_data(n=8), max_steps=2, batch_size=4, run_dir=tmp_path/'run')
    d = Dashboard(run, samples_every=0)
    d.panel.lora['r'].value = 10**6
    assert d.panel.lora['r'].value == 10**6 and d.start_btn.disabled
    assert "lora['r']=1000000" in reason(d) and "≤ 64 (the hidden size of model 'tiny': config.hidden_size)" in reason(d), reason(d)
    d.panel.lora['r'].value = 64
    assert not d.start_btn.disabled

@pytest.mark.parametrize('every', [10**8, -1])
def test_samples_every_is_shown_as_given(tmp_path, every):
    run = sft(tiny_model(seed=0), persona_data(n=8), max_steps=2, batch_size=4, run_dir=tmp_path/'run')
    d = Dashboard(run, samples_every=every)
    assert d.every.value == every
    assert d.start_btn.disabled == (every < 0) and (every >= 0 or 'samples_every=-1: samples_every must be a whole number ≥ 0' in reason(d)), reason(d)
