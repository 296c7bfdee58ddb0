"""Real-browser checks of ipywidgets: a throwaway JupyterLab on 127.0.0.1 driven by Playwright's headless Chromium.

Pytest-free, so it also works from a script or a notebook (timeouts are in seconds):

    with jupyter_lab(root) as url, chromium() as browser:
        write_notebook(root/'t.ipynb', ['import ipywidgets as w; w.Button(description="hi")'])
        page = browser.new_page(); open_notebook(page, url, 't.ipynb'); run_all(page)
        page.click('.jupyter-button')
"""
import os, sys, json, time, socket, shutil, signal, tempfile, contextlib, subprocess, urllib.request
from importlib.util import find_spec
from pathlib import Path

CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
KERNEL_ENV = {'HF_HUB_OFFLINE': '1'}  # the kernel never waits on the Hub: there is no internet here
CONFIG = '''from jupyterlab.galata import configure_jupyter_server
configure_jupyter_server(c)  # no token, no xsrf check, `window.jupyterapp` exposed: for tests only
c.ServerApp.allow_root = True
c.ServerApp.ip = '127.0.0.1'
c.ServerApp.port = {port}
c.ServerApp.root_dir = {root!r}
c.LabApp.workspaces_dir = {workspaces!r}
'''
QUIET = {'fetchNews': 'false', 'checkForUpdates': False}  # no "Jupyter news?" toast over the widgets, no request out

def missing() -> str|None:
    "Why browser tests can't run here, or `None` when they can."
    if not os.access(CHROMIUM, os.X_OK): return f'{CHROMIUM} is missing (apt-get install chromium)'
    for mod in ('playwright', 'jupyterlab', 'ipykernel', 'nbformat', 'psutil'):
        if find_spec(mod) is None: return f'python package {mod} is missing (pip install jupyterlab ipykernel playwright)'

def free_port() -> int:
    "A TCP port on 127.0.0.1 that nothing listens on right now."
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def write_kernelspec(share:Path):
    "Write a `python3` kernelspec under `share` that runs this very python, offline from the Hub."
    d = share/'kernels'/'python3'; d.mkdir(parents=True, exist_ok=True)
    spec = dict(argv=[sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
                display_name='Python 3 (ipykernel)', language='python', env=KERNEL_ENV)
    (d/'kernel.json').write_text(json.dumps(spec, indent=1))

def lab_env(home:Path) -> dict:
    "Environment for a JupyterLab whose config, data, runtime and temp files all live in `home`."
    dirs = dict(JUPYTER_PATH='share', JUPYTER_CONFIG_DIR='config', JUPYTER_DATA_DIR='data', JUPYTER_RUNTIME_DIR='runtime', TMPDIR='tmp')
    for d in dirs.values(): (home/d).mkdir(exist_ok=True)
    write_kernelspec(home/'share')
    user = home/'config'/'lab'/'user-settings'/'@jupyterlab'/'apputils-extension'; user.mkdir(parents=True)
    (user/'notification.jupyterlab-settings').write_text(json.dumps(QUIET))
    return os.environ | {k: str(home/v) for k, v in dirs.items()} | KERNEL_ENV

def wait_until_up(url:str, proc, log:Path, timeout:float):
    "Poll `url`api/status until the server answers; raise with the server log if it dies or is too slow."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None: raise RuntimeError(f'jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}')
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url + 'api/status', timeout=2) as r:
                if r.status == 200: return
        time.sleep(0.2)
    raise TimeoutError(f'jupyter lab did not answer at {url} within {timeout}s:\n{log.read_text()[-3000:]}')

def stop_lab(proc, url:str):
    "Ask the server to shut down (it stops its kernels), then kill whatever of it is still alive."
    import psutil
    try: kids = psutil.Process(proc.pid).children(recursive=True)  # kernels run in sessions of their own: killpg misses them
    except psutil.NoSuchProcess: kids = []
    with contextlib.suppress(OSError):
        urllib.request.urlopen(urllib.request.Request(url + 'api/shutdown', method='POST'), timeout=5).close()
    try: proc.wait(timeout=20)
    except subprocess.TimeoutExpired: pass
    with contextlib.suppress(ProcessLookupError): os.killpg(proc.pid, signal.SIGKILL)
    for k in kids:
        with contextlib.suppress(psutil.NoSuchProcess): k.kill()
    psutil.wait_procs(kids, timeout=10); proc.wait()

@contextlib.contextmanager
def jupyter_lab(root, timeout:float=90):
    "Run `jupyter lab` serving `root` on a free port of 127.0.0.1; yield its base URL; shut it all down on exit."
    root, home = Path(root).resolve(), Path(tempfile.mkdtemp(prefix='ftnb-lab-'))
    port = free_port(); url = f'http://127.0.0.1:{port}/'
    cfg = home/'jupyter_lab_config.py'
    cfg.write_text(CONFIG.format(port=port, root=str(root), workspaces=str(home/'workspaces')))
    log = home/'server.log'
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, '-m', 'jupyter', 'lab', f'--config={cfg}'], cwd=root, env=lab_env(home),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_up(url, proc, log, timeout)
        yield url
    finally:
        stop_lab(proc, url)
        shutil.rmtree(home, ignore_errors=True)

@contextlib.contextmanager
def chromium(**kwargs):
    "Yield Debian's headless Chromium, launched through Playwright; closed on exit."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, **kwargs)
        try: yield browser
        finally: browser.close()

def write_notebook(path, cells:list[str]):
    "Write a notebook of code `cells` to `path`, with the `python3` kernel named so Lab starts it unasked."
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata['kernelspec'] = dict(name='python3', display_name='Python 3 (ipykernel)', language='python')
    nbformat.write(nb, str(path))

KERNEL_IDLE = "window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'"

def open_notebook(page, url:str, name:str, timeout:float=90):
    "Open notebook `name` (a path under the server's root) in JupyterLab and wait until its kernel is idle."
    page.goto(f'{url}lab/tree/{name}?reset')  # reset: no tabs restored from an earlier page's workspace
    page.wait_for_function(f'window.jupyterapp?.shell.currentWidget?.context?.path === {json.dumps(name)} && {KERNEL_IDLE}',
                           timeout=timeout*1000)

def wait_for(page, fn, timeout:float=120, what:str=''):
    "Poll `fn()` every 0.2 s, letting `page` process its events meanwhile, until it is truthy; return its value."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if r := fn(): return r
        page.wait_for_timeout(200)
    raise TimeoutError(f'waited {timeout}s for {what or fn}')

def cell_errors(page) -> list[str]:
    "The error outputs ('Name: value') of the notebook open in `page`."
    return page.evaluate('''() => jupyterapp.shell.currentWidget.content.model.toJSON().cells
        .flatMap(c => c.outputs || []).filter(o => o.output_type === 'error').map(o => `${o.ename}: ${o.evalue}`)''')

RAN_ALL = """() => { const w = jupyterapp.shell.currentWidget, cells = w.content.model.toJSON().cells;
    const ran = cells.every(c => c.cell_type !== 'code' || c.execution_count !== null);
    const failed = cells.some(c => (c.outputs || []).some(o => o.output_type === 'error'));  // an error stops run-all
    return w.sessionContext.session?.kernel?.status === 'idle' && (ran || failed); }"""

def run_all(page, timeout:float=120):
    "Run all cells of the open (never run) notebook, wait until each has run or one failed, and raise on errors."
    page.evaluate("() => { jupyterapp.commands.execute('notebook:run-all-cells'); }")  # don't await: a long cell would block
    page.wait_for_function(RAN_ALL, timeout=timeout*1000, polling=200)
    if errs := cell_errors(page): raise RuntimeError('notebook cells failed: ' + '; '.join(errs))
