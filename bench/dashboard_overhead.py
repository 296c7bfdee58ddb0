"""What watching costs: the same SFT run with and without the notebook dashboard attached.

The embedded SmolLM2-135M-Instruct with ftnb's defaults (LoRA), persona data, batch 8, logging every step, no
checkpoints. Conditions run interleaved (A B B A A B ...) after one warm-up run, so drift in the machine's speed
hits both alike. Each run trains in a background thread, as it does in Jupyter; the dashboard draws its chart and
progress from that thread as it would in a notebook (widget messages go to no front end here, which is the only
difference). The optional third condition adds sample answers every few steps, which cost generation time by design.

Seconds per step are timed from the end of step 1 to the end of the last step. Runs differ by several percent from
one another on this machine whatever is attached, so the script also times what the dashboard does in the training
thread (its listeners of log and sample events) within each run: that share has no run-to-run noise.

Usage: python bench/dashboard_overhead.py [--steps 10] [--repeats 3] [--samples] [--out bench/dashboard.json]
"""
import argparse, json, os, tempfile, time, statistics, warnings
os.environ.setdefault('HF_HUB_OFFLINE', '1')
warnings.filterwarnings('ignore')
from speed import clock  # seconds per step after the first (warm-up); this folder is on the path when run as a script


def one(cond:str, steps:int) -> dict:
    from ftnb.models import load_model
    from ftnb.example_data import persona_data
    from ftnb.sft import sft
    from ftnb.dashboard import Dashboard
    run = sft(load_model(), persona_data(n=96), max_steps=steps, run_dir=tempfile.mkdtemp(), logging_steps=1, save_strategy='no')
    run._build(); c = clock(); run.trainer.add_callback(c)
    spent, emit = [0.], run.events.emit
    def timed(event, **payload):  # time inside the views' listeners of log and sample events, in the training thread
        t = time.perf_counter(); emit(event, **payload)
        if event in ('log', 'eval', 'sample') and getattr(c, 't0', None): spent[0] += time.perf_counter() - t
    run.events.emit = timed
    d = None
    if cond == 'none': run.start(background=True, quiet=True)
    else:
        d = Dashboard(run, mode='background', samples_every=max(1, steps // 3) if cond == 'dashboard+samples' else 0)
        d.start()
    run.wait()
    return dict(condition=cond, s_per_step=(c.seconds / max(1, c.steps)), draws=d.live.draws if d else 0, samples=len(run.samples),
                sample_seconds=sum(s['seconds'] for s in run.samples), listener_share=spent[0] / ((c.seconds / max(1, c.steps)) * (steps - 1)))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=10); ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--samples', action='store_true'); ap.add_argument('--out', default='bench/dashboard.json')
    a = ap.parse_args()
    conds = ['none', 'dashboard'] + (['dashboard+samples'] if a.samples else [])
    one('none', 3)  # warm-up: caches, allocator, first-call costs
    runs = []
    for i in range(a.repeats):
        for c in (conds if i % 2 == 0 else conds[::-1]):
            r = one(c, a.steps); runs.append(r)
            print(f"{c:<18} {r['s_per_step']:.3f} s/step  draws {r['draws']}  samples {r['samples']} ({r['sample_seconds']:.1f} s)"
                  f"  in listeners {100 * r['listener_share']:.2f}%", flush=True)
    mean = {c: statistics.mean(r['s_per_step'] for r in runs if r['condition'] == c) for c in conds}
    res = dict(steps=a.steps, repeats=a.repeats, runs=runs, mean_s_per_step=mean,
               overhead=mean['dashboard'] / mean['none'] - 1,
               pairwise=[b['s_per_step'] / n['s_per_step'] - 1 for n, b in zip([r for r in runs if r['condition'] == 'none'],
                                                                            [r for r in runs if r['condition'] == 'dashboard'])])
    res['listener_share'] = statistics.mean(r['listener_share'] for r in runs if r['condition'] == 'dashboard')
    if a.samples: res['overhead_with_samples'] = mean['dashboard+samples'] / mean['none'] - 1
    json.dump(res, open(a.out, 'w'), indent=1)
    print(f"dashboard overhead: {100 * res['overhead']:+.1f}% (pairs: {', '.join(f'{100 * p:+.1f}%' for p in res['pairwise'])}); "
          f"time in the dashboard's listeners: {100 * res['listener_share']:.2f}% of training")
    if a.samples: print(f"with samples every {max(1, a.steps // 3)} steps: {100 * res['overhead_with_samples']:+.1f}%")

if __name__ == '__main__': main()
