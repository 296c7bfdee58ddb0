"Preference and RL recipes on the tiny model: real TRL trainers, chaining, references, metrics, errors, stop/resume."
import json, time, threading
import pytest, torch
from ftnb.core import FtnbError
from ftnb.models import tiny_model
from ftnb.example_data import preference_pairs, persona_data, arithmetic_data
from ftnb.sft import sft
from ftnb.prefs import dpo, kto, orpo, preference_accuracy
from ftnb.rewards import reward_model, model_reward, exact_match, format_reward, length_penalty
from ftnb.grpo import grpo, rloo
from ftnb.methods import method
from ftnb.rejection import rejection_sample


def _logits(net, tok, text="Tom has 3 boxes of 4 pens. How many pens?"):
    ids = tok(text, return_tensors='pt')
    net.eval()
    with torch.no_grad(): return net(**ids).logits


FP32 = dict(bf16=False)  # exact comparisons of logits: a run under bf16 autocast (this CPU's default) keeps its forward autocast

def test_sft_then_dpo_reference_is_the_sft_model(tmp_path):
    s = sft(tiny_model(), persona_data(n=16), max_steps=3, lr=1e-2, run_dir=tmp_path/'sft', **FP32).start(quiet=True)
    sft_logits = _logits(s.net, s.tokenizer)
    d = dpo(s, preference_pairs('correct', n=16), max_steps=3, batch_size=4, lr=1e-2, run_dir=tmp_path/'dpo', **FP32).start(quiet=True)
    assert d.state == 'finished'
    with d.net.disable_adapter():  # DPO's reference: its adapter off = the SFT model (adapter merged)
        assert torch.allclose(_logits(d.net, d.tokenizer), sft_logits, atol=1e-5)
    assert (_logits(d.net, d.tokenizer) - sft_logits).abs().max() > 1e-3  # DPO changed the policy
    assert torch.allclose(_logits(s.net, s.tokenizer), sft_logits)  # the SFT run kept its own model
    keys = set().union(*d.history)
    assert {'rewards/chosen', 'rewards/rejected', 'rewards/margins', 'rewards/accuracies'} <= keys
    assert any(json.loads(l).get('rewards/margins') is not None for l in open(tmp_path/'dpo'/'metrics.jsonl'))


def test_building_on_an_untrained_run_is_refused(tmp_path):
    s = sft(tiny_model(), persona_data(n=8), max_steps=1, run_dir=tmp_path)
    with pytest.raises(FtnbError, match='has not trained yet'): dpo(s, preference_pairs(n=8))


def test_dpo_learns_the_correct_answer_on_training_pairs(tmp_path):
    pairs = preference_pairs('correct', n=16)
    before = preference_accuracy(tiny_model(), pairs)
    r = dpo(tiny_model(), pairs, max_steps=30, batch_size=8, lr=5e-3, run_dir=tmp_path).start(quiet=True)
    after = preference_accuracy(r, pairs)
    assert before.implicit == .5 and after.implicit > .8, (before, after)
    assert after.margin > 0


def test_dpo_precomputed_reference(tmp_path):
    r = dpo(tiny_model(), preference_pairs(n=16), precompute_ref=True, max_steps=2, batch_size=4, run_dir=tmp_path).start(quiet=True)
    assert r.state == 'finished' and r.args.precompute_ref_log_probs
    assert 'rewards/margins' in r.history[-2]


def test_kto_splits_pairs_and_logs_rewards(tmp_path):
    r = kto(tiny_model(), preference_pairs(n=12), max_steps=2, batch_size=4, run_dir=tmp_path)
    labels = [x['label'] for x in r.train_dataset]
    assert len(labels) == 24 and sum(labels) == 12
    r.start(quiet=True)
    assert r.state == 'finished' and any('kl' in h for h in r.history)


def test_kto_estimates_its_kl_term_from_a_whole_device_batch(tmp_path):
    "KTO's KL term pairs rows within a device batch: a CPU's small micro-batches would leave it one swapped pair."
    r = kto(tiny_model(), preference_pairs(n=12), max_steps=1, batch_size=8, run_dir=tmp_path)
    assert (r.args.per_device_train_batch_size, r.args.gradient_accumulation_steps) == (8, 1)
    r2 = dpo(tiny_model(), preference_pairs(n=12), max_steps=1, batch_size=8, run_dir=tmp_path/'dpo')
    assert r2.args.per_device_train_batch_size < 8  # the CPU rule: DPO's pairs come a few at a time


def test_orpo_runs_without_reference(tmp_path):
    r = orpo(tiny_model(), preference_pairs(n=12), max_steps=2, batch_size=4, run_dir=tmp_path).start(quiet=True)
    assert r.state == 'finished' and any('log_odds_ratio' in h for h in r.history)
    assert 'reference model' not in r.estimate


def test_dpo_stop_and_resume(tmp_path):
    r = dpo(tiny_model(), preference_pairs(n=64), max_steps=12, batch_size=4, run_dir=tmp_path, save_steps=2)
    r.start(background=True, quiet=True)
    while r.step < 3 and r.state == 'running': time.sleep(.05)
    r.stop(wait=True)
    assert r.state == 'stopped' and r.step < 12
    r.resume(background=False)
    assert r.state == 'finished' and r.step == 12
    steps = [h['step'] for h in r.history if 'loss' in h]
    assert steps == sorted(set(steps))  # no step logged twice across the resume


def test_reward_model_learns_concise_pairs(tmp_path):
    pairs = preference_pairs('concise', n=32)
    r = reward_model(tiny_model(), pairs, max_steps=25, batch_size=8, lr=3e-3, run_dir=tmp_path).start(quiet=True)
    score = model_reward(r)
    good = score([p['prompt'] for p in pairs], [p['chosen'] for p in pairs])
    bad = score([p['prompt'] for p in pairs], [p['rejected'] for p in pairs])
    assert sum(g > b for g, b in zip(good, bad)) / len(pairs) > .8
    assert {'accuracy', 'margin'} <= set().union(*r.history)


def test_reward_functions():
    assert exact_match(["so 3 × 4 = 12.", "The answer is 13."], answer=['12', '12']) == [1., 0.]
    assert format_reward()(["The answer is 12.", "12"]) == [1., 0.]
    assert length_penalty(5, per_100=1.)(["abcde", "x" * 105]) == [0., -1.]


def test_grpo_logs_reward_metrics_per_function(tmp_path):
    r = grpo(tiny_model(), arithmetic_data(8), rewards=[exact_match, length_penalty(10)], num_generations=4,
             max_completion_length=12, max_steps=2, run_dir=tmp_path).start(quiet=True)
    assert r.state == 'finished'
    keys = set().union(*r.history)
    assert {'reward', 'reward_std', 'rewards/exact_match/mean', 'rewards/length/mean', 'rewards/length/std', 'kl',
            'completions/mean_length'} <= keys


def test_grpo_with_a_reward_model(tmp_path):
    rm = reward_model(tiny_model(), preference_pairs(n=8), max_steps=1, batch_size=4, run_dir=tmp_path/'rm').start(quiet=True)
    r = grpo(tiny_model(), arithmetic_data(4), rewards=rm, num_generations=2, max_completion_length=8, max_steps=1, run_dir=tmp_path/'g')
    r.start(quiet=True)
    assert r.state == 'finished' and 'rewards/reward_model/mean' in r.history[-2]


def test_rloo_is_a_record_and_a_recipe(tmp_path):
    "RLOO's record gives the trainer, the charts, the key settings and the learning rate; rewards by name."
    r = rloo(tiny_model(), arithmetic_data(8), rewards=['exact_match', 'length'], max_completion_length=12, max_steps=2, run_dir=tmp_path)
    assert type(r.args).__name__ == 'RLOOConfig' and r.args.num_generations == 4 and r.args.beta == 0.05
    assert r.args.learning_rate == pytest.approx(1e-4)  # LoRA's 1e-3 times the record's lr_scale
    r.start(quiet=True)
    assert r.state == 'finished' and type(r.trainer).__name__ == 'RLOOTrainer'
    assert set(method('rloo').metrics) | {'rewards/exact_match/mean', 'rewards/length/mean'} <= set().union(*r.history)

@pytest.mark.slow
def test_rloo_trains_the_embedded_model(tmp_path):
    "RLOO on SmolLM2-135M through its record: a few steps on arithmetic prompts, rewards logged, the adapter changes the answers' scores."
    from ftnb.models import load_model
    from ftnb.data import load_data
    problems = load_data(arithmetic_data(16, seed=3), system="Answer in one short sentence that ends with: The answer is <number>.")
    r = rloo(load_model(), problems, rewards=['exact_match', 'format'], max_completion_length=32, max_steps=3, lr=3e-4, run_dir=tmp_path)
    r.start(quiet=True)
    h = [x for x in r.history if 'reward' in x]
    assert r.state == 'finished' and len(h) == 3 and all('rewards/format/mean' in x and 'kl' in x for x in h)
    moved = [p.abs().max().item() for n, p in r.net.named_parameters() if 'lora_B' in n]
    assert moved and max(moved) > 0  # the policy has moved from the reference (LoRA's B starts at zero); bf16's KL estimate can be slightly negative

def test_grpo_bad_rewards_fail_before_training():
    with pytest.raises(FtnbError, match=r"needs the data column\(s\) \['answer'\]"): grpo(tiny_model(), persona_data(n=4))
    with pytest.raises(FtnbError, match='failed on row 0'): grpo(tiny_model(), arithmetic_data(4), rewards=lambda completions, **kw: 1 / 0)
    with pytest.raises(FtnbError, match='not a reward'):
        grpo(tiny_model(), arithmetic_data(4), rewards=sft(tiny_model(), persona_data(n=4)))


def test_rejection_sampling_keeps_the_best_and_pairs_feed_dpo(tmp_path):
    longer = lambda completions, **kw: [float(len(c[-1]['content'])) for c in completions]
    s = rejection_sample(tiny_model(), arithmetic_data(6), rewards=longer, num_generations=4, max_new_tokens=12, progress=False)
    summ = s.summary()
    assert summ['mean_best'] > summ['mean_all']
    best = s.best()
    assert len(best) == 6 and all(len(r['completion'][0]['content']) == max(map(len, a)) for r, a in zip(best.rows, s.answers))
    pairs = s.pairs()
    assert pairs.kind == 'preference' and len(pairs) == summ['pairs'] > 0
    r = dpo(tiny_model(), pairs, max_steps=1, batch_size=2, run_dir=tmp_path).start(quiet=True)
    assert r.state == 'finished'


def test_sft_then_grpo_starts_from_the_sft_model(tmp_path):
    s = sft(tiny_model(), persona_data(n=16), max_steps=2, lr=1e-2, run_dir=tmp_path/'sft', **FP32).start(quiet=True)
    sft_logits = _logits(s.net, s.tokenizer)
    g = grpo(s, arithmetic_data(4), rewards=length_penalty(5), num_generations=2, max_completion_length=8, max_steps=1,
             run_dir=tmp_path/'grpo', **FP32).start(quiet=True)
    assert g.state == 'finished' and 'sft run' in g.model.source
    with g.net.disable_adapter(): assert torch.allclose(_logits(g.net, g.tokenizer), sft_logits, atol=1e-5)


def test_dpo_adds_the_sft_loss_on_the_chosen_answers_when_asked(tmp_path):
    "A list of losses reaches TRL whole: ['sigmoid', 'sft'] is DPO's ln 2 at the first step plus the chosen answers' cross-entropy."
    import math
    pairs = preference_pairs('concise', n=8)
    runs = [dpo(tiny_model(seed=0), pairs, loss_type=k, max_steps=1, batch_size=4, run_dir=tmp_path/str(i)).start(quiet=True, background=False)
            for i, k in enumerate(['sigmoid', ['sigmoid', 'sft']])]
    plain, both = (r.history[0]['loss'] for r in runs)
    assert abs(plain - math.log(2)) < 1e-3 and both > plain + 5  # a random model's cross-entropy is about ln(49152) ≈ 10.8
