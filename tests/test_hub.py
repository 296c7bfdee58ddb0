"""The Hub (`ftnb.hub`): a run's model card, the exact files an upload stages (adapter and merged), the errors offline, without
a token or unreachable (nothing called), no token in any staged file, and the calls a push makes (huggingface_hub replaced by recorders)."""
import json
from pathlib import Path
import pytest
from ftnb.rewards import completion_text
import huggingface_hub as hh
from huggingface_hub import CommitInfo, RepoUrl, ModelCard
from ftnb.core import FtnbError, REDACTED
from ftnb.models import tiny_model
from ftnb.example_data import persona_data
from ftnb.sft import sft
from ftnb.evaluate import evaluate
from ftnb.history import RunRecord
from ftnb.hub import model_card, hub_folder
import ftnb.hub

PLANTED = 'hf_' + 'AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh'  # a token given to the recipe (TRL's hub_token): recorded in the run's call
PUSHED = 'hf_' + 'ZyXwVuTsRqPoNmLkJiHgFeDcBaZyXwVuTs'  # the token a push is given
ADAPTER = {'README.md', 'training.png', 'evaluation.png', 'settings.json', 'metrics.jsonl', 'adapter_config.json',
           'adapter_model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja'}
WEIGHTS = {'adapter_config.json', 'adapter_model.safetensors'}

def says_quill(completions, **kw): return [float('Quill' in completion_text(c)) for c in completions]

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A tiny LoRA SFT run of 6 steps, made with a token given to TRL, and evaluated."
    d = tmp_path_factory.mktemp('hub')
    r = sft(tiny_model(seed=0), persona_data(n=16), lr=1e-2, max_steps=6, batch_size=4, lora=dict(r=4, alpha=8, dropout=0.),
            run_dir=d/'run', logging_steps=1, hub_token=PLANTED)
    r.start(background=False, quiet=True)
    evaluate(r, ['Who are you?', 'What is your name?'], rewards=says_quill, max_new_tokens=4)
    return r

@pytest.fixture
def hub(monkeypatch):
    "huggingface_hub online and logged out, its network calls replaced by recorders: the list of calls made."
    calls = []
    monkeypatch.setenv('HF_HUB_OFFLINE', '0'); monkeypatch.delenv('HF_TOKEN', raising=False)
    monkeypatch.setattr(hh.constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(hh, 'get_token', lambda: None)
    monkeypatch.setattr(hh, 'whoami', lambda token=None: calls.append(('whoami', token)) or {'name': 'you'})
    def create_repo(repo_id, **kw):
        calls.append(('create_repo', repo_id, kw)); return RepoUrl(f'https://huggingface.co/{repo_id}')
    def upload_folder(**kw):
        files = {str(f.relative_to(kw['folder_path'])) for f in Path(kw['folder_path']).rglob('*') if f.is_file()}
        calls.append(('upload_folder', files, kw))
        return CommitInfo(commit_url=f"https://huggingface.co/{kw['repo_id']}/commit/1234", commit_message=kw['commit_message'],
                          commit_description='', oid='1234')
    monkeypatch.setattr(hh, 'create_repo', create_repo); monkeypatch.setattr(hh, 'upload_folder', upload_folder)
    return calls

def test_the_card_says_what_made_the_model(run, tmp_path):
    card = model_card(run, 'you/quill', folder=tmp_path)
    meta, body = ModelCard(card).data, ModelCard(card).text
    assert meta.library_name == 'peft' and {'ftnb', 'trl', 'sft', 'lora'} <= set(meta.tags) and meta.base_model is None  # tiny: not on the Hub
    last = [h['loss'] for h in run.history if 'loss' in h][-1]
    for want in ('`tiny`', 'SFT: supervised fine-tuning', 'SFTTrainer', RunRecord(run.run_dir).data, '16 trained on', '6 of 6 steps (finished)',
                 'lr=0.01, max_steps=6', '## Evaluation', 'says_quill', f"| loss | {last:.4g}", "from_pretrained('you/quill')"):
        assert want in body, want
    assert f"hub_token='{REDACTED}'" in body and PLANTED not in card  # the recorded call, token masked
    for png in ('training.png', 'evaluation.png'):
        assert f"]({png})" in body and (tmp_path/png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'data:image/png;base64,' in model_card(run)  # no folder: the charts inline, for a preview

def test_the_card_names_a_hub_base_model_and_hub_data(run, tmp_path):
    "A run of the embedded model on Hub data, as its folder records it: the metadata links both and knows the license."
    d = tmp_path/'run'; d.mkdir()
    info = json.loads((run.run_dir/'settings.json').read_text())
    info['model'] = 'smollm2-135m-instruct'
    info['settings']['data'] = 'Data: 16 rows of conversation (detected messages) from the Hub: org/persona'
    (d/'settings.json').write_text(json.dumps(info))
    meta = ModelCard(model_card(RunRecord(d), merged=True)).data
    assert meta.base_model == 'HuggingFaceTB/SmolLM2-135M-Instruct' and meta.license == 'apache-2.0' and meta.datasets == ['org/persona']
    assert meta.library_name == 'transformers'

def test_staged_files_adapter_and_merged(run, tmp_path):
    up = hub_folder(run, tmp_path/'adapter', 'you/quill')
    assert {f.name for f in up.iterdir()} == ADAPTER
    merged = hub_folder(run, tmp_path/'merged', 'you/quill', merged=True)
    assert {f.name for f in merged.iterdir()} == ADAPTER - WEIGHTS | {'config.json', 'generation_config.json', 'model.safetensors'}
    assert 'library_name: transformers' in (merged/'README.md').read_text()
    with pytest.raises(FtnbError, match='not empty'): hub_folder(run, merged)

def test_offline_fails_at_once_and_calls_nothing(run, hub, monkeypatch, tmp_path):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(FtnbError, match='HF_HUB_OFFLINE'): run.push('you/quill', token=PUSHED, folder=tmp_path/'up')
    monkeypatch.setenv('HF_HUB_OFFLINE', '0'); monkeypatch.setattr(hh.constants, 'HF_HUB_OFFLINE', True)  # as read on import
    with pytest.raises(FtnbError, match='HF_HUB_OFFLINE'): run.push('you/quill', token=PUSHED, folder=tmp_path/'up')
    assert hub == [] and not (tmp_path/'up').exists()  # nothing staged either

def test_no_token_fails_at_once_and_calls_nothing(run, hub, tmp_path, monkeypatch):
    monkeypatch.setattr(run, 'secrets', {})  # a run made without a hub_token
    with pytest.raises(FtnbError, match=r'huggingface-cli login.*HF_TOKEN.*token='): run.push('you/quill', folder=tmp_path/'up')
    assert hub == [] and not (tmp_path/'up').exists()

def test_the_recipes_hub_token_is_the_default_and_is_in_no_staged_file(run, hub, tmp_path):
    run.push('you/quill', folder=tmp_path/'up')  # `_check_no_token` searched every staged file for it first
    assert hub[0] == ('whoami', PLANTED) and hub[-1][0] == 'upload_folder' and hub[-1][2]['token'] == PLANTED
    assert not [f for f in (tmp_path/'up').rglob('*') if f.is_file() and PLANTED.encode() in f.read_bytes()]

def test_unreachable_hub_or_rejected_token_fails_before_creating_anything(run, hub, monkeypatch, tmp_path):
    import httpx
    def no_network(token=None): raise httpx.ConnectError('[Errno -3] Temporary failure in name resolution')
    monkeypatch.setattr(hh, 'whoami', no_network)
    with pytest.raises(FtnbError, match='Cannot reach the Hugging Face Hub'): run.push('you/quill', token=PUSHED, folder=tmp_path/'up')
    def rejected(token=None): raise hh.errors.HfHubHTTPError('401 Unauthorized', response=httpx.Response(401, request=httpx.Request('GET', 'https://x')))
    monkeypatch.setattr(hh, 'whoami', rejected)
    with pytest.raises(FtnbError, match='does not accept this token'): run.push('you/quill', token=PUSHED)
    assert hub == [] and not (tmp_path/'up').exists()

def test_bad_repo_id_and_a_used_folder_are_refused(run, hub, tmp_path):
    with pytest.raises(FtnbError, match='not a Hub repo id'): run.push('you/quill tiny', token=PUSHED)
    (tmp_path/'notes.txt').write_text('mine')
    with pytest.raises(FtnbError, match='not empty'): run.push('you/quill', token=PUSHED, folder=tmp_path)
    assert hub == []

def test_a_chained_adapter_goes_up_merged(run, hub, tmp_path):
    "An adapter trained on another run's merged model is no use alone: push says to merge."
    f = run.run_dir/'settings.json'; saved = f.read_text()
    f.write_text(json.dumps(json.loads(saved) | dict(base_run='runs/20260101-000000-sft')))
    try:
        with pytest.raises(FtnbError, match='merged=True'): run.push('you/quill', token=PUSHED)
    finally: f.write_text(saved)
    assert hub == []

def test_a_push_creates_the_repo_and_uploads_the_staged_folder_without_a_token_in_it(run, hub, tmp_path):
    info = run.push('you/quill', token=PUSHED, folder=tmp_path/'up')
    assert [c[0] for c in hub] == ['whoami', 'create_repo', 'upload_folder']
    assert hub[0] == ('whoami', PUSHED) and hub[1] == ('create_repo', 'you/quill', dict(token=PUSHED, private=True, exist_ok=True))
    files, kw = hub[2][1], hub[2][2]
    assert files == ADAPTER and kw['repo_id'] == 'you/quill' and kw['token'] == PUSHED and 'SFT run' in kw['commit_message']
    assert info.repo_url.repo_id == 'you/quill'
    for f in (tmp_path/'up').rglob('*'):  # the kept staging folder is what went up: neither token is in any file
        if f.is_file(): assert PLANTED.encode() not in f.read_bytes() and PUSHED.encode() not in f.read_bytes(), f
    assert json.loads((tmp_path/'up'/'settings.json').read_text())['trl_config']['hub_token'] == '<HUB_TOKEN>'
    run.push('them/quill', private=False, merged=True, token=PUSHED)
    assert hub[-2][2]['private'] is False and 'model.safetensors' in hub[-1][1]

def test_a_token_that_reached_a_staged_file_stops_the_upload(run, hub, monkeypatch):
    "The last guard: were redaction to miss the token, push would find it in the staged files and send nothing."
    staged = ftnb.hub.hub_folder
    def leaky(*a, **kw):  # a staged file the token reached (the recipe keeps it out of every file the run writes)
        p = staged(*a, **kw); (p/'notes.txt').write_text(f"hub_token={PLANTED}"); return p
    monkeypatch.setattr(ftnb.hub, 'redact', lambda x, secrets=(): x); monkeypatch.setattr(ftnb.hub, 'hub_folder', leaky)
    with pytest.raises(FtnbError, match='holds the token: nothing was uploaded'): run.push('you/quill', token=PLANTED)
    assert [c[0] for c in hub] == ['whoami']
