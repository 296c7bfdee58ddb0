"""Ready for TRL 2: every method's TRL config and trainer, built and stepped the way ftnb builds them, draws no deprecation
warning; a deprecated argument, TRL's or one TRL passes on to transformers, fails here before TRL 2 removes it."""
import contextlib, warnings
import pytest, trl, transformers
from ftnb.models import tiny_model
from ftnb.example_data import persona_data, preference_pairs, arithmetic_data
from ftnb.sft import sft
from ftnb.prefs import dpo, kto, orpo
from ftnb.rewards import reward_model
from ftnb.grpo import grpo, rloo

# Deprecations ftnb cannot fix: TRL's own calls into transformers (message start, where TRL makes the call).
NOT_OURS = {
    '`is_gradient_checkpointing` is deprecated': 'TRL 1.16 reads it itself (trl/models/utils.py:136 and :407)',
}


@contextlib.contextmanager
def no_deprecations(what):
    "Fail, naming each warning and where it was raised, if the block draws a DeprecationWarning or FutureWarning."
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        yield
    bad = [w for w in seen if issubclass(w.category, (DeprecationWarning, FutureWarning))
           and not any(str(w.message).startswith(m) for m in NOT_OURS)]
    assert not bad, (f"{what} on trl {trl.__version__}, transformers {transformers.__version__} drew deprecation "
                     "warnings (an argument TRL 2 or transformers 6 removes):\n"
                     + '\n'.join(f"  {w.category.__name__} at {w.filename}:{w.lineno}: {w.message}" for w in bad))


# (recipe, its data, settings): every method, and the options that change which TRL fields ftnb sets
BUILDS = [(sft, persona_data, {}), (sft, persona_data, dict(packing=True, loss='all')),
          (sft, persona_data, dict(lora=False)),
          (dpo, preference_pairs, {}), (dpo, preference_pairs, dict(precompute_ref=True, loss_type=['sigmoid', 'sft'])),
          (dpo, preference_pairs, dict(lora=False)), (kto, preference_pairs, {}), (orpo, preference_pairs, {}),
          (reward_model, preference_pairs, {}), (grpo, arithmetic_data, dict(num_generations=4)),
          (rloo, arithmetic_data, dict(num_generations=4))]
TRAIN = ['sft', 'dpo', 'kto', 'orpo', 'reward_model']  # a step and an evaluation in the fast suite; GRPO/RLOO's: slow


def _run(fn, data, kw, tmp_path):
    return fn(tiny_model(), data(n=8), run_dir=tmp_path/'run', max_steps=1, batch_size=4, **kw)


@pytest.mark.parametrize('fn,data,kw', BUILDS, ids=[f.__name__ + ''.join(f"-{k}" for k in kw) for f, _, kw in BUILDS])
def test_building_each_methods_config_and_trainer_uses_no_deprecated_argument(fn, data, kw, tmp_path):
    with no_deprecations(f"{fn.__name__}({kw}): its TRL config and trainer"):
        r = _run(fn, data, kw, tmp_path)
        r.start(background=False, quiet=True) if fn.__name__ in TRAIN else r._build()


@pytest.mark.slow
@pytest.mark.parametrize('fn', [grpo, rloo], ids=['grpo', 'rloo'])
def test_a_sampling_step_uses_no_deprecated_argument(fn, tmp_path):
    with no_deprecations(f"{fn.__name__}: a training step"):
        _run(fn, arithmetic_data, dict(num_generations=4), tmp_path).start(background=False, quiet=True)


def test_the_guard_fails_on_a_deprecated_trl_argument(tmp_path):
    "The check above does catch what TRL warns about: `truncation_mode='keep_end'` goes in TRL 2."
    with pytest.raises(AssertionError, match='keep_end'):
        with no_deprecations('sft with truncation_mode=keep_end'):
            _run(sft, persona_data, dict(truncation_mode='keep_end'), tmp_path)


def test_orpo_loads_from_trl_experimental():
    from ftnb.methods import method
    cfg, trainer = method('orpo').classes()
    assert (cfg.__module__, trainer.__name__) == ('trl.experimental.orpo.orpo_config', 'ORPOTrainer')


def test_a_trl_without_orpo_gets_an_error_naming_its_version_and_what_to_install(monkeypatch):
    import sys
    from ftnb.core import FtnbError
    from ftnb.methods import method
    monkeypatch.setitem(sys.modules, 'trl.experimental.orpo', None)  # a TRL that dropped it: its import fails
    with pytest.raises(FtnbError) as e:
        method('orpo').classes()
    msg = str(e.value)
    assert "'orpo'" in msg and f"TRL {trl.__version__}" in msg and 'pip install' in msg and 'dpo' in msg, msg
    with pytest.raises(FtnbError, match="Method 'orpo' needs TRL's ORPO"):
        orpo(tiny_model(), preference_pairs(n=8))


def test_orpo_made_stable_by_a_later_trl_is_found_there(monkeypatch):
    import sys
    from ftnb.methods import method
    class ORPOTrainer: pass
    class ORPOConfig: pass
    monkeypatch.setitem(sys.modules, 'trl.experimental.orpo', None)
    monkeypatch.setattr(trl, 'ORPOTrainer', ORPOTrainer, raising=False)
    monkeypatch.setattr(trl, 'ORPOConfig', ORPOConfig, raising=False)
    assert method('orpo').classes() == (ORPOConfig, ORPOTrainer)


def test_a_missing_package_inside_trls_module_is_not_taken_for_a_move(monkeypatch):
    "An ORPO module whose own dependency is missing keeps Python's error, which names that package."
    import importlib, sys
    from ftnb.methods import method
    monkeypatch.delitem(sys.modules, 'trl.experimental.orpo', raising=False)
    real = importlib.import_module
    def fake(name, *a):
        if name == 'trl.experimental.orpo': raise ModuleNotFoundError("No module named 'somedep'", name='somedep')
        return real(name, *a)
    monkeypatch.setattr(importlib, 'import_module', fake)
    with pytest.raises(ModuleNotFoundError, match='somedep'):
        method('orpo').classes()
