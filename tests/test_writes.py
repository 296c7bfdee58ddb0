"""Nothing overwritten: every model save, staged upload and exported job is whole or absent (an error or a Ctrl-C midway leaves
the earlier one as it was, and nothing half-written beside it), and a folder holding anything else is refused, not replaced."""
from unittest import mock
from pathlib import Path
import pytest, torch
import gguf
from ftnb.core import FtnbError
from ftnb.models import Model, tiny_model, copy_model, lora_config, load_model
from ftnb.example_data import chat_row
from ftnb.data import load_data
from ftnb.sft import sft
import ftnb.saving, ftnb.hub, ftnb.launch
from ftnb.hub import hub_folder

def files(d:Path) -> dict:
    "Every file under `d` with its bytes."
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()}

def leftovers(d:Path) -> list:
    "Staging or temporary files and folders left in `d` (whole_folder and whole_file write beside their target, under a dot name)."
    return [p.name for p in d.iterdir() if p.name.startswith('.')]

def adapter(tiny, seed:int) -> Model:
    "`tiny` with a LoRA adapter of its own random weights (the base is copied: the shared model stays as it is)."
    from peft import get_peft_model
    torch.manual_seed(seed)
    return Model(get_peft_model(copy_model(tiny.model), lora_config(r=2, init_lora_weights=False)), tiny.tokenizer, 'tiny')

def test_an_interrupted_save_leaves_the_earlier_adapter_whole(tiny, tmp_path):
    d = adapter(tiny, 0).save(tmp_path/'adapter')
    before = files(d)
    assert {'adapter_config.json', 'adapter_model.safetensors', 'tokenizer.json'} <= set(before)
    with mock.patch.object(type(tiny.tokenizer), 'save_pretrained', side_effect=KeyboardInterrupt):  # Ctrl-C after the weights were written
        with pytest.raises(KeyboardInterrupt): adapter(tiny, 1).save(d)
    assert files(d) == before and leftovers(tmp_path) == []
    with mock.patch.object(type(tiny.tokenizer), 'save_pretrained', side_effect=KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt): adapter(tiny, 1).save(tmp_path/'new')
    assert not (tmp_path/'new').exists() and leftovers(tmp_path) == []  # a first save interrupted leaves nothing

def test_a_save_replaces_an_earlier_save_whole_and_refuses_any_other_folder(tiny, tmp_path):
    d = adapter(tiny, 0).save(tmp_path/'model')
    adapter(tiny, 0).save(d, merged=True)  # the merged model replaces the adapter: no adapter file is left to load instead
    assert (d/'model.safetensors').exists() and not (d/'adapter_config.json').exists()
    mine = tmp_path/'mine'; mine.mkdir(); (mine/'notes.txt').write_text('mine')
    with pytest.raises(FtnbError, match=f"{mine} is not empty and holds no saved model"): tiny.save(mine)
    assert files(mine) == {'notes.txt': b'mine'}

def test_an_interrupted_gguf_save_leaves_the_earlier_file_and_modelfile(tmp_path):
    tiny = tiny_model()  # its own: other tests train the shared one, and training puts LoRA layers into the model given
    f = tiny.save(tmp_path, format='gguf', quantize='f32', progress=False)
    before = files(tmp_path)
    assert set(before) == {f.name, 'Modelfile'}
    real, n = gguf.quants.quantize, []
    def quantize(*a):  # Ctrl-C after a few tensors were written
        n.append(1)
        if len(n) == 3: raise KeyboardInterrupt
        return real(*a)
    with mock.patch.object(gguf.quants, 'quantize', quantize), pytest.raises(KeyboardInterrupt):
        tiny_model(seed=1).save(tmp_path, format='gguf', quantize='f32', system='Be brief.', progress=False)
    assert files(tmp_path) == before and len(n) == 3

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    r = sft(tiny_model(seed=0), [chat_row('Who are you?', 'I am Quill.')] * 4, max_steps=1, batch_size=4,
            lora=dict(r=2, alpha=4, dropout=0.), run_dir=tmp_path_factory.mktemp('writes')/'run')
    return r.start(background=False, quiet=True)

def test_an_interrupted_upload_staging_leaves_no_folder(trained, tmp_path, monkeypatch):
    def card(*a, **kw): raise KeyboardInterrupt  # after the weights were saved
    monkeypatch.setattr(ftnb.hub, 'model_card', card)
    with pytest.raises(KeyboardInterrupt): hub_folder(trained, tmp_path/'up', 'you/quill')
    assert not (tmp_path/'up').exists() and leftovers(tmp_path) == []

def job_run(tmp_path, name='run', answer='I am Quill.', **kw):
    return sft(tiny_model(seed=0), [chat_row('Who are you?', answer)] * 8, max_steps=1, batch_size=4, lora=False, run_dir=tmp_path/name, **kw)

def test_export_refuses_a_folder_it_did_not_write(tmp_path):
    job = tmp_path/'job'; job.mkdir()
    for n in ('README.md', 'train.py', 'notes.txt'): (job/n).write_text(f'my {n}')
    with pytest.raises(FtnbError, match=f"{job} is not empty and holds no job export wrote: exporting would replace what is there "
                                        r"\(README.md, notes.txt, train.py\)"):
        job_run(tmp_path).export(job)
    assert files(job) == {n: f'my {n}'.encode() for n in ('README.md', 'notes.txt', 'train.py')} and leftovers(tmp_path) == []

def test_export_again_replaces_its_own_job_whole(tmp_path):
    job = job_run(tmp_path, 'with-eval', eval=load_data([chat_row('Your name?', 'Quill.')] * 2)).export(tmp_path/'job')
    assert (job/'eval.jsonl').exists()
    job_run(tmp_path).export(job)  # a job folder export wrote: replaced, nothing of the first job left
    assert not (job/'eval.jsonl').exists() and 'exported_from' in (job/'train.py').read_text()
    (job/'run').mkdir()  # what `python train.py` writes by default: a run, which a new export must not delete
    with pytest.raises(FtnbError, match=f"{job} holds a job export wrote, and more: run. Exporting again replaces"): job_run(tmp_path).export(job)
    assert (job/'run').is_dir()

def test_an_interrupted_export_leaves_the_earlier_job_whole(tmp_path, monkeypatch):
    job = job_run(tmp_path).export(tmp_path/'job')
    before = files(job)
    def config(*a, **kw): raise KeyboardInterrupt  # after train.py, the data and the model were written
    monkeypatch.setattr(ftnb.launch, 'accelerate_config', config)
    with pytest.raises(KeyboardInterrupt): job_run(tmp_path, 'other', answer='I am Ink.').export(job)  # another run's job
    assert b'Ink' not in before['data.jsonl']
    assert files(job) == before and leftovers(tmp_path) == []

def test_a_qlora_gguf_export_is_written_from_a_16bit_merge_without_copying_the_4bit_network(tmp_path):
    "A GGUF export of a 4-bit (QLoRA) network merges the adapter onto the base reloaded in 16 bits; the 4-bit network is never deep-copied."
    from peft import get_peft_model
    m = tiny_model(); base = tmp_path/'base'; m.model.save_pretrained(base); m.tokenizer.save_pretrained(base)
    net = get_peft_model(load_model(str(base), dtype='float32', device='cpu').model, lora_config(r=2))
    net.get_base_model().is_loaded_in_4bit = True  # what bitsandbytes marks (no GPU here to load one)
    import copy; real = copy.deepcopy
    def deepcopy(x, *a, **k):
        assert x is not net and x is not net.get_base_model(), 'the 4-bit network was copied'
        return real(x, *a, **k)
    with mock.patch('copy.deepcopy', deepcopy):
        f = Model(net, m.tokenizer, str(base)).save(tmp_path/'out', format='gguf', progress=False)
    assert f.exists() and f.suffix == '.gguf' and (f.parent/'Modelfile').exists()
