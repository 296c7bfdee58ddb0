"""Benchmark: ftnb's SFT against raw TRL, in one process, interleaved, on the ShareGPT file in ../shared/data.

1. Overhead: ftnb's `sft()` Run against a raw `trl.SFTTrainer` given exactly the same config and tokenized
   data. Same work, so the ratio of tokens/s measures what ftnb adds (callbacks, events, the console view,
   metrics.jsonl, atomic checkpoints). Target: median ratio >= 0.98.
2. Defaults: `sft(model, data)` with ftnb's defaults against `SFTTrainer` with TRL's defaults (only what a
   CPU needs to run at all: bf16=False, use_cpu=True). Ratio of non-pad tokens/s. Target >= 1.3.
3. Checkpointing: ftnb's defaults against the same with activation checkpointing on (TRL's default), to
   show what that one decision is worth on this hardware.

Tokens are counted by transformers (`include_num_input_tokens_seen='non_padding'`), time from the first
to the last step (model loading and data preparation excluded). Usage:
    python bench/sft_speed.py [--steps 8] [--repeats 3] [--which overhead,defaults,checkpointing] [--out bench/results.json]
"""
import argparse, json, statistics, time, sys, os, tempfile, warnings
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1')
warnings.filterwarnings('ignore')
from transformers import TrainerCallback

DATA = Path(__file__).resolve().parent.parent.parent/'shared'/'data'/'fastchat_identity.json'

class Clock(TrainerCallback):
    "Time from the end of the first step (warm-up excluded) to the end of training, and the tokens in between."
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 1: self.t0, self.tok0 = time.perf_counter(), state.num_input_tokens_seen
    def on_train_end(self, args, state, control, **kw):
        self.seconds = time.perf_counter() - self.t0; self.tokens = state.num_input_tokens_seen - self.tok0

def tokens_per_s(trainer):
    c = Clock(); trainer.add_callback(c); trainer.train()
    return c.tokens / c.seconds, c.tokens, c.seconds

def ftnb_run(data, steps, **kw):
    from ftnb.models import load_model
    from ftnb.sft import sft
    run = sft(load_model(), data, max_steps=steps, run_dir=tempfile.mkdtemp(), include_num_input_tokens_seen='non_padding', **kw)
    run._build()
    from ftnb.views import ConsoleView
    ConsoleView(run, file=open(os.devnull, 'w'))  # the console view is part of what ftnb runs, drawn to nowhere
    c = Clock(); run.trainer.add_callback(c)
    run.start(background=False, quiet=True)
    return c.tokens / c.seconds, c.tokens, c.seconds, run

def raw_same(run_template, steps):
    "A raw SFTTrainer with ftnb's config and tokenized data."
    import dataclasses
    from trl import SFTTrainer
    from ftnb.models import load_model
    args = dataclasses.replace(run_template.args, output_dir=tempfile.mkdtemp())
    tr = SFTTrainer(model=load_model().model, args=args, train_dataset=run_template.train_dataset,
                    processing_class=run_template.tokenizer, **run_template.trainer_kwargs)
    return tokens_per_s(tr)

def raw_defaults(rows, steps):
    from trl import SFTConfig, SFTTrainer
    from ftnb.models import load_model
    from datasets import Dataset
    m = load_model()
    args = SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=steps, bf16=False, use_cpu=True, report_to='none',
                     include_num_input_tokens_seen='non_padding', save_strategy='no')
    return tokens_per_s(SFTTrainer(model=m.model, args=args, train_dataset=Dataset.from_list(rows), processing_class=m.tokenizer))

def main():
    p = argparse.ArgumentParser(); p.add_argument('--steps', type=int, default=8); p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--which', default='overhead,defaults,checkpointing', help='comma-separated comparisons to run')
    p.add_argument('--out', default=str(Path(__file__).parent/'results.json')); a = p.parse_args()
    which = a.which.split(',')
    if not DATA.exists(): sys.exit(f"needs {DATA}")
    from ftnb.data import load_data
    data = load_data(DATA)
    res = dict(steps=a.steps, repeats=a.repeats, overhead=[], defaults=[], checkpointing=[])
    for i in range(a.repeats):  # interleaved: each pair runs back to back, alternating which goes first
        if 'checkpointing' in which:
            from ftnb.run import CHECKPOINTING
            runs = [ftnb_run(data, a.steps, save_steps=a.steps // 2, **{CHECKPOINTING: c}) for c in ((False, True) if i % 2 == 0 else (True, False))]
            off, on = (runs[0][0], runs[1][0]) if i % 2 == 0 else (runs[1][0], runs[0][0])
            res['checkpointing'].append(dict(off=off, on=on, ratio=off / on))
            print(f"checkpointing {i}: off {off:.1f} tok/s, on {on:.1f} tok/s, ratio {off/on:.3f}", flush=True)
        if 'overhead' in which:
            if i % 2 == 0:
                f = ftnb_run(data, a.steps, save_steps=a.steps // 2); r = raw_same(f[3], a.steps)
            else:
                import dataclasses
                tmpl = ftnb_run(data, 1, save_steps=a.steps // 2)[3]  # only to build the same config and data
                tmpl.args = dataclasses.replace(tmpl.args, max_steps=a.steps)
                r = raw_same(tmpl, a.steps); f = ftnb_run(data, a.steps, save_steps=a.steps // 2)
            res['overhead'].append(dict(ftnb=f[0], raw=r[0], ratio=f[0] / r[0]))
            print(f"overhead {i}: ftnb {f[0]:.1f} tok/s, raw TRL same settings {r[0]:.1f} tok/s, ratio {f[0]/r[0]:.3f}", flush=True)
        if 'defaults' in which:
            if i % 2 == 0:
                d = raw_defaults(data.rows, a.steps); fd = ftnb_run(data, a.steps, save_steps=a.steps // 2)
            else:
                fd = ftnb_run(data, a.steps, save_steps=a.steps // 2); d = raw_defaults(data.rows, a.steps)
            res['defaults'].append(dict(ftnb=fd[0], trl=d[0], ratio=fd[0] / d[0]))
            print(f"defaults {i}: ftnb defaults {fd[0]:.1f} tok/s, TRL defaults {d[0]:.1f} tok/s, ratio {fd[0]/d[0]:.3f}", flush=True)
    for k in ('overhead', 'defaults', 'checkpointing'):
        if res[k]: res[f'{k}_median_ratio'] = statistics.median(x['ratio'] for x in res[k])
    if res['overhead']: print(f"median ratio, ftnb / raw TRL with the same settings: {res['overhead_median_ratio']:.3f} (target >= 0.98)")
    if res['defaults']: print(f"median ratio, ftnb defaults / TRL defaults (non-pad tokens/s): {res['defaults_median_ratio']:.3f} (target >= 1.3)")
    if res['checkpointing']: print(f"median ratio, checkpointing off / on: {res['checkpointing_median_ratio']:.3f}")
    out = Path(a.out); old = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps(old | {k: v for k, v in res.items() if v}, indent=2))

if __name__ == '__main__': main()
