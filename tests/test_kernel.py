"""The tutorials top to bottom in a fresh Jupyter kernel, slow cells included, as a reader runs them (nbclient and ipykernel,
what JupyterLab, Colab and VS Code use): no cell fails, every chart comes out as a picture, no output shows this machine's paths.
`nbdev_test` runs cells in-process with inline plotting on, which hid figures that a kernel prints as text; this is the check
that does not. The fast cells of every notebook run in kernels too, in CI (`ftnb execute`, the README's test command).
On two CPU cores the tutorials take longer than the slow suite may (30 minutes), so they are a suite of their own:
`pytest tests -m tutorials`."""
from pathlib import Path
import pytest
from conftest import ROOT
from ftnb.devtools import run_notebook

TUTORIALS = sorted((ROOT/'nbs'/'tutorials').glob('*.ipynb'))

@pytest.mark.tutorials
@pytest.mark.parametrize('nb', TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_in_a_kernel(nb, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    r = run_notebook(nb, flags=('slow',))
    assert r.errors == {} and r.text_figures == [] and r.paths == {}, r
    plots = [i for i in r.ran if '.plot(' in r.sources[i]]
    assert set(plots) <= set(r.images), f"cells that plot without a picture: {sorted(set(plots) - set(r.images))}"
