"""The official EmVidCap evaluation: golden numbers from EPAN's code, pycocoevalcap parity,
hand-built emotion-metric cases for every rule, input errors and the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from facenet_evc.cli import main
from facenet_evc.data.lexicon import read_lexicon
from facenet_evc.evaluation import METRICS, EvaluationInputError, evaluate
from facenet_evc.evaluation.emotion import EmotionMetricError, count_emotions, emotion_scores

from golden_cases import held_out_case

GOLDEN = json.loads((Path(__file__).parent / "data" / "official_golden.json").read_text())
FILES = {"S": "EmVidCap-S/EmVideo_test_captions.csv", "L": "EmVidCap-L/EmVideo_test_captions.csv"}


@pytest.mark.slow  # official metrics (METEOR, Java) over a whole real split
@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_reproduces_official_code(emvidcap, lexicon_dir, java, case):
    ds, kind = case.split("-")
    preds, refs = held_out_case(emvidcap / FILES[ds], perturb=kind == "perturbed")
    got = evaluate(preds, refs, lexicon_dir)
    for k, want in GOLDEN[case].items():
        assert got[k] == pytest.approx(want, abs=1e-4 if k == "METEOR" else 1e-6), k
    assert got["n_videos"] == len(preds)


@pytest.mark.slow  # official metrics (METEOR, Java) over a whole real split
def test_caption_metrics_equal_pycocoevalcap_called_directly(emvidcap, lexicon_dir, java):
    # each test video's first caption against its others, no PTBTokenizer
    preds, refs = held_out_case(emvidcap / FILES["S"], perturb=False)
    vids = sorted(preds)
    hyp = {i: [preds[v]] for i, v in enumerate(vids)}
    ref = {i: refs[v] for i, v in enumerate(vids)}
    want = dict(zip(["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"], Bleu(4).compute_score(ref, hyp, verbose=0)[0]))
    want["METEOR"] = Meteor().compute_score(ref, hyp)[0]
    want["ROUGE_L"] = Rouge().compute_score(ref, hyp)[0]
    want["CIDEr"] = Cider().compute_score(ref, hyp)[0]
    got = evaluate(preds, refs, lexicon_dir)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k


def test_fusion_scores_follow_the_official_formulas(emvidcap, lexicon_dir):
    preds, refs = held_out_case(emvidcap / FILES["L"], perturb=True)
    m = evaluate(preds, refs, lexicon_dir, meteor=False)
    emo = 0.1 * (m["Acc_sw"] + m["Acc_c"])
    assert m["BFS"] == pytest.approx(0.8 * (0.1 * m["Bleu_1"] + 0.2 * m["Bleu_2"] + 0.3 * m["Bleu_3"] + 0.4 * m["Bleu_4"]) + emo)
    assert m["CFS"] == pytest.approx(0.8 * m["CIDEr"] + emo)
    assert "METEOR" not in m


# ---- emotion metrics, one designed case per rule (official 34-category lexicon) --------

@pytest.fixture(scope="module")
def lex(lexicon_dir):
    return read_lexicon(lexicon_dir)


def counts(lex, preds, refs):
    c = count_emotions(preds, refs, lex)
    return (c.n_right, c.n_wrong, c.n_without_emotion, c.n_one_right, c.n_right_and_wrong)


def test_reference_word_gives_every_category(lex):
    # 'annoying' is in anger and annoyance; the reference side credits both, so a hypothesis
    # 'confused' (annoyance only) is right
    assert counts(lex, {"v": "a man is confused"}, {"v": ["a man is annoying"]}) == (1, 0, 0, 1, 0)


def test_hypothesis_word_gives_only_its_first_category(lex):
    # hypothesis 'annoying' counts as anger only (anger.txt sorts first): wrong here
    assert counts(lex, {"v": "a man is annoying"}, {"v": ["a man is confused"]}) == (0, 1, 0, 0, 0)
    # 'timid' -> fear (not shy)
    assert counts(lex, {"v": "a timid cat"}, {"v": ["a shy cat"]}) == (0, 1, 0, 0, 0)
    assert counts(lex, {"v": "a timid cat"}, {"v": ["an afraid cat"]}) == (1, 0, 0, 1, 0)


def test_tokens_are_exact_and_case_sensitive(lex):
    assert counts(lex, {"v": "a Happy dog"}, {"v": ["a happy dog"]}) == (0, 0, 1, 0, 0)
    assert counts(lex, {"v": "a happy, dog"}, {"v": ["a happy dog"]}) == (0, 0, 1, 0, 0)


def test_labels_are_distinct_per_caption(lex):
    # two joy words = one right label; angry + angrily = one wrong label
    assert counts(lex, {"v": "happy happily angry angrily"}, {"v": ["a happy dog"]}) == (1, 1, 0, 1, 1)


def test_acc_sw_and_acc_c_on_a_designed_set(lex):
    preds = {
        "a": "a happy dog",            # right
        "b": "a sad dog happily",      # joy right, sadness wrong -> right and wrong
        "c": "a dog",                  # no emotion -> phi
        "d": "an angry dog",           # wrong
        "e": "a glad cheerful dog",    # one right label
    }
    refs = {v: ["a happy dog runs"] for v in preds}
    assert counts(lex, preds, refs) == (3, 2, 1, 3, 1)
    s = emotion_scores(preds, refs, lex)
    assert s["Acc_sw"] == pytest.approx(3 / (3 + 2 + 1))
    assert s["Acc_c"] == pytest.approx(math.exp(1 / (1 - 3 + 1e-4)) * 3 / 5)


def test_acc_c_zero_when_nothing_right(lex):
    s = emotion_scores({"v": "a dog", "w": "an angry dog"}, {"v": ["a happy dog"], "w": ["a happy dog"]}, lex)
    assert s == {"Acc_sw": 0.0, "Acc_c": 0.0}


def test_acc_c_overflow_is_a_clear_error(lex):
    # every caption with a right label also has a wrong one: N_h == N_r1 > 0
    with pytest.raises(EmotionMetricError, match="N_h == N_r1"):
        emotion_scores({"v": "happy angry dog"}, {"v": ["a happy dog"]}, lex)


# ---- input errors ----------------------------------------------------------------------

def test_prediction_without_references_names_video(lexicon_dir):
    with pytest.raises(EvaluationInputError, match="'vid9' has a prediction but no references"):
        evaluate({"vid1": "a dog", "vid9": "a cat"}, {"vid1": ["a dog"]}, lexicon_dir, meteor=False)


def test_references_without_prediction_names_video(lexicon_dir):
    with pytest.raises(EvaluationInputError, match="'vid2' has references but no prediction"):
        evaluate({"vid1": "a dog"}, {"vid1": ["a dog"], "vid2": ["a cat"]}, lexicon_dir, meteor=False)


@pytest.mark.parametrize("preds,refs,msg", [
    ({}, {}, "non-empty"),
    ({"v": ["a dog"]}, {"v": ["a dog"]}, "expected one caption string"),
    ({"v": "a dog"}, {"v": []}, "non-empty list"),
    ({"v": "a dog"}, {"v": "a dog"}, "non-empty list"),
])
def test_malformed_inputs(lexicon_dir, preds, refs, msg):
    with pytest.raises(EvaluationInputError, match=msg):
        evaluate(preds, refs, lexicon_dir, meteor=False)


# ---- CLI -------------------------------------------------------------------------------

@pytest.mark.slow  # official metrics (METEOR, Java) over a whole real split
def test_cli_writes_all_metrics(tmp_path, emvidcap, lexicon_dir, java, capsys):
    preds, refs = held_out_case(emvidcap / FILES["S"], perturb=False)
    (tmp_path / "P.json").write_text(json.dumps(preds))
    (tmp_path / "R.json").write_text(json.dumps(refs))
    out = tmp_path / "M.json"
    rc = main(["evaluate", "--predictions", str(tmp_path / "P.json"), "--references", str(tmp_path / "R.json"),
               "--lexicon", str(lexicon_dir), "--out", str(out)])
    assert rc == 0
    m = json.loads(out.read_text())
    assert list(m) == list(METRICS) + ["n_videos"]
    assert m["CIDEr"] == pytest.approx(GOLDEN["S-plain"]["CIDEr"], abs=1e-6)


def test_cli_bad_json_names_file_and_writes_nothing(tmp_path, lexicon_dir, capsys):
    (tmp_path / "P.json").write_text('{"vid1": "a dog",}')
    (tmp_path / "R.json").write_text('{"vid1": ["a dog"]}')
    out = tmp_path / "M.json"
    rc = main(["evaluate", "--predictions", str(tmp_path / "P.json"), "--references", str(tmp_path / "R.json"),
               "--lexicon", str(lexicon_dir), "--out", str(out)])
    assert rc == 2
    assert "P.json:1:" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == sorted(tmp_path.iterdir())
    assert {p.name for p in tmp_path.iterdir()} == {"P.json", "R.json"}


@pytest.mark.slow  # starts four METEOR JVMs
def test_shared_meteor_scores_each_call_like_its_own_process(java, monkeypatch):
    import facenet_evc.evaluation.captions as captions

    started = []

    class CountedMeteor(captions.Meteor):
        def __init__(self):
            started.append(self)
            super().__init__()

    monkeypatch.setattr(captions, "Meteor", CountedMeteor)
    a = ({0: ["a dog runs across the field", "a brown dog is running"], 1: ["a man sadly plays the piano"]},
         {0: ["a dog is running"], 1: ["a man plays piano happily"]})
    b = ({0: ["the red ball falls down", "a ball drops"]}, {0: ["a red ball is falling down"]})
    alone = [captions.caption_scores(*case)["METEOR"] for case in (a, b, a)]
    assert len(started) == 3
    with captions.shared_meteor():
        shared = [captions.caption_scores(*case)["METEOR"] for case in (a, b, a)]
    assert len(started) == 4  # one process for the three calls of the block
    assert shared == alone and alone[0] != alone[1]
    assert started[-1].meteor_p.poll() is not None  # the block's JVM is gone after it
