"""A training job for the kill/resume tests: tiny model, full fine-tuning, a checkpoint every 2 steps.
Usage: train_tiny.py RUN_DIR [--resume] [--slow SECONDS_PER_STEP] [--die-in-save STEP]"""
import sys, os, time, argparse
p = argparse.ArgumentParser()
p.add_argument('run_dir'); p.add_argument('--resume', action='store_true')
p.add_argument('--slow', type=float, default=0.); p.add_argument('--die-in-save', type=int, default=0)
a = p.parse_args()
from ftnb.models import tiny_model
from ftnb.example_data import persona_data
from ftnb.sft import sft
run = sft(tiny_model(seed=0), persona_data(n=64), lora=False, lr=1e-3, max_steps=10, batch_size=4, run_dir=a.run_dir,
          save_steps=2, logging_steps=1, seed=0)
if a.slow: run.on('log', lambda **kw: time.sleep(a.slow))
if a.die_in_save:
    from transformers import Trainer
    orig = Trainer._save_rng_state
    def dying(self, output_dir):
        if self.state.global_step == a.die_in_save: os.kill(os.getpid(), 9)  # weights and optimizer written, the rest not
        return orig(self, output_dir)
    Trainer._save_rng_state = dying
run.start(background=False, resume=a.resume)
print('STATE', run.state, run.step)
