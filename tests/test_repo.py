"""The repository's own promises: the package matches the notebooks, README matches index.ipynb, CI runs the README's command."""
import re, subprocess
from pathlib import Path
from ftnb.devtools import readme_markdown, export_diff, clean_diff

ROOT = Path(__file__).resolve().parent.parent

def test_readme_is_generated_from_index_notebook():
    assert (ROOT/'README.md').read_text() == readme_markdown(ROOT/'nbs'/'index.ipynb'), \
        'README.md differs from nbs/index.ipynb: run `ftnb readme` in the repository'

def test_package_is_exported_from_the_notebooks():
    assert export_diff(ROOT) == [], 'ftnb/ differs from what nbdev_export makes of nbs/: run nbdev_export'

def test_notebooks_are_clean():
    assert clean_diff(ROOT) == [], 'run nbdev_clean'

def test_ci_runs_the_readme_test_command():
    readme, ci = (ROOT/'README.md').read_text(), (ROOT/'.ci'/'run').read_text()
    cmds = [l for l in readme.splitlines() if l.startswith('python3 -m venv') and 'pytest' in l]
    assert len(cmds) == 1, 'README must hold exactly one test command line'
    line = next(l for l in ci.splitlines() if l.startswith('cmd='))
    got = subprocess.run(['bash', '-c', f'{line}; printf %s "$cmd"'], cwd=ROOT, capture_output=True, text=True).stdout
    assert got == cmds[0]

def test_parameter_comments_are_not_read_as_the_return_value():
    "fastcore's docments reads a comment after `) -> T:` as the return value's: a parameter's comment there lands in the docs' 'returns' row."
    ends = re.compile(r"^\s*(def \w+\()?[A-Za-z_]\w*[^#\n]*\)\s*->[^#\n]*:\s*#", re.M)
    bad = [f"{p.name}: {m.group(0).strip()}" for p in sorted((ROOT/'ftnb').glob('*.py')) for m in ends.finditer(p.read_text())]
    assert bad == [], 'put the last parameter\'s comment on its own line, and ") -> T:" on the next:\n' + '\n'.join(bad)

NOTEBOOKS = sorted((Path(__file__).parent.parent/'nbs').rglob('*.ipynb'))

def test_notebooks_are_valid_and_their_saved_outputs_show_what_a_kernel_shows():
    "Valid nbformat; no saved figure that a Jupyter kernel would print as text; no path of the machine that ran it (venv, home, checkout)."
    import json, nbformat
    bad = []
    for f in NOTEBOOKS:
        nbformat.validate(nbformat.read(f, as_version=4))
        for i, c in enumerate(json.loads(f.read_text())['cells']):
            for o in c.get('outputs', []):
                d, text = o.get('data', {}), json.dumps(o)
                if ''.join(d.get('text/plain', '')).startswith('<Figure size') and 'image/png' not in d: bad.append(f"{f.name} cell {i}: a figure as text")
                if re.search(r'site-packages|/\.venv/|/root/|/home/\w|/work/', text): bad.append(f"{f.name} cell {i}: a local path")
    assert not bad, bad

def _setting(name):
    return re.search(rf'^{name}\s*=\s*(.*)$', (ROOT/'settings.ini').read_text(), re.M)[1].strip()

def test_the_license_file_is_the_one_settings_declares():
    assert _setting('license') == 'apache2'
    text = (ROOT/'LICENSE').read_text()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text and 'END OF TERMS AND CONDITIONS' in text

def test_the_version_is_one_and_the_changelog_describes_it():
    import ftnb
    version = _setting('version')
    assert ftnb.__version__ == version, 'settings.ini and ftnb/__init__.py disagree: bump with nbdev_bump_version'
    assert re.search(rf'^## {re.escape(version)} \(\d{{4}}-\d\d-\d\d\)$', (ROOT/'CHANGELOG.md').read_text(), re.M), \
        f'CHANGELOG.md has no "## {version} (date)" entry'

def test_the_commit_hooks_run_commands_the_dev_install_has():
    "The pre-commit hooks are local commands: each must be installed by `pip install -e '.[dev]'`."
    import shutil, sys
    cfg = (ROOT/'.pre-commit-config.yaml').read_text()
    entries = re.findall(r'entry: (?:bash -c \')?(\w+)', cfg)
    assert {'ruff', 'nbdev_clean', 'nbdev_export'} <= set(entries)
    bindir = Path(sys.executable).parent
    assert all(shutil.which(e) or (bindir/e).exists() for e in set(entries)), entries
    assert _setting('jupyter_hooks') == 'True' and '*.ipynb merge=nbdev-merge' in (ROOT/'.gitattributes').read_text()
