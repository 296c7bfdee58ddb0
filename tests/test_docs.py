"""The docs site (`ftnb docs`, `ftnb.docs.build_docs`), built from nbs/ into a temp folder: Sphinx did not warn, every notebook
is a page, every public symbol has an anchor, every link and image inside the site resolves, and search is there."""
import re, base64, shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit, unquote
import pytest
from conftest import ROOT

pytest.importorskip('sphinx', reason='the docs site needs the dev extras (sphinx, myst-nb, furo)')
pytestmark = pytest.mark.filterwarnings('ignore:.*Check CHANGES for Sphinx API modifications')  # myst-parser 5.2 on Sphinx 9: its business, not a page's
from ftnb.docs import build_docs, notebooks, page_name

class Refs(HTMLParser):
    "The ids a page defines and the links and sources it refers to."
    def __init__(self):
        super().__init__(); self.ids, self.refs = set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        for k in ('href', 'src'):
            if a.get(k) is not None: self.refs.append((tag, a[k]))

def parse(page:Path) -> Refs:
    r = Refs(); r.feed(page.read_text(encoding='utf-8')); return r

def pages(site:Path) -> dict[Path, Refs]: return {p: parse(p) for p in site.rglob('*.html')}

def broken_refs(site:Path) -> list[str]:
    "Links (href) and sources (src) of the site's pages that point inside it at a missing file or a missing anchor."
    site = site.resolve(); parsed, bad = pages(site), []
    for page, r in parsed.items():
        for tag, ref in r.refs:
            u = urlsplit(ref)
            if u.scheme or u.netloc or ref.startswith(('data:', 'javascript:', 'mailto:')): continue
            target = (page.parent/unquote(u.path)).resolve() if u.path else page
            if target.is_dir(): target = target/'index.html'
            where = f"{page.relative_to(site)}: <{tag}> {ref}"
            if not target.is_file(): bad.append(f"{where} (no file {target.relative_to(site.resolve()) if target.is_relative_to(site.resolve()) else target})")
            elif u.fragment and target.suffix == '.html' and unquote(u.fragment) not in (parsed[target] if target in parsed else parse(target)).ids:
                bad.append(f"{where} (no id {u.fragment!r} in {target.name})")
    return bad

def test_the_build_does_not_warn(docs_site):
    site, warned, secs = docs_site
    print(f"\nsite built in {secs:.1f} s")
    assert not warned, warned

def test_one_page_per_notebook(docs_site):
    site, nbs = docs_site[0], ROOT/'nbs'
    missing = [f"{p.relative_to(nbs)} -> {page_name(p, nbs)}.html" for p in notebooks(nbs) if not (site/f"{page_name(p, nbs)}.html").is_file()]
    assert not missing, f"notebooks without a page: {missing}"
    assert (site/'index.html').is_file(), 'no home page (index.html, from nbs/index.ipynb)'

def test_an_anchor_per_public_symbol(docs_site):
    import ftnb.all as fa
    ids = set().union(*(r.ids for r in pages(docs_site[0]).values()))
    def anchored(name):
        o = getattr(fa, name)
        mod = getattr(o, '__module__', None)
        return f"{mod}.{name}" in ids if mod and mod.startswith('ftnb.') else any(i.startswith('ftnb.') and i.endswith('.' + name) for i in ids)
    missing = [n for n in fa.__all__ if not anchored(n)]
    assert not missing, f"public symbols (ftnb.all) without an entry on any page: {missing}"

def test_links_and_images_resolve(docs_site):
    bad = broken_refs(docs_site[0])
    assert not bad, 'broken links or images:\n' + '\n'.join(bad[:50])

def test_search_index_and_examples_are_there(docs_site):
    site = docs_site[0]
    assert (site/'search.html').is_file() and (site/'searchindex.js').is_file(), 'no search page or search index'
    assert 'ftnb.sft.sft' in (site/'searchindex.js').read_text(), 'sft is not in the search index'
    sft = (site/'sft.html').read_text()
    assert '<table' in sft and 'peak learning rate' in sft, "sft's page lacks its parameters table with their comments"
    first = (site/'tutorials'/'first_finetune.html').read_text()  # sft's real-model example, with its loss curve
    assert re.search(r'<img [^>]*src="\.\./_images/', first), "the first tutorial's page lacks its saved chart"
    prose = lambda p: re.sub(r'<pre.*?</pre>|<code.*?</code>', '', p.read_text(), flags=re.S)  # examples may show the syntax
    leaks = [p.name for p in site.rglob('*.html') if re.search(r'\{target=|:::\{|\{py:(obj|mod)\}', prose(p))]
    assert not leaks, f"pages showing raw Quarto or MyST syntax: {leaks}"

PNG = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==')

def test_tutorials_come_first_with_their_images_and_links(tmp_path):
    "The folder nbs/tutorials/ becomes the sidebar's first section; its images show and its links reach the API pages."
    import nbformat
    nbs = tmp_path/'nbs'; (nbs/'tutorials'/'images').mkdir(parents=True)
    shutil.copy(ROOT/'settings.ini', tmp_path)
    shutil.copy(ROOT/'nbs'/'11_sft.ipynb', nbs)  # a module page; it links to tutorial 1, which links to the next: the tutorials come too
    for nb in (ROOT/'nbs'/'tutorials').glob('*.ipynb'): shutil.copy(nb, nbs/'tutorials')
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# ftnb\n\n> A small site.')]), str(nbs/'index.ipynb'))
    (nbs/'tutorials'/'images'/'dot.png').write_bytes(PNG)
    cells = [nbformat.v4.new_markdown_cell('# Teach a name\n\n> A first tutorial.'),
             nbformat.v4.new_markdown_cell('See [the SFT page](../11_sft.ipynb) and `sft`.\n\n![a dot](images/dot.png)'),
             nbformat.v4.new_code_cell('1 + 1', outputs=[nbformat.v4.new_output('execute_result', {'text/plain': '2'}, execution_count=1)])]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), str(nbs/'tutorials'/'99_teach_a_name.ipynb'))
    site = build_docs(tmp_path/'_docs', nbs)
    page = (site/'tutorials'/'teach_a_name.html').read_text()
    assert 'href="../sft.html"' in page and 'href="../sft.html#ftnb.sft.sft"' in page, 'the tutorial does not link to the SFT page and entry'
    assert re.search(r'<img [^>]*src="../_images/dot.png"', page), 'the tutorial does not show its image'
    home = (site/'index.html').read_text()
    assert 0 <= home.find('Tutorials') < home.find('API'), 'the sidebar does not list the tutorials first'
    assert not broken_refs(site), broken_refs(site)

def test_pages_show_readers_no_private_helpers_and_wrap_long_lines(docs_site):
    "Cells that test private helpers stay in the notebooks as tests but not on the pages; code and outputs wrap instead of being cut."
    site = docs_site[0]
    data = (site/'data.html').read_text()
    assert '_usual_shapes' not in data and 'load_data' in data
    assert 'white-space: pre-wrap' in (site/'_static'/'ftnb.css').read_text() and 'ftnb.css' in (site/'index.html').read_text()
