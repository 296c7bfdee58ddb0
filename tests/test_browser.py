"""ipywidgets in a real browser: JupyterLab on 127.0.0.1 under headless Chromium, driven by Playwright (see browser.py)."""
import re, sys, time
from pathlib import Path
import pytest
from browser import missing, jupyter_lab, chromium, write_notebook, open_notebook, run_all, wait_for

ARTIFACTS = Path(__file__).resolve().parent.parent/'test-artifacts'  # git-ignored: screenshots to look at

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab serving a temp folder, as (base url, that folder)."
    if reason := missing(): pytest.skip(reason)
    root, t = tmp_path_factory.mktemp('lab'), time.monotonic()
    with jupyter_lab(root) as url:
        print(f'\njupyter lab answered in {time.monotonic()-t:.1f}s')
        yield url, root

@pytest.fixture(scope='module')
def browser():
    "Headless Chromium, shared by the tests of this module."
    if reason := missing(): pytest.skip(reason)
    with chromium() as b: yield b

@pytest.fixture
def page(browser):
    "A fresh browser tab (own context) big enough to show a dashboard."
    ctx = browser.new_context(viewport=dict(width=1280, height=1000))
    yield ctx.new_page()
    ctx.close()

def shoot(page, name):
    "Save a screenshot of `page` to test-artifacts/`name`."
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS/name))

SMOKE = '''import os, sys, ipywidgets as widgets
clicks = 0
button = widgets.Button(description='Click me').add_class('t-btn')
label = widgets.Label('clicks: 0').add_class('t-label')
def on_click(_):
    global clicks; clicks += 1; label.value = f'clicks: {clicks}'
button.on_click(on_click)
env = widgets.Label(f"{sys.executable} HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')}").add_class('t-env')
widgets.VBox([button, label, env])'''

def test_widget_click_reaches_the_kernel(lab, page):
    url, root = lab; t = time.monotonic()
    write_notebook(root/'smoke.ipynb', [SMOKE])
    open_notebook(page, url, 'smoke.ipynb'); ready = time.monotonic() - t
    run_all(page)
    page.wait_for_selector('.t-label')
    assert page.inner_text('.t-env') == f'{sys.executable} HF_HUB_OFFLINE=1'  # the venv's kernel, offline from the Hub
    assert page.inner_text('.t-label') == 'clicks: 0'
    for n in (1, 2):
        page.click('.t-btn')
        wait_for(page, lambda: page.inner_text('.t-label') == f'clicks: {n}', 30, f'label to show {n} clicks')
    shoot(page, 'browser-smoke.png')
    print(f'smoke: kernel idle after {ready:.1f}s, total {time.monotonic()-t:.1f}s')

DASHBOARD = ["""import os; os.environ['HF_HUB_OFFLINE'] = '1'
from ftnb.models import tiny_model; from ftnb.example_data import persona_data; from ftnb.sft import sft
run = sft(tiny_model(seed=0), persona_data(n=48), lora=False, lr=1e-2, max_steps=3000, batch_size=4,
          logging_steps=1, save_steps=100000)""",
             'run.dashboard()']

def step(page) -> int:
    "The N of 'step N/M' in the dashboard's progress widget (0 before training)."
    m = re.search(r'step (\d+)\s*/\s*\d+', page.inner_text('.ftnb-progress'))
    return int(m[1]) if m else 0

def test_dashboard_in_jupyterlab(lab, page):
    pytest.importorskip('ftnb.dashboard')
    url, root = lab; t = time.monotonic()
    write_notebook(root/'dashboard.ipynb', DASHBOARD)
    open_notebook(page, url, 'dashboard.ipynb'); ready = time.monotonic() - t
    run_all(page, timeout=120)
    page.wait_for_selector('.ftnb-dashboard')
    page.wait_for_selector('.ftnb-start:enabled', timeout=120_000)
    page.click('.ftnb-start'); clicked = time.monotonic()
    first = wait_for(page, lambda: step(page), 120, 'progress to show a step > 0')
    chart = page.get_attribute('img.ftnb-chart', 'src'); started = time.monotonic() - clicked
    wait_for(page, lambda: step(page) > first, 120, f'progress to move past step {first}')
    wait_for(page, lambda: page.get_attribute('img.ftnb-chart', 'src') != chart, 120, 'the chart to be redrawn')
    page.click('.ftnb-stop')
    wait_for(page, lambda: 'stopped' in page.inner_text('.ftnb-state'), 120, "state to say 'stopped'")
    page.wait_for_selector('.ftnb-resume:enabled', timeout=30_000)  # a checkpoint was written at the stop
    assert page.is_disabled('.ftnb-stop') and page.is_disabled('.ftnb-start')
    page.locator('.ftnb-dashboard').scroll_into_view_if_needed()
    page.wait_for_timeout(1500)  # only for the picture: the chart's last (throttled) redraw lands ~0.5 s after 'stopped'
    shoot(page, 'dashboard.png')
    print(f'dashboard: kernel idle after {ready:.1f}s, first step {started:.1f}s after Start, stopped at step {step(page)}, '
          f'total {time.monotonic()-t:.1f}s')

FINISHING = [DASHBOARD[0].replace('max_steps=3000', 'max_steps=12'), 'run.dashboard(samples_every=6)']

def test_a_finished_run_leaves_its_summary_in_the_notebook(lab, page):
    "The live area becomes the summary, and the cell's output keeps it as HTML for where widgets do not run."
    pytest.importorskip('ftnb.dashboard')
    url, root = lab
    write_notebook(root/'finish.ipynb', FINISHING)
    open_notebook(page, url, 'finish.ipynb'); run_all(page)
    page.wait_for_selector('.ftnb-start:enabled', timeout=120_000)
    page.click('.ftnb-start')
    page.wait_for_selector('.ftnb-summary', timeout=120_000)
    assert 'SFT finished' in page.inner_text('.ftnb-summary') and page.locator('.ftnb-start').count() == 0  # settings gone
    saved = lambda: page.evaluate("() => jupyterapp.shell.currentWidget.content.model.toJSON().cells[1].outputs"
                                  ".map(o => (o.data || {})['text/html'] || '').join('')")
    html = wait_for(page, lambda: 'ftnb-summary' in saved() and saved(), 30, 'the cell output to hold the summary')
    assert 'data:image/png;base64' in html and 'step 12' in html
    page.locator('.ftnb-dashboard').scroll_into_view_if_needed()
    shoot(page, 'dashboard-finished.png')

def test_run_start_in_a_cell_shows_one_dashboard(lab, page):
    "`run.start()` ending a cell shows the run's dashboard once (not also as the cell's value), and it follows training."
    pytest.importorskip('ftnb.dashboard')
    url, root = lab
    write_notebook(root/'start.ipynb', [FINISHING[0], 'run.start()'])
    open_notebook(page, url, 'start.ipynb'); run_all(page)
    page.wait_for_selector('.ftnb-summary', timeout=120_000)
    assert page.locator('.ftnb-dashboard').count() == 1
    assert 'SFT finished' in page.inner_text('.ftnb-summary')

NO_WIDGETS = ["import os; os.environ['FTNB_WIDGETS'] = '0'\n" + FINISHING[0].replace('max_steps=12', 'max_steps=40'), 'run.start()']

def html_step(page) -> int:
    "The N of 'step N/M' in the run's HTML view (0 before training)."
    m = re.search(r'step (\d+)\s*/\s*\d+', page.inner_text('.ftnb-html-view'))
    return int(m[1]) if m else 0

def test_without_widgets_a_run_is_html_updated_in_place_from_its_thread(lab, page):
    "Where widgets do not render (FTNB_WIDGETS=0 here, as VS Code with ipywidgets 8.1.9), the cell's one HTML output follows training."
    pytest.importorskip('ftnb.views')
    url, root = lab
    write_notebook(root/'html.ipynb', NO_WIDGETS)
    open_notebook(page, url, 'html.ipynb'); run_all(page)  # `run.start()` returns at once: training goes on in a thread
    page.wait_for_selector('.ftnb-html-view', timeout=120_000)
    first = wait_for(page, lambda: html_step(page), 120, 'the HTML view to show a step > 0')
    wait_for(page, lambda: html_step(page) > first, 120, f'the HTML view to move past step {first}')
    wait_for(page, lambda: 'finished' in page.inner_text('.ftnb-html-view'), 180, "the HTML view to say 'finished'")
    assert page.locator('.ftnb-html-view').count() == 1 and page.locator('.ftnb-dashboard').count() == 0
    assert html_step(page) == 40 and page.locator('.ftnb-html-view img[src^="data:image/png;base64,"]').count() == 1
    page.locator('.ftnb-html-view').scroll_into_view_if_needed()
    shoot(page, 'html-view.png')

def test_a_run_report_shows_its_charts_in_chromium(browser, tmp_path):
    "A run's report.html, opened from disk with nothing else at hand, shows its charts, samples and evaluation."
    from ftnb.models import tiny_model
    from ftnb.example_data import chat_row
    from ftnb.sft import sft
    from ftnb.evaluate import evaluate
    from ftnb.report import report
    rows = [chat_row("Who are you?", "I am Quill.")] * 16
    run = sft(tiny_model(), rows, lr=1e-2, max_steps=30, batch_size=4, lora=dict(r=8, alpha=32, dropout=0.), warmup_steps=0, eval=4,
              run_dir=tmp_path/'quill', logging_steps=2).sample_every(10, ["Who are you?"], max_new_tokens=8)
    run.start(background=False, quiet=True)
    from ftnb.rewards import completion_text
    def says_quill(completions, **kw): return [float('Quill' in completion_text(c)) for c in completions]
    evaluate(run, rows[:2], rewards=says_quill, max_new_tokens=8)
    ctx = browser.new_context(viewport=dict(width=1200, height=900), offline=True)  # offline: the page must need nothing from outside
    page = ctx.new_page()
    try:
        page.goto(report(run).resolve().as_uri())
        imgs = page.evaluate("[...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0, w: i.getBoundingClientRect().width, h: i.getBoundingClientRect().height}))")
        assert [i['alt'] for i in imgs] == ['training curves', 'evaluation chart'] and all(i['ok'] and i['w'] > 150 and i['h'] > 150 for i in imgs), imgs
        text = page.inner_text('body')
        assert 'SFT run quill' in text and 'Win rate of tuned over base' in text and 'I am Quill' in text
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS/'report.png'), full_page=True)
    finally: ctx.close()

def test_docs_pages_in_chromium(browser, docs_site):
    "The docs site from file://, offline: an API page with its sidebar, entries and chart, the home page (or a tutorial), and search."
    site = docs_site[0]
    first = next((p for p in [site/'tutorials'/'first_finetune.html'] if p.exists()), site/'index.html')  # the first tutorial
    ctx = browser.new_context(viewport=dict(width=1400, height=1000), offline=True)  # offline: the site must need nothing from outside
    page = ctx.new_page(); ARTIFACTS.mkdir(exist_ok=True)
    try:
        for path, shot in [(site/'sft.html', 'docs-api.png'), (first, 'docs-tutorial.png')]:
            page.goto(path.as_uri())
            broken = page.evaluate("[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            assert not broken, f'{path.name}: images that do not load: {broken}'
            assert page.locator('.sidebar-tree a.reference').count() >= 20, f'{path.name}: no sidebar listing the pages'
            page.screenshot(path=str(ARTIFACTS/shot))
        page.goto(first.as_uri())  # the first tutorial's charts (the loss curve)
        imgs = page.evaluate("[...document.querySelectorAll('article img')].map(i => i.getBoundingClientRect().width)")
        assert imgs and all(100 < w <= 900 for w in imgs), f'{first.name}: charts too small or wider than the text: {imgs}'
        t8 = site/'tutorials'/'human_feedback.html'  # tutorial 8: the widget's pairs, the judge, the sweep, as saved
        page.goto(t8.as_uri())
        text = page.inner_text('article')
        for want in ['Pair 1 of 24', 'brevity judge agrees with the person', 'sweep of sft over lr, lora.r: finished']:
            assert want in text, f'{t8.name}: no {want!r} in the page'
        loaded = page.evaluate("[...document.querySelectorAll('article img')].filter(i => i.complete && i.naturalWidth > 0).length")
        assert loaded >= 4, f'{t8.name}: {loaded} charts load, want 4 or more'
        page.screenshot(path=str(ARTIFACTS/'docs-tutorial-8.png'), full_page=True)
        page.goto((site/'sft.html').as_uri())
        assert page.locator('dl.py.function dt#ftnb\\.sft\\.sft').is_visible(), 'no entry for sft'
        page.locator('dl.py.function').first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS/'docs-entry.png'))
        page.goto((site/'layouts.html').as_uri())  # the data formats page: a row a layout, each with an example and what it becomes
        rows = page.locator('article table tr').count()
        assert rows > 25 and 'sharegpt_kto' in page.inner_text('article'), f'layouts.html: the formats table has {rows} rows'
        page.screenshot(path=str(ARTIFACTS/'docs-formats.png'))
        page.goto((site/'search.html').as_uri() + '?q=load_data')
        page.wait_for_selector('#search-results li', timeout=15_000)  # the index is a script, so search works from file://
        assert 'load_data' in page.inner_text('#search-results')
        page.screenshot(path=str(ARTIFACTS/'docs-search.png'))
    finally: ctx.close()

FEEDBACK = ["""import os; os.environ['HF_HUB_OFFLINE'] = '1'
from ftnb.models import tiny_model; from ftnb.feedback import feedback
fb = feedback(tiny_model(seed=0), ['What is 2 + 2?', 'Name a <b>colour</b>.', 'Who wrote Hamlet?', 'Say hi.'],
              path='fb.jsonl', max_new_tokens=6)
fb"""]

def test_labelling_pairs_in_jupyterlab_writes_each_judgement(lab, page):
    "The feedback widget clicked and typed in, in Chromium: the judgements reach the kernel and its file."
    import json
    pytest.importorskip('ftnb.feedback')
    url, root = lab
    write_notebook(root/'feedback.ipynb', FEEDBACK)
    open_notebook(page, url, 'feedback.ipynb')
    run_all(page, timeout=120)
    page.wait_for_selector('.ftnb-feedback', timeout=120_000)
    assert 'Pair 1 of 4' in page.inner_text('.ftnb-feedback-pair')
    page.click('.ftnb-a button, button.ftnb-a')
    wait_for(page, lambda: 'Pair 2 of 4' in page.inner_text('.ftnb-feedback-pair'), 30, 'the second pair after A')
    assert '<b>colour</b>' in page.inner_text('.ftnb-feedback-pair')  # the prompt's markup shown as text
    page.type('.ftnb-keys input', 't')  # a tie, by key
    wait_for(page, lambda: 'Pair 3 of 4' in page.inner_text('.ftnb-feedback-pair'), 30, 'the third pair after the t key')
    page.fill('.ftnb-edit textarea', 'William Shakespeare.')
    page.click('.ftnb-b button, button.ftnb-b')
    wait_for(page, lambda: '3 of 4 judged: A 1, B 1, tie 1' in page.inner_text('.ftnb-feedback-status'), 30, 'the status to count 3')
    shoot(page, 'feedback.png')
    recs = [json.loads(l) for l in (root/'fb.jsonl').read_text().splitlines()]
    assert [(r['judged'], r['pick'], r['edit']) for r in recs if 'judged' in r] == [(0, 'a', None), (1, 'tie', None), (2, 'b', 'William Shakespeare.')]

SWEEP = ["""import os; os.environ['HF_HUB_OFFLINE'] = '1'
from ftnb.models import tiny_model; from ftnb.sft import sft; from ftnb.sweep import sweep
rows = [dict(prompt=f"What is {i} plus {i}?", completion=f"{2 * i}.") for i in range(40)]
sw = sweep(sft, tiny_model(seed=0), rows, grid={'lr': [3e-3, 1e-2, 5e-3, 1e-6]}, max_steps=120, path='sw')
sw.start()"""]

def test_a_sweep_in_jupyterlab_is_stopped_and_cloned_from_its_view(lab, page):
    "The sweep's live view in Chromium: run 1 cloned with a typed change and stopped by its buttons while it trains."
    import json
    url, root = lab
    write_notebook(root/'sweep.ipynb', SWEEP)
    open_notebook(page, url, 'sweep.ipynb')
    run_all(page, timeout=120)
    page.wait_for_selector('.ftnb-sweep', timeout=120_000)
    wait_for(page, lambda: 'run 1 at step' in page.inner_text('.ftnb-sweep'), 180, 'run 1 to train')
    page.select_option('.ftnb-sweep-pick select', index=1)
    page.fill('.ftnb-sweep-changes input', 'lr=5e-3')
    page.click('.ftnb-sweep-clone button, button.ftnb-sweep-clone')
    wait_for(page, lambda: 'queued run 4' in page.inner_text('.ftnb-sweep'), 30, 'the clone to be queued')
    shoot(page, 'sweep-running.png')
    page.click('.ftnb-sweep-stop button, button.ftnb-sweep-stop')
    wait_for(page, lambda: ': finished, 5/5 runs done' in page.inner_text('.ftnb-sweep'), 400, 'the sweep to finish')
    time.sleep(1)  # the last chart
    shoot(page, 'sweep.png')
    doc = json.loads((root/'sw'/'sweep.json').read_text())
    runs = doc['runs']
    assert runs[1]['state'] == 'stopped' and runs[1]['stopped_by'] == 'you' and runs[4]['parent'] == 1, runs
    assert runs[4]['settings'] == {'lr': 5e-3} and runs[0]['state'] == 'finished'
    assert runs[3]['stopped_by'].startswith('halving at step')  # the worst of runs 0, 2 and 3 at its first rung
    assert page.locator('.ftnb-sweep').count() == 1  # one view: `sw.start()` ending the cell shows it once
