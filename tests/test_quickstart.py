"""The quick start: its run folder on tiny_model (fast), the command line, and the real persona fine-tune (slow)."""
import json, subprocess, sys, os
from pathlib import Path
import pytest
from ftnb.quickstart import quickstart
from ftnb.views import history_plot
from ftnb.example_data import persona_questions, persona_data, everyday_questions

def test_run_folder_holds_adapter_settings_answers_and_plot(tmp_path, tiny):
    r = quickstart(model=tiny, max_steps=2, batch_size=2, root=tmp_path, max_new_tokens=3, quiet=True, lr=5e-4)
    files = {p.name for p in r.run_dir.iterdir()}
    assert {'adapter', 'settings.json', 'answers.json', 'loss.png'} <= files
    assert (r.run_dir/'adapter'/'adapter_config.json').exists()
    assert (r.run_dir/'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    s = json.loads((r.run_dir/'settings.json').read_text())
    assert s['settings']['lr'] == 5e-4 and s['settings']['persona'] == 'Quill' and s['trl_config']['max_steps'] == 2 and s['trl_config']['use_cpu'] is True
    ans = json.loads((r.run_dir/'answers.json').read_text())
    assert [a['question'] for a in ans] == persona_questions() + everyday_questions('check')
    assert len(r.losses) == 2 and 'held-out answers' in repr(r)

def test_adapter_reloads_onto_its_base(tmp_path, tiny):
    from peft import PeftModel
    from ftnb.models import tiny_model, generate
    r = quickstart(model=tiny_model(), max_steps=2, batch_size=2, root=tmp_path, max_new_tokens=5, quiet=True)
    back = PeftModel.from_pretrained(tiny_model().model, r.run_dir/'adapter')
    assert generate(back, tiny.tokenizer, r.questions[:3], max_new_tokens=5) == r.tuned[:3]

def test_loss_plot_without_losses_still_draws():
    fig = history_plot([{'step': 1, 'eval_loss': 2.0}])
    assert fig.axes[0].get_xlabel() == 'step'

def test_persona_rows_carry_the_name_and_no_held_out_question():
    rows = persona_data('Zeta', 'Acme', n=300)
    assert all('Zeta' in r['completion'][0]['content'] for r in rows)
    assert not {r['prompt'][0]['content'] for r in rows} & set(persona_questions())

def _ftnb(*args, **kw):
    return subprocess.run([sys.executable, '-m', 'ftnb', *args], capture_output=True, text=True, **kw)

def test_command_line_help_and_info():
    r = _ftnb('quickstart', '--help'); assert r.returncode == 0 and '--max-steps' in r.stdout
    r = _ftnb('info'); assert r.returncode == 0 and 'Hardware:' in r.stdout and 'trl' in r.stdout

def test_command_line_reports_a_bad_model_without_a_traceback(tmp_path):
    r = _ftnb('quickstart', '--model', 'no-such-model', '--root', str(tmp_path))
    assert r.returncode == 2 and "Unknown model 'no-such-model'" in r.stderr and 'Traceback' not in r.stderr

@pytest.mark.slow
def test_real_quickstart_runs_from_the_command_line(tmp_path):
    "The README's main job through its real entry point, cut to 4 steps: the run folder, answers before and after, the chart. (How well it teaches the name is checked once, in the quick start notebook's slow cell.)"
    r = _ftnb('quickstart', '--root', str(tmp_path), '--name', 'Quill', '--max-steps', '4', timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    run = next(tmp_path.iterdir())
    ans = json.loads((run/'answers.json').read_text())
    assert [a['question'] for a in ans] == persona_questions() + everyday_questions('check') and all(a['base'] and a['tuned'] for a in ans)
    assert not any('quill' in a['base'].lower() for a in ans)
    assert str(run) in r.stdout and (run/'loss.png').exists() and json.loads((run/'summary.json').read_text())['step'] == 4
