"""Shared test setup: offline Hub, the `slow` marker, paths to the real data in ../shared/data."""
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')  # before any Hugging Face import: fail fast instead of retrying a network
if os.environ.get('PYTEST_XDIST_WORKER'):  # `pytest -n N`: N workers share the cores; torch's threads must not oversubscribe them
    os.environ.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')))))
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent/'shared'/'data'

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes minutes; run with `pytest tests -m slow`')
    config.addinivalue_line('markers', 'tutorials: the tutorials top to bottom, training included (longer than the slow suite); `pytest tests -m tutorials`')
    try: from hypothesis import settings
    except ImportError: return
    # The property tests draw the same examples on every run, so CI is repeatable and keeps no example database;
    # `HYPOTHESIS_PROFILE=hunt pytest tests -k random` draws new ones each run, to look for new failures.
    settings.register_profile('ftnb', derandomize=True, database=None)
    settings.register_profile('hunt', derandomize=False, database=None)
    settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ftnb'))

def pytest_collection_modifyitems(config, items):
    for it in items:  # with `-n 2 --dist loadgroup` (pytest-xdist), the tests of the docs site share one worker: one build
        if 'docs_site' in getattr(it, 'fixturenames', ()): it.add_marker(pytest.mark.xdist_group('docs'))
    chosen = config.getoption('-m') or ''
    for mark in ('slow', 'tutorials'):  # each runs only when asked for by name
        if mark in chosen: continue
        skip = pytest.mark.skip(reason=f'{mark}: run with `pytest tests -m {mark}`')
        for it in items:
            if mark in it.keywords: it.add_marker(skip)

@pytest.fixture
def data_dir():
    if not DATA.is_dir(): pytest.skip(f'real data folder {DATA} is absent (it sits beside the repository in CI)')
    return DATA

@pytest.fixture(scope='session')
def tiny():
    from ftnb.models import tiny_model
    return tiny_model()

@pytest.fixture(scope='session')
def docs_site(tmp_path_factory):
    "The docs site built from nbs/ into a temp folder (`ftnb docs`), as (folder, Sphinx's warnings or '', seconds taken)."
    import time
    pytest.importorskip('sphinx', reason='the docs site needs the dev extras (sphinx, myst-nb, furo)')
    from ftnb.core import FtnbError
    from ftnb.docs import build_docs
    dest, t = tmp_path_factory.mktemp('docs')/'_docs', time.monotonic()
    try: build_docs(dest, ROOT/'nbs'); warned = ''
    except FtnbError as e:
        if 'the docs build warned' not in str(e): raise
        warned = str(e); build_docs(dest, ROOT/'nbs', strict=False)  # the site anyway, for the other checks
    return dest, warned, time.monotonic() - t
