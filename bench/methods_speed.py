"""Seconds per optimizer step of every training method, and ftnb's overhead over raw TRL for DPO and GRPO.

Each method runs on the embedded SmolLM2-135M-Instruct with its defaults (LoRA), batch 8, on the same data:
hh-rlhf pairs of up to 128 tokens from ../shared/data for SFT (the chosen side as a conversation), DPO,
KTO, ORPO and the reward model; the generated arithmetic prompts for GRPO (4 answers to each of 2 prompts
per step, up to 64 tokens each). The first step is warm-up and not timed.

For DPO and GRPO a raw TRL trainer given exactly ftnb's config, data and reward functions runs right after
ftnb's, so their ratio is what ftnb adds (callbacks, events, metrics file, atomic checkpoints).

Usage: python bench/methods_speed.py [--steps 4] [--out bench/methods.json] [--only dpo,grpo]
"""
import argparse, json, os, tempfile, time, warnings, dataclasses
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRL_EXPERIMENTAL_SILENCE', '1')
warnings.filterwarnings('ignore')
from transformers import TrainerCallback

DATA = Path(__file__).resolve().parent.parent.parent/'shared'/'data'/'hh_rlhf_harmless_test.jsonl.gz'

class Clock(TrainerCallback):
    "Seconds per step after the first (warm-up) step."
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 1: self.t0 = time.perf_counter()
    def on_train_end(self, args, state, control, **kw):
        self.per_step = (time.perf_counter() - self.t0) / max(1, state.global_step - 1)

def timed_run(run):
    run._build(); c = Clock(); run.trainer.add_callback(c)
    run.start(background=False, quiet=True)
    return c.per_step

def timed_raw(run):
    "The same trainer class, config, data and arguments as `run`, without ftnb's Run around it."
    from ftnb.models import load_model
    extra = dict(generation_batch_size=None) if hasattr(run.args, 'steps_per_generation') else {}  # GRPO derives one from the other
    args = dataclasses.replace(run.args, output_dir=tempfile.mkdtemp(), **extra)
    kw = dict(run.trainer_kwargs)
    tr = run.trainer_cls.__bases__[-1](model=load_model().model, args=args, train_dataset=run.train_dataset,
                                     processing_class=run.tokenizer, **kw)
    c = Clock(); tr.add_callback(c); tr.train()
    return c.per_step

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--steps', type=int, default=4); ap.add_argument('--out', default='bench/methods.json')
    ap.add_argument('--only', default='', help='comma-separated methods to (re)measure; the others are kept from --out')
    a = ap.parse_args()
    from ftnb.models import load_model
    from ftnb.data import load_data
    from ftnb.samples import arithmetic_data
    from ftnb.sft import sft
    from ftnb.prefs import dpo, kto, orpo
    from ftnb.rewards import reward_model, exact_match, format_reward
    from ftnb.grpo import grpo
    m = load_model()
    hh = load_data(DATA)
    pairs = load_data([r for r, l in zip(hh, hh.stats(m.tokenizer).lengths) if l <= 128][:64])
    convs = [dict(messages=r['prompt'] + r['chosen']) for r in pairs.rows if r['chosen'][0]['content']]
    prompts = load_data(arithmetic_data(32, seed=3), system="Answer in one short sentence that ends with: The answer is <number>.")
    n = a.steps
    res = json.loads(Path(a.out).read_text())['results'] if a.only and Path(a.out).exists() else {}
    common = dict(max_steps=n, save_steps=1000)
    recipes = dict(sft=lambda: sft(load_model(), convs, **common, run_dir=tempfile.mkdtemp()),
                   dpo=lambda: dpo(load_model(), pairs, **common, run_dir=tempfile.mkdtemp()),
                   kto=lambda: kto(load_model(), pairs, **common, run_dir=tempfile.mkdtemp()),
                   orpo=lambda: orpo(load_model(), pairs, **common, run_dir=tempfile.mkdtemp()),
                   reward=lambda: reward_model(load_model(), pairs, **common, run_dir=tempfile.mkdtemp()),
                   grpo=lambda: grpo(load_model(), prompts, rewards=[exact_match, format_reward()], num_generations=4,
                                     max_completion_length=64, **common, run_dir=tempfile.mkdtemp()))
    for name, make in recipes.items():
        if a.only and name not in a.only.split(','): continue
        run = make()
        res[name] = dict(ftnb_s_per_step=round(timed_run(run), 2))
        if name in ('dpo', 'grpo'):
            raw = timed_raw(make())
            res[name] |= dict(raw_trl_s_per_step=round(raw, 2), ratio_raw_over_ftnb=round(raw / res[name]['ftnb_s_per_step'], 3))
        print(name, res[name], flush=True)
    Path(a.out).write_text(json.dumps(dict(steps=n, batch=8, results=res), indent=2))

if __name__ == '__main__': main()
