"""ftnb's benchmark: every speed and memory measurement, as ratios against raw TRL in one run, on this machine.

    python bench/speed.py                           # every section (about 25 minutes on 2 CPU cores)
    python bench/speed.py --only precision,memory   # some sections; the others are kept from bench/results.json

Sections:
- precision: a matrix product in float32 and bfloat16 (GFLOP/s), and forward+backward of the embedded
  SmolLM2-135M under LoRA on 8x256 tokens in float32, with bfloat16 weights, and under autocast; the
  model-FLOPs utilisation (MFU) of each against the probe of its precision.
- overhead: ftnb's `sft()` Run against a raw `trl.SFTTrainer` given the same config, tokenized data and answers-only
  scoring (what ftnb adds: callbacks, events, the console view, metrics.jsonl, atomic checkpoints). Target >= 0.98.
- defaults: `sft(model, data)` with ftnb's defaults against `SFTTrainer` with TRL's, non-pad tokens/s, on each workload
  (`WORKLOADS`: the ShareGPT identity file, and the quick start's short identity conversations). Target >= 3.
- memory: SFT on the ShareGPT file and DPO on hh-rlhf pairs (<= 1,200 characters, batch 8): the estimated
  training state against the measured one (peak minus memory in use before training), the peak resident
  memory, and the time estimate against the real duration. Targets: +-20% memory, +-25% time, DPO <= 4 GB.
- methods: seconds per optimizer step of every method with its defaults.
- generation: ftnb's `generate` (prompts sorted by length, as many rows a batch as memory allows) against plain
  `model.generate` on 8 prompts at a time in their order (what ftnb did before, and what a user writes), on 64 GSM8K
  questions, 64 new tokens, greedy: new tokens/s and how many answers are identical. Target >= 2 with all identical.

Every measured training runs in its own process (`--child`), so one run's memory never counts in another's;
pairs run back to back and alternate which goes first. Time runs from the end of the first step (warm-up)
to the end of training. Results go to bench/results.json, and the tables to the speed section of
nbs/index.ipynb (then `ftnb readme` writes README.md).
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path
os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('TRL_EXPERIMENTAL_SILENCE', '1')
warnings.filterwarnings('ignore')

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent/'shared'/'data'
SHAREGPT, HH, GSM8K = DATA/'fastchat_identity.json', DATA/'hh_rlhf_harmless_test.jsonl.gz', DATA/'gsm8k_train.jsonl'

# ---------------------------------------------------------------- children: one measured training each
def clock():
    from transformers import TrainerCallback
    class Clock(TrainerCallback):
        "Time and non-pad tokens from the end of the first step (warm-up) to the end of training."
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 1: self.t0, self.tok0 = time.perf_counter(), state.num_input_tokens_seen
        def on_train_end(self, args, state, control, **kw):
            self.seconds, self.steps = time.perf_counter() - self.t0, state.global_step - 1
            self.tokens = state.num_input_tokens_seen - self.tok0
    return Clock()

def _timed(c) -> dict:
    return dict(tok_s=c.tokens / c.seconds if c.tokens else None, s_step=c.seconds / max(1, c.steps))

WORKLOADS = dict(sharegpt="the ShareGPT identity file (500 conversations, single and multi-turn)",
                 persona="short identity conversations (the quick start's 240 persona rows, one question and answer each)")

def _rows(workload='sharegpt'):
    "The rows of a workload, as `load_data` gives them."
    from ftnb.all import load_data, persona_data
    return load_data(SHAREGPT, ignore=['id']) if workload == 'sharegpt' else load_data(persona_data(n=240), quiet=True)

def _sft_run(steps, workload='sharegpt', **kw):
    from ftnb.all import sft, load_model
    return sft(load_model(), _rows(workload), max_steps=steps, run_dir=tempfile.mkdtemp(), save_steps=10_000,
               include_num_input_tokens_seen='non_padding', **kw)

def _ftnb(run) -> dict:
    "Train a ready Run as a user would (console view drawn to nowhere), timed, with its estimates and measurements."
    from ftnb.views import ConsoleView
    from ftnb.budget import training_state_gb
    run._build(); ConsoleView(run, file=open(os.devnull, 'w'))
    c = clock(); run.trainer.add_callback(c)
    t = time.perf_counter(); run.start(background=False, quiet=True); wall = time.perf_counter() - t
    a = run.args
    return _timed(c) | dict(estimate_gb=training_state_gb(run.estimate), measured_gb=run.training_gb, peak_gb=run.peak_gb,
                            est_s_step=run.step_seconds, steps=run.step, seconds=wall, dtype='bfloat16' if a.bf16 else 'float32',
                            per_device=a.per_device_train_batch_size, accumulation=a.gradient_accumulation_steps)

def child_sft(steps, workload='sharegpt'): return _ftnb(_sft_run(steps, workload))

def child_raw_same(steps):
    "A raw SFTTrainer with the config, tokenized data and LM-head scoring ftnb's sft() would use: what is left is ftnb's wrapper."
    import dataclasses
    from trl import SFTTrainer
    from ftnb.models import load_model
    from ftnb.trainer import score_answers_only
    run = _sft_run(steps)
    score_answers_only()
    args = dataclasses.replace(run.args, output_dir=tempfile.mkdtemp())
    tr = SFTTrainer(model=load_model().model, args=args, train_dataset=run.train_dataset, processing_class=run.tokenizer, **run.trainer_kwargs)
    c = clock(); tr.add_callback(c); tr.train()
    return _timed(c)

def child_raw_defaults(steps, workload='sharegpt'):
    "SFTTrainer with TRL's defaults, as a user who sets nothing gets them on this machine."
    from trl import SFTConfig, SFTTrainer
    from datasets import Dataset
    from ftnb.all import load_model
    m = load_model(dtype='float32')  # from_pretrained's default
    kw = {}
    try: SFTConfig(output_dir=tempfile.mkdtemp())  # TRL's default bf16=True: it runs on a CPU that has it, else fp32 is what runs
    except Exception: kw = dict(bf16=False)
    args = SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=steps, report_to='none', save_strategy='no',
                     include_num_input_tokens_seen='non_padding', **kw)
    tr = SFTTrainer(model=m.model, args=args, train_dataset=Dataset.from_list(_rows(workload).rows), processing_class=m.tokenizer)
    c = clock(); tr.add_callback(c); tr.train()
    return _timed(c) | dict(bf16=args.bf16, checkpointing=bool(getattr(args, 'gradient_checkpointing', False) or getattr(args, 'activation_checkpointing', False)))

def _hh_pairs(n=400):
    from ftnb.all import load_data
    hh = load_data(HH)
    short = [r for r in hh.rows if sum(len(m['content']) for k in ('prompt', 'chosen', 'rejected') for m in r[k]) <= 1200]
    return load_data(short[:n])

def child_dpo(steps):
    from ftnb.all import dpo, load_model
    r = _ftnb(dpo(load_model(), _hh_pairs(), max_steps=steps, batch_size=8, run_dir=tempfile.mkdtemp(), save_steps=10_000))
    return r | dict(s_pair=r['s_step'] / 8)

def child_method(name, steps):
    from ftnb.all import load_model, load_data, sft, dpo, kto, orpo, reward_model, grpo, rloo, arithmetic_data
    m = load_model()
    pairs = _hh_pairs(64)
    common = dict(max_steps=steps, save_steps=10_000, run_dir=tempfile.mkdtemp())
    prompts = load_data(arithmetic_data(32, seed=3), system="Answer in one short sentence that ends with: The answer is <number>.")
    make = dict(sft=lambda: sft(m, [dict(messages=r['prompt'] + r['chosen']) for r in pairs.rows], **common),
                dpo=lambda: dpo(m, pairs, **common), kto=lambda: kto(m, pairs, **common), orpo=lambda: orpo(m, pairs, **common),
                reward=lambda: reward_model(m, pairs, **common),
                grpo=lambda: grpo(m, prompts, rewards=['exact_match', 'format'], num_generations=4, max_completion_length=64, **common),
                rloo=lambda: rloo(m, prompts, rewards=['exact_match', 'format'], num_generations=4, max_completion_length=64, **common))
    return _ftnb(make[name]())

def child_precision(repeats=3):
    "Forward+backward of the embedded model under LoRA on 8x256 tokens, four ways, interleaved; medians."
    import torch
    from peft import get_peft_model
    from ftnb.core import matmul_gflops
    from ftnb.models import load_model, lora_config
    from ftnb.budget import step_flops
    peak = {d: matmul_gflops(d, n=2048) for d in ('float32', 'bfloat16')}
    torch.manual_seed(0); ids = torch.randint(100, 40000, (8, 256))
    modes = {'float32': ('float32', False), 'bfloat16 weights': ('bfloat16', False),
             'float32 weights, autocast': ('float32', True), 'bfloat16 weights, autocast': ('bfloat16', True)}
    nets = {k: get_peft_model(load_model(dtype=dt).model, lora_config()).train() for k, (dt, _) in modes.items()}
    times, losses = {k: [] for k in modes}, {}
    for _ in range(repeats + 1):  # the first round warms up
        for k, (dt, ac) in modes.items():
            net = nets[k]; net.zero_grad(set_to_none=True)
            t = time.perf_counter()
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=ac): out = net(input_ids=ids, labels=ids)
            out.loss.backward(); times[k].append(time.perf_counter() - t); losses[k] = out.loss.item()
    net = nets['float32']
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    flops = step_flops(net, ids.numel(), trainable, seq=256)
    res = {}
    for k, (dt, ac) in modes.items():
        s = statistics.median(times[k][1:]); p = peak['bfloat16' if dt == 'bfloat16' or ac else 'float32']
        res[k] = dict(seconds=s, tok_s=ids.numel() / s, mfu=flops / s / (p * 1e9), loss=losses[k])
    # TRL's fused LM head, as its trainers call it, on rows whose first half is prompt: every position scored, then answers only
    import trl.trainer.utils as tu
    from ftnb.trainer import score_answers_only
    net = nets['bfloat16 weights, autocast']
    tu.add_fused_lm_head(net.get_base_model(), outputs=('log_probs', 'entropy', 'is_top1'))
    labels = ids.clone(); labels[:, :128] = -100
    half = step_flops(net, ids.numel(), trainable, seq=256, scored=.5)
    for k in ("TRL's head, every position", "TRL's head, answers only"):
        if 'answers' in k: score_answers_only()
        ts = []
        for _ in range(repeats + 1):
            net.zero_grad(set_to_none=True); t = time.perf_counter()
            with torch.autocast('cpu', dtype=torch.bfloat16): out = net(input_ids=ids, labels=labels, fused_lm_head=True)
            out.loss.backward(); ts.append(time.perf_counter() - t)
        s = statistics.median(ts[1:])
        res[k] = dict(seconds=s, tok_s=ids.numel() / s, mfu=half / s / (peak['bfloat16'] * 1e9), loss=out.loss.item())
    return dict(matmul_gflops=peak, modes=res, flops=flops)

def child_generation(repeats=3, prompts=64, new_tokens=64):
    """Plain `model.generate`, 8 prompts at a time in their order, against ftnb's `generate` with its defaults, in one
    process (one model), alternating which goes first; greedy."""
    import torch
    from ftnb.models import load_model, with_pad_token, generation_rows
    from ftnb.chat import chat_text
    m = load_model(); net, tok = m.model, with_pad_token(m.tokenizer)
    qs = [json.loads(l)['question'] for l in open(GSM8K)][:prompts]
    def plain():
        tok.padding_side = 'left'; net.eval(); out = []
        for i in range(0, len(qs), 8):
            texts = [chat_text(tok, [dict(role='user', content=q)], generation_prompt=True) for q in qs[i:i + 8]]
            enc = tok(texts, return_tensors='pt', padding=True, add_special_tokens=False)
            with torch.no_grad():
                ids = net.generate(**enc, max_new_tokens=new_tokens, do_sample=False, temperature=None, top_p=None,
                                   top_k=None, pad_token_id=tok.pad_token_id)
            out.append(ids[:, enc['input_ids'].shape[1]:])
        tok.padding_side = 'right'
        return [s.strip() for o in out for s in tok.batch_decode(o, skip_special_tokens=True)]
    def fast(): return m.generate(qs, max_new_tokens=new_tokens, progress=False)
    def new_tokens_of(answers): return sum(len(tok(a, add_special_tokens=False)['input_ids']) + 1 for a in answers)
    fast()  # warm-up
    out, answers = [], {}
    for i in range(repeats):
        t = {}
        for name, f in ((('plain', plain), ('ftnb', fast)) if i % 2 == 0 else (('ftnb', fast), ('plain', plain))):
            t0 = time.perf_counter(); answers[name] = f(); t[name] = time.perf_counter() - t0
        n = new_tokens_of(answers['plain'])
        out.append(dict(ftnb=dict(seconds=t['ftnb'], tok_s=n / t['ftnb']), trl=dict(seconds=t['plain'], tok_s=n / t['plain']),
                        ratio=t['plain'] / t['ftnb']))
    same = sum(a == b for a, b in zip(answers['ftnb'], answers['plain']))
    longest = max(len(tok(chat_text(tok, [dict(role='user', content=q)], generation_prompt=True))['input_ids']) for q in qs)
    return dict(pairs=out, median_ratio=statistics.median(p['ratio'] for p in out), identical=same, answers=len(qs),
                rows=generation_rows(net, longest + new_tokens), new_tokens=new_tokens,
                dtype=str(next(net.parameters()).dtype).replace('torch.', ''))

def _category(name, shapes, r, vocab):
    "Where a profiled op's time goes: the body's, LoRA's or the head's matrix products, attention, the loss, the rest."
    dims = {d for sh in shapes for d in (sh or [])}
    if name in ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm'):
        return 'vocabulary head (matmul)' if vocab in dims else 'LoRA adapters (matmul, rank %d)' % r if r in dims else 'linear layers (matmul)'
    if 'attention' in name or 'softmax' in name and 'log' not in name: return 'attention'
    if 'cross_entropy' in name or 'log_softmax' in name or 'nll_loss' in name: return 'loss'
    if name in ('aten::copy_', 'aten::clone', 'aten::contiguous', 'aten::cat', 'aten::to', 'aten::_to_copy', 'aten::embedding_dense_backward',
                'aten::index_select', 'aten::embedding'): return 'copies and lookups'
    return 'elementwise (norms, SiLU, residual adds, dropout, the head\'s log-sum-exp)'

def child_profile(dtype='float32', repeats=2):
    """Where forward+backward of the embedded model under LoRA (8x256 tokens, answers-only head on the second half) spends
    its time, by kind of op (torch.profiler, self time), with each kind's FLOP/s where it is a matrix product; then the
    optimizer step. The probe of this precision is the peak."""
    import torch
    from collections import defaultdict
    from torch.profiler import profile, ProfilerActivity
    from peft import get_peft_model
    from ftnb.core import matmul_gflops
    from ftnb.models import load_model, lora_config
    from ftnb.budget import step_flops
    from ftnb.trainer import score_answers_only
    import trl.trainer.utils as tu
    peak = matmul_gflops(dtype, n=2048)
    torch.manual_seed(0); ids = torch.randint(100, 40000, (8, 256)); labels = ids.clone(); labels[:, :128] = -100
    cfg = lora_config(); net = get_peft_model(load_model(dtype=dtype).model, cfg).train()
    tu.add_fused_lm_head(net.get_base_model(), outputs=('log_probs', 'entropy', 'is_top1'))
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    vocab = net.config.vocab_size
    def step():
        with score_answers_only(): out = net(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
    step(); net.zero_grad(set_to_none=True)  # warm-up
    walls = []
    for _ in range(repeats):
        t = time.perf_counter(); step(); walls.append(time.perf_counter() - t)
        t = time.perf_counter(); opt.step(); opt.zero_grad(set_to_none=True); walls[-1] = (walls[-1], time.perf_counter() - t)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        step()
    opt.zero_grad(set_to_none=True)
    # TRL's head projects the vocabulary in tiles and folds each into a log-sum-exp with torch ops on a CPU: its matmuls
    # and elementwise ops hide among the body's. Its cost, by subtraction: the same step scoring one token a row.
    full, labels[:] = labels.clone(), -100
    labels[:, -1] = ids[:, -1]
    lean = []
    for _ in range(repeats):
        t = time.perf_counter(); step(); lean.append(time.perf_counter() - t); net.zero_grad(set_to_none=True)
    labels[:] = full
    secs, flops = defaultdict(float), defaultdict(float)
    for e in prof.key_averages(group_by_input_shape=True):
        if e.self_cpu_time_total <= 0: continue
        k = _category(e.key, e.input_shapes or [], cfg.r, vocab)
        secs[k] += e.self_cpu_time_total / 1e6; flops[k] += (e.flops or 0)
    fb = statistics.median(w[0] for w in walls); o = statistics.median(w[1] for w in walls)
    scale = fb / sum(secs.values())  # the profiler's own cost stretches every op alike: shares are what count
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    model_flops = step_flops(net, ids.numel(), trainable, seq=256, scored=.5)
    rows = {k: dict(seconds=v * scale, share=v / sum(secs.values()), gflops=flops[k] / (v * scale) / 1e9 if flops[k] and 'matmul' in k else None)
            for k, v in sorted(secs.items(), key=lambda kv: -kv[1])}
    return dict(dtype=dtype, peak_gflops=peak, seconds=fb, optimizer_seconds=o, mfu=model_flops / fb / (peak * 1e9),
                head_seconds=fb - statistics.median(lean),
                model_gflop=model_flops / 1e9, kinds=rows, cpu_bf16=__import__('ftnb.core', fromlist=['cpu_bf16']).cpu_bf16())

CHILDREN = dict(generation=child_generation, profile=child_profile, sft=child_sft, raw_same=child_raw_same, raw_defaults=child_raw_defaults, dpo=child_dpo, method=child_method,
                precision=child_precision)

def child(name, *args) -> dict:
    "Run one measurement in a fresh process; its last output line is the JSON result."
    cmd = [sys.executable, __file__, '--child', name, *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode: sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])

# ---------------------------------------------------------------- sections
def pairs(a_name, a_args, b_name, b_args, repeats, key='tok_s'):
    "`repeats` pairs run back to back, alternating which goes first; each with its ratio a/b."
    out = []
    for i in range(repeats):
        a, b = (child(a_name, *a_args), child(b_name, *b_args)) if i % 2 == 0 else tuple(reversed((child(b_name, *b_args), child(a_name, *a_args))))
        out.append(dict(ftnb=a, trl=b, ratio=a[key] / b[key]))
        print(f"  {a_name} vs {b_name} {i}: {a[key]:.1f} vs {b[key]:.1f}, ratio {a[key] / b[key]:.3f}", flush=True)
    return dict(pairs=out, median_ratio=statistics.median(p['ratio'] for p in out))

def section_precision(a): return child('precision')
def section_overhead(a): return pairs('sft', [a.steps], 'raw_same', [a.steps], a.repeats)
def section_defaults(a): return {w: pairs('sft', [a.steps, w], 'raw_defaults', [a.steps, w], a.repeats) for w in WORKLOADS}
def section_memory(a): return dict(sft=child('sft', a.steps), dpo=child('dpo', a.steps))
def section_methods(a):
    return {n: child('method', n, 4) for n in ('sft', 'dpo', 'kto', 'orpo', 'reward', 'grpo', 'rloo')}

def section_generation(a): return child('generation', a.repeats)
def section_profile(a):
    from ftnb.core import cpu_bf16
    return child('profile', 'bfloat16' if cpu_bf16() else 'float32')

SECTIONS = dict(precision=section_precision, overhead=section_overhead, defaults=section_defaults, memory=section_memory, methods=section_methods,
                generation=section_generation, profile=section_profile)

# ---------------------------------------------------------------- tables
def _pct(est, real): return f"{(est / real - 1) * 100:+.0f}%"

def tables(res:dict, machine:str) -> str:
    out = [f"Measured by `python bench/speed.py` on {machine}, except where a table names another machine. Each table comes from one run "
           "of its section (`--only` reruns a section alone); pairs inside a run alternate which goes first.", '']
    def where(*names):
        "A line naming the machine a section was measured on, where it is not the header's."
        m = {res[n].get('machine', machine) for n in names if n in res} - {machine}
        if m: out.extend([f"_Measured on {', '.join(sorted(m))}._", ''])
    where('precision')
    if 'precision' in res:
        p = res['precision']; g = p['matmul_gflops']
        out += [f"**Precision.** A 2048² matrix product runs at {g['float32']:.0f} GFLOP/s in float32 and {g['bfloat16']:.0f} in "
                f"bfloat16 ({g['bfloat16'] / g['float32']:.1f}x). Forward and backward of SmolLM2-135M under LoRA, 8x256 tokens:", '',
                '| precision | s | tokens/s | vs float32 | MFU | loss |', '|---|---|---|---|---|---|']
        base = p['modes']['float32']['seconds']
        out += [f"| {k} | {v['seconds']:.2f} | {v['tok_s']:.0f} | {base / v['seconds']:.2f}x | {v['mfu']:.0%} | {v['loss']:.3f} |" for k, v in p['modes'].items()]
        if any('head' in k for k in p['modes']):
            out += ['', "The first rows take the loss from the full logits (transformers' own loss, every token a target). The rows on TRL's head "
                    "run its fused LM head as TRL's trainers call it (bf16 weights, autocast), on rows whose first half is prompt: scoring "
                    "every position is what TRL does on a CPU; scoring the answers only is what it does on GPUs, and what ftnb makes it do "
                    "on a CPU (`score_answers_only`). Their MFU counts the vocabulary projection on the scored half only."]
        out.append('')
    rows = []
    def on(name):
        "A row's own machine, where its section ran on another than the header's (one table can hold two sections)."
        m = res[name].get('machine', machine)
        return '' if m == machine else f" (measured on {m})"
    if 'overhead' in res:
        o = res['overhead']; f = statistics.median(x['ftnb']['tok_s'] for x in o['pairs']); t = statistics.median(x['trl']['tok_s'] for x in o['pairs'])
        rows.append(f"| ftnb's `sft()` Run vs a raw `SFTTrainer` with the same config and data (overhead){on('overhead')} | {f:.0f} tok/s | {t:.0f} tok/s | "
                    f"{o['median_ratio']:.2f} ({min(x['ratio'] for x in o['pairs']):.2f}–{max(x['ratio'] for x in o['pairs']):.2f}) | ≥ 0.98 |")
    for w, d in ((w, res['defaults'][w]) for w in WORKLOADS if w in res.get('defaults', {})):
        f = statistics.median(x['ftnb']['tok_s'] for x in d['pairs']); t = statistics.median(x['trl']['tok_s'] for x in d['pairs'])
        trl, r = d['pairs'][0]['trl'], [x['ratio'] for x in d['pairs']]
        rows.append(f"| ftnb's defaults vs TRL's defaults ({'bf16' if trl.get('bf16') else 'fp32'}, full fine-tuning"
                    f"{', checkpointing' if trl.get('checkpointing') else ''}) on {WORKLOADS[w]}, non-pad tokens/s{on('defaults')} | {f:.0f} tok/s | "
                    f"{t:.0f} tok/s | {d['median_ratio']:.2f} ({min(r):.2f}–{max(r):.2f}) | ≥ 3 |")
    if rows: out += ['| comparison | ftnb | TRL | median ratio (range) | target |', '|---|---|---|---|---|', *rows, '']
    under = [w for w, d in res.get('defaults', {}).items() if isinstance(d, dict) and d['median_ratio'] < 3 and d['pairs'][0]['ftnb'].get('dtype') == 'float32']
    if under:  # why a workload is under 3x where both sides train in float32
        mfu = f" (ftnb's LoRA step runs at {res['profile']['mfu']:.0%} of the CPU's peak: the profile below)" if 'mfu' in res.get('profile', {}) else ''
        modes = res.get('precision', {}).get('modes', {})
        amp = (f" On the machine of the precision table, autocast made the same LoRA step "
               f"{modes['float32']['seconds'] / modes['float32 weights, autocast']['seconds']:.1f}x faster." if 'float32 weights, autocast' in modes else '')
        out += [f"Under 3x ({', '.join(under)}): this CPU has no bfloat16, so ftnb trains in float32 like TRL's defaults, and the ratio "
                "is one of arithmetic alone. Per token, a LoRA step computes the forward pass and the activations' gradients (about 4 "
                "FLOPs per weight); TRL's defaults, full fine-tuning with gradient checkpointing, compute the forward pass twice and "
                "both gradients (about 8), and score every position where ftnb scores the answers. At the same share of the CPU's "
                f"peak{mfu} that bounds the ratio near 2 to 2.5x. The rest of the 3x is bfloat16 autocast, which ftnb turns on "
                f"where the CPU or GPU has it.{amp}", '']
    where('memory')
    if 'memory' in res:
        out += ['| run | micro-batches | training state: estimate / measured | peak resident | s/step: estimate / measured | duration |',
                '|---|---|---|---|---|---|']
        for k, r in ((k, r) for k, r in res['memory'].items() if isinstance(r, dict)):
            label = dict(sft='SFT, ShareGPT file', dpo='DPO, hh-rlhf pairs ≤ 1,200 characters')[k]
            out.append(f"| {label}, {r['dtype']}, {r['steps']} steps | {r['accumulation']} x {r['per_device']} rows | "
                       f"{r['estimate_gb']:.2f} / {r['measured_gb']:.2f} GB ({_pct(r['estimate_gb'], r['measured_gb'])}) | {r['peak_gb']:.2f} GB | "
                       f"{r['est_s_step']:.1f} / {r['s_step']:.1f} ({_pct(r['est_s_step'], r['s_step'])}) | {r['seconds']:.0f} s |")
        out.append('')
    where('methods')
    if 'methods' in res:
        out += ['| method | s/step | micro-batches | precision |', '|---|---|---|---|']
        out += [f"| `{n}` | {r['s_step']:.1f} | {r['accumulation']} x {r['per_device']} | {r['dtype']} |" for n, r in res['methods'].items() if isinstance(r, dict)]
        out.append('')
    where('profile')
    if 'profile' in res:
        p = res['profile']
        out += [f"**Where a LoRA step's time goes** ({p['dtype']}, SmolLM2-135M, 8x256 tokens, TRL's head on the answer half): forward and "
                f"backward {p['seconds']:.2f} s, {p['model_gflop']:.0f} GFLOP of model arithmetic, so {p['mfu']:.0%} of this CPU's "
                f"{p['peak_gflops']:.0f} GFLOP/s {p['dtype']} matrix-product probe (MFU); the optimizer step adds {p['optimizer_seconds']:.2f} s. "
                f"The vocabulary head (TRL's fused head: the projection in tiles, and a log-sum-exp over 49,152 columns done with "
                f"torch ops on a CPU) takes {p['head_seconds']:.2f} s of it ({p['head_seconds'] / p['seconds']:.0%}), measured by "
                "subtraction (the same step scoring one token a row); its ops are counted in the rows below. By kind of op "
                "(torch.profiler, self time):", '', '| kind | s | share | GFLOP/s |', '|---|---|---|---|']
        for k, v in p['kinds'].items():
            g = f"{v['gflops']:.0f}" if v['gflops'] else ''
            out.append(f"| {k} | {v['seconds']:.2f} | {v['share']:.0%} | {g} |")
        out.append('')
    where('generation')
    if 'generation' in res:
        g = res['generation']; r = [p['ratio'] for p in g['pairs']]
        f = statistics.median(p['ftnb']['tok_s'] for p in g['pairs']); t = statistics.median(p['trl']['tok_s'] for p in g['pairs'])
        out += ['| generation | ftnb `generate` | plain `model.generate`, 8 at a time | median ratio (range) | identical answers | target |',
                '|---|---|---|---|---|---|',
                f"| {g['answers']} GSM8K questions, {g['new_tokens']} new tokens, greedy, {g['dtype']} | {f:.0f} tok/s "
                f"({g['rows']} rows a batch) | {t:.0f} tok/s | {g['median_ratio']:.2f} ({min(r):.2f}–{max(r):.2f}) | "
                f"{g['identical']} of {g['answers']} | ≥ 2, all |", '']
    return '\n'.join(out).strip()

START, END = '<!-- bench/speed.py: start -->', '<!-- bench/speed.py: end -->'

def write_readme(md:str):
    "Put the tables between the markers of the speed section in nbs/index.ipynb, then regenerate README.md."
    nb_path = HERE.parent/'nbs'/'index.ipynb'
    nb = json.loads(nb_path.read_text())
    for c in nb['cells']:
        s = ''.join(c['source'])
        if START in s and END in s:
            s = s[:s.index(START) + len(START)] + '\n' + md + '\n' + s[s.index(END):]
            lines = s.split('\n'); c['source'] = [l + '\n' for l in lines[:-1]] + [lines[-1]]
            break
    else: print(f"no {START} marker in {nb_path}: tables not written"); return
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    subprocess.run([sys.executable, '-m', 'ftnb', 'readme'], cwd=HERE.parent, check=False)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--only', default='', help=f"comma-separated sections ({', '.join(SECTIONS)}); default all")
    ap.add_argument('--steps', type=int, default=8); ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--out', default=str(HERE/'results.json')); ap.add_argument('--no-readme', action='store_true')
    ap.add_argument('--tables', action='store_true', help='only write the tables from --out, measuring nothing')
    ap.add_argument('--child', nargs='+', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        name, *args = a.child
        print(json.dumps(CHILDREN[name](*[int(x) if x.isdigit() else x for x in args]))); return
    for f in (SHAREGPT, HH):
        if not f.exists(): sys.exit(f"needs {f} (the shared data folder beside the project)")
    out = Path(a.out); old = json.loads(out.read_text()) if out.exists() else {}
    res = dict(old.get('sections', {}))
    for sec in res.values():  # sections measured before each recorded its machine: the file's machine
        sec.setdefault('machine', old.get('machine', '').removeprefix('Hardware: '))
    if 'pairs' in res.get('defaults', {}):  # one workload before there were two: the ShareGPT file
        res['defaults'] = dict(sharegpt=res['defaults'], machine=res['defaults']['machine'])
    from ftnb.core import detect_hardware
    hw = detect_hardware()
    for name in ([] if a.tables else a.only.split(',') if a.only else SECTIONS):
        t = time.time(); print(f"{name}…", flush=True)
        res[name] = SECTIONS[name](a) | dict(minutes=round((time.time() - t) / 60, 1), machine=repr(hw).removeprefix('Hardware: '))
        out.write_text(json.dumps(dict(machine=repr(hw), steps=a.steps, repeats=a.repeats, sections=res), indent=1))
    md = tables(res, repr(hw).removeprefix('Hardware: '))
    print(md)
    if not a.no_readme: write_readme(md)

if __name__ == '__main__': main()
