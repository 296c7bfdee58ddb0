"""Human feedback (`ftnb.feedback`): a labelling session judged through its widget, headless (ipywidgets' own
buttons and boxes, clicked and typed in), written to disk judgement by judgement, resumed as after a kernel restart,
and trained on with DPO; hostile prompts stay text."""
import json
import pytest
from ftnb.core import FtnbError
from ftnb.models import tiny_model
from ftnb.feedback import feedback, read_feedback, FeedbackView
from ftnb.prefs import dpo
from ftnb.sft import sft
from ftnb.example_data import persona_data

QS = ['What is 2 + 2?', 'Name a colour.', 'Who wrote Hamlet?', 'What is the capital of France?', 'Say hi.']

@pytest.fixture(scope='module')
def net(): return tiny_model(seed=0)

def lines(p): return [json.loads(l) for l in p.read_text().splitlines()]

def test_judging_in_the_widget_writes_each_judgement_as_it_is_made_and_dpo_trains_on_the_pairs(net, tmp_path):
    fb = feedback(net, QS, path=tmp_path/'fb.jsonl', max_new_tokens=6)
    assert len(fb) == 5 and fb.next == 0 and fb.counts['left'] == 5
    assert fb.wins == {} and 'two samples of' in repr(fb)  # one model: no win rate to report
    v = fb.widget()
    assert isinstance(v, FeedbackView) and 'Pair 1 of 5' in v.pair.value
    v.buttons['a'].click()  # pair 0: A
    assert fb.choices[0]['pick'] == 'a' and 'Pair 2 of 5' in v.pair.value
    assert lines(tmp_path/'fb.jsonl')[-1]['judged'] == 0  # on disk already
    v.keys.value = 't'  # pair 1: a tie, by key
    assert fb.choices[1]['pick'] == 'tie' and v.keys.value == ''
    v.edit.value = 'William Shakespeare.'
    v.buttons['b'].click()  # pair 2: B, with a better answer typed in
    assert fb.choices[2] == dict(pick='b', edit='William Shakespeare.') and v.edit.value == ''
    v.buttons['skip'].click(); v.keys.value = 'A'  # pair 3 skipped, pair 4 A by key (either case)
    assert fb.next is None and fb.counts == dict(a=2, b=1, tie=1, skip=1, left=0)
    assert 'every pair is judged' in v.status.value
    v.back.click()  # back to the skipped pair 3, judged again: the last judgement counts
    assert 'Pair 4 of 5</b> (judged: skip)' in v.pair.value
    v.buttons['b'].click()
    assert fb.choices[3]['pick'] == 'b' and read_feedback(tmp_path/'fb.jsonl').choices[3]['pick'] == 'b'
    p = fb.pairs
    assert p.kind == 'preference' and len(p) == 4  # A, B, B, A: the tie gives no pair
    row = p.rows[[r['prompt'] for r in p.rows].index('Who wrote Hamlet?')]
    it = fb.items[2]
    assert (row['chosen'], row['rejected']) == (it['b'], it['a'])
    assert fb.demonstrations.rows == [dict(prompt='Who wrote Hamlet?', completion='William Shakespeare.')]
    run = dpo(tiny_model(seed=0), p, max_steps=2, batch_size=2, run_dir=tmp_path/'dpo').start(quiet=True)
    assert run.state == 'finished' and any('rewards/margins' in h for h in run.history)

def test_a_restarted_kernel_resumes_with_the_same_answers_and_a_cut_line_loses_nothing_after_it(net, tmp_path, monkeypatch):
    f = tmp_path/'fb.jsonl'
    fb = feedback(net, QS, path=f, max_new_tokens=6)
    fb.choose(0, 'b').choose(1, 'a')
    with open(f, 'a') as h: h.write('{"judged": 2, "pi')  # a crash mid-write
    import ftnb.models
    monkeypatch.setattr(ftnb.models, 'generate', lambda *a, **k: pytest.fail('a resumed session generated answers'))
    again = feedback(net, QS, path=f)
    assert [it['a'] for it in again.items] == [it['a'] for it in fb.items] and again.next == 2 and again.at == 2
    again.choose(2, 'tie')  # appended on a line of its own, not glued to the cut one
    assert read_feedback(f).choices == {0: dict(pick='b', edit=None), 1: dict(pick='a', edit=None), 2: dict(pick='tie', edit=None)}
    with pytest.raises(FtnbError, match=r'holds a session on other prompts \(5 prompts, not these 2\)'): feedback(net, QS[:2], path=f)
    with pytest.raises(FtnbError, match="its prompt 0 is 'What is 1 \\+ 1\\?'|its prompt 0 is 'What is 2 \\+ 2\\?'"):
        feedback(net, ['What is 1 + 1?'] + QS[1:], path=f)

def test_bad_judgements_say_what_and_where(net, tmp_path):
    fb = feedback(net, QS[:2], path=tmp_path/'fb.jsonl', max_new_tokens=4)
    with pytest.raises(FtnbError, match=r"pair 7 does not exist; this session has pairs 0 to 1"): fb.choose(7, 'a')
    with pytest.raises(FtnbError, match=r"pick='better' for pair 1 is not a judgement"): fb.choose(1, 'better')
    with pytest.raises(FtnbError, match=r'No pairs yet .*none of 2 judged A or B \(1 ties, 0 skipped, 1 left\)'):
        fb.choose(0, 'tie').pairs
    with pytest.raises(FtnbError, match='give `path=`'): feedback(net, QS)
    (tmp_path/'notes.jsonl').write_text('{"a": 1}\n')
    with pytest.raises(FtnbError, match='notes.jsonl holds no pairs of answers'): feedback(net, QS, path=tmp_path/'notes.jsonl')
    assert lines(tmp_path/'notes.jsonl') == [{'a': 1}]  # someone else's file is left as it was

def test_prompts_and_answers_are_shown_as_text_never_as_markup(net, tmp_path):
    fb = feedback(net, ['<img src=x onerror=alert(1)> & <script>alert(2)</script>'], path=tmp_path/'fb.jsonl', max_new_tokens=4)
    fb.items[0]['a'] = '<b>bold</b>'  # an answer that looks like markup
    html = fb.pair_html(0)
    assert '<img' not in html and '<script' not in html and '<b>bold' not in html
    assert '&lt;img src=x onerror=alert(1)&gt; &amp; &lt;script&gt;' in html and '&lt;b&gt;bold&lt;/b&gt;' in html

def test_a_run_compared_with_its_base_keeps_the_file_in_its_folder_and_counts_wins(tmp_path):
    run = sft(tiny_model(seed=0), persona_data(n=8), max_steps=2, batch_size=4, lr=1e-2, run_dir=tmp_path/'sft').start(quiet=True)
    fb = feedback(run, QS[:4], against='base', max_new_tokens=4)
    assert fb.path == tmp_path/'sft'/'feedback.jsonl' and set(fb.sources) == {'tuned', 'base'}
    assert {(it['a_from'], it['b_from']) for it in fb.items} <= {('tuned', 'base'), ('base', 'tuned')}
    for i, it in enumerate(fb.items): fb.choose(i, ('a' if it['a_from'] == 'tuned' else 'b') if i < 3 else 'tie')
    assert fb.wins == dict(base=0, tuned=3, tie=1) and 'wins: base 0, tuned 3, tie 1' in repr(fb)
    with pytest.raises(FtnbError, match="against='base' compares a trained run"): feedback(tiny_model(), QS, against='base', path=tmp_path/'x.jsonl')

def test_pairs_people_already_judged_read_as_a_session_with_the_chosen_answer_picked(tmp_path):
    from ftnb.feedback import feedback_from_pairs
    from ftnb.example_data import preference_pairs
    rows = preference_pairs('correct', n=12)
    fb = feedback_from_pairs(rows, tmp_path/'known.jsonl')
    assert fb.next is None and fb.wins == dict(chosen=12, rejected=0, tie=0)
    assert {it['a_from'] for it in fb.items} == {'chosen', 'rejected'}  # the chosen answer is not always A
    assert [r['chosen'] for r in fb.pairs.rows] == [r['chosen'] for r in rows]  # back to the same pairs
    assert read_feedback(tmp_path/'known.jsonl').choices == fb.choices
    with pytest.raises(FtnbError, match='it takes preference pairs'): feedback_from_pairs([dict(prompt='Hi', completion='Hello')], tmp_path/'x.jsonl')
