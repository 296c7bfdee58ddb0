"""One test per internal of transformers, TRL or accelerate that ftnb patches or calls (the table "What ftnb patches" in
nbs/05b_trainer.ipynb): the name is there with the signature ftnb calls, and the behaviour ftnb relies on happens. A
failure names the library, its version and the internal, so an upgrade that breaks one says which."""
import contextlib, inspect, os
import pytest, torch, transformers, trl
import ftnb.trainer as ft
from ftnb.models import tiny_model
from ftnb.example_data import persona_data, preference_pairs, arithmetic_data
from ftnb.sft import sft

VERSIONS = dict(transformers=transformers.__version__, trl=trl.__version__)


@contextlib.contextmanager
def relied_on(lib, internal, what):
    "Any failure inside becomes one that names the library, its version, the internal and what ftnb relies on."
    try:
        yield
    except Exception as e:
        raise AssertionError(f"{lib} {VERSIONS.get(lib, '')}: {internal} changed; ftnb relies on it: {what} "
                             f"(nbs/05b_trainer.ipynb, 'What ftnb patches'). {type(e).__name__}: {e}") from e


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def tiny_sft(tmp_path, steps=1, **kw):
    return sft(tiny_model(), persona_data(n=8), run_dir=tmp_path/'run', max_steps=steps, batch_size=4, **kw)


def test_checkpoints_are_staged_through_get_output_dir(tmp_path, monkeypatch):
    from transformers import Trainer
    with relied_on('transformers', 'Trainer._get_output_dir(trial)', 'its checkpoint write goes where it returns'):
        assert params(Trainer._get_output_dir) == ['self', 'trial'], inspect.signature(Trainer._get_output_dir)
        moved, replace = [], os.replace
        monkeypatch.setattr(ft.os, 'replace', lambda a, b: (moved.append((str(a), str(b))), replace(a, b)))
        r = tiny_sft(tmp_path, save_steps=1)
        r.start(background=False, quiet=True)
        run = str(r.run_dir)
        moved = [m for m in moved if 'checkpoint-' in m[1]]
        assert moved == [(f"{run}/{ft.STAGING}/checkpoint-1", f"{run}/checkpoint-1")], moved
        assert (r.run_dir/'checkpoint-1'/'trainer_state.json').exists() and not (r.run_dir/ft.STAGING).exists()


def test_save_checkpoint_writes_each_checkpoint(tmp_path, monkeypatch):
    from transformers import Trainer
    import transformers.trainer as tt
    with relied_on('transformers', 'Trainer._save_checkpoint(model, trial) and trainer.rotate_checkpoints',
                   'it writes every checkpoint, and old ones are rotated by name'):
        assert params(Trainer._save_checkpoint) == ['self', 'model', 'trial'], inspect.signature(Trainer._save_checkpoint)
        assert {'output_dir', 'save_total_limit', 'best_model_checkpoint', 'use_mtime'} <= set(
            params(tt.rotate_checkpoints)), inspect.signature(tt.rotate_checkpoints)
        calls, save = [], ft.AtomicCheckpoints._save_checkpoint
        monkeypatch.setattr(ft.AtomicCheckpoints, '_save_checkpoint', lambda s, m, t: (calls.append(1), save(s, m, t)))
        r = tiny_sft(tmp_path, steps=3, save_steps=1, save_total_limit=1)
        r.start(background=False, quiet=True)
        assert len(calls) == 3, f"ftnb's _save_checkpoint ran {len(calls)} times in 3 steps saving every step"
        assert sorted(p.name for p in r.run_dir.glob('checkpoint-*')) == ['checkpoint-3']  # rotated: the newest kept


def test_get_grad_norm_is_called_once_per_optimizer_step(tmp_path, monkeypatch):
    from transformers import Trainer
    with relied_on('transformers', 'Trainer._get_grad_norm(model, grad_norm=None)',
                   'it is called before each optimizer step, where FiniteSteps stops a non-finite step'):
        assert params(Trainer._get_grad_norm)[:3] == ['self', 'model', 'grad_norm'], inspect.signature(
            Trainer._get_grad_norm)
        calls, norm = [], ft.FiniteSteps._get_grad_norm
        monkeypatch.setattr(ft.FiniteSteps, '_get_grad_norm',
                            lambda s, m, grad_norm=None: (calls.append(1), norm(s, m, grad_norm=grad_norm))[1])
        tiny_sft(tmp_path, steps=2).start(background=False, quiet=True)
        assert len(calls) == 2, f"called {len(calls)} times in 2 optimizer steps"


def fused_head_scores(m):
    "Run TRL's fused head on 2 rows of 32 tokens, half of each a prompt; the log-probs."
    trl.trainer.utils.add_fused_lm_head(m, outputs=('log_probs',))
    ids = torch.arange(100, 164).reshape(2, 32)
    labels = ids.clone()
    labels[:, :16] = -100
    return m(input_ids=ids, labels=labels, fused_lm_head=True).log_probs.detach()


def test_use_triton_is_the_gate_of_trls_fused_head(monkeypatch):
    import trl.trainer.utils as tu
    with relied_on('trl', 'trl.trainer.utils._use_triton(device)',
                   "TRL's fused LM head asks it whether to score only labelled positions"):
        assert callable(getattr(tu, '_use_triton', None)) and params(tu._use_triton) == ['device']
        asked, gate = [], tu._use_triton
        monkeypatch.setattr(tu, '_use_triton', lambda device: (asked.append(device.type), gate(device))[1])
        m = tiny_model().model
        every = fused_head_scores(m)
        assert asked == ['cpu'], f"the fused head asked the gate {asked}"
        with ft.score_answers_only():
            answers = fused_head_scores(m)
        assert torch.equal(every, answers)  # the compact path computes the same numbers


def test_the_answers_only_gate_is_on_while_training_and_gone_after(tmp_path):
    "ftnb's trainers score answers only while they train, and leave TRL's own gate in place for everything else."
    import trl.trainer.utils as tu
    from transformers import TrainerCallback
    gate, seen = tu._use_triton, []

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kw): seen.append(getattr(tu._use_triton, 'ftnb', False))

    r = tiny_sft(tmp_path)
    r._build().add_callback(Watch())
    r.start(background=False, quiet=True)
    assert seen == [True], 'the compact gate was not on while training'
    assert tu._use_triton is gate, "TRL's gate was left replaced after training: a global patch"
    with ft.score_answers_only():
        with ft.score_answers_only():
            assert tu._use_triton.ftnb
        assert tu._use_triton.ftnb  # nested: still on until the outer block ends
    assert tu._use_triton is gate


def test_n_gpu_is_what_args_n_gpu_reads():
    from transformers import TrainingArguments
    with relied_on('transformers', 'TrainingArguments._n_gpu', "args.n_gpu returns it (one_device sets it to 1)"):
        args = TrainingArguments(output_dir='unused', use_cpu=True, report_to='none')
        assert args.n_gpu == 0
        args._n_gpu = 3
        assert args.n_gpu == 3, 'args.n_gpu does not read args._n_gpu'
        assert ft.one_device(args).n_gpu == 1


@pytest.mark.parametrize('name', ['grpo', 'rloo'])
def test_create_model_from_path_builds_the_reference(name, tmp_path):
    import importlib
    from ftnb import grpo
    with relied_on('trl', f'create_model_from_path in trl.trainer.{name}_trainer',
                   'the trainer loads its KL reference through it (policy_reference makes it the policy)'):
        mod = importlib.import_module(f'trl.trainer.{name}_trainer')
        assert 'model_id' in params(mod.create_model_from_path), inspect.signature(mod.create_model_from_path)
        m = tiny_model()
        r = getattr(grpo, name)(m, arithmetic_data(n=8), run_dir=tmp_path/'run', lora=False, beta=0.1, max_steps=1)
        ref = r._build().ref_model
        assert ref is not None and ref is not m.model, 'no separate reference model was built'
        assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), m.model.parameters())), 'the reference is not a copy'
        assert not any(p.requires_grad for p in ref.parameters())


def test_prepare_model_for_kbit_training_marks_the_trainers_that_upcast():
    import importlib
    from ftnb.methods import METHODS
    with relied_on('trl', "prepare_model_for_kbit_training in the trainer modules' namespace",
                   "kbit_upcast counts the weights a trainer whose module imports it makes float32"):
        has = {n: 'prepare_model_for_kbit_training' in vars(importlib.import_module(m.classes()[1].__module__))
               for n, m in METHODS.items()}
        assert has == dict(sft=False, dpo=False, kto=False, orpo=True, reward=False, grpo=False, rloo=False), has


def test_create_accelerator_and_postprocess_rebuilds_the_accelerator(tmp_path):
    from transformers import Trainer, TrainingArguments
    from accelerate.state import is_initialized
    with relied_on('transformers', 'Trainer.create_accelerator_and_postprocess()',
                   "accelerator_ready rebuilds a trainer's accelerator after a new config reset accelerate's state"):
        assert params(Trainer.create_accelerator_and_postprocess) == ['self']
        tr = tiny_sft(tmp_path)._build()
        TrainingArguments(output_dir=str(tmp_path/'other'), use_cpu=True, report_to='none')  # resets the shared state
        assert not is_initialized(), "a new TrainingArguments no longer resets accelerate's state: accelerator_ready may go"
        ft.accelerator_ready(tr)
        assert is_initialized()
