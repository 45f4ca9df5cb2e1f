"""`facenet-evc explain`: per-video figures and JSON whose numbers are the model's own forward pass.

A tiny FACE-net (the test_training artifacts: N=4 frames, K=2, d=16, three lexicon categories
with one word in two of them) is saved untrained as a checkpoint; every module's output is
captured with a global forward hook while ``explain`` runs and compared with the JSON it wrote.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facenet_evc.analysis.explain import explain, explain_batch, video_record
from facenet_evc.cli import main
from facenet_evc.data.emvidcap import normalize_caption
from facenet_evc.models.dbar import DBAR
from facenet_evc.models.fcue import FCUE
from facenet_evc.models.pvea import PVEA
from facenet_evc.training.data import ArtifactError, load_artifacts
from facenet_evc.training.decoding import generate_captions
from facenet_evc.training.factory import load_model
from helpers import MODEL_CFG, STEP, TEMPLATES, TEST, build_explain_artifacts, make_checkpoint


# one torch thread for the whole module (conftest.py: one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> dict[str, str]:
    return build_explain_artifacts(tmp_path_factory.mktemp("explain"))


def _run(art: dict[str, str], ckpt: Path, out: Path, videos=TEST, **kw) -> dict:
    return explain(ckpt, art["features"], art["topk"], art["triplets"], art["lexicon_h5"], videos, out,
                   lexicon_dir=art["lexicon_dir"], references_json=art["refs"], videos_dir=art["videos"],
                   device="cpu", progress=False, **kw)


@pytest.fixture(scope="module")
def full(art, tmp_path_factory):
    """explain() on the full model with every FCUE / PVEA / DBAR output recorded by a global hook."""
    root = tmp_path_factory.mktemp("full")
    ckpt = make_checkpoint(art, root / "ckpt")
    hooked: dict[type, list] = {FCUE: [], PVEA: [], DBAR: []}

    def hook(module, inputs, output):
        if type(module) in hooked:
            hooked[type(module)].append(output)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        records = _run(art, ckpt, root / "out")
    finally:
        handle.remove()
    return ckpt, root / "out", records, hooked


def _f32(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def test_writes_a_png_and_a_json_per_video(full, art):
    _, out, records, _ = full
    assert sorted(records) == sorted(TEST)
    for vid in TEST:
        with Image.open(out / f"{vid}.png") as im:
            im.verify()
        with Image.open(out / f"{vid}.png") as im:
            assert im.format == "PNG" and im.size[0] > 0 and im.size[1] > 0
        rec = json.loads((out / f"{vid}.json").read_text())
        assert rec == json.loads(json.dumps(records[vid]))
        assert rec["video_id"] == vid and rec["step"] == STEP and rec["omitted"] == rec["notes"] == []
        assert rec["references"] == [normalize_caption(c) for c in TEMPLATES[int(vid[2:]) % 3]]
        assert rec["decoding"] == {"num_beams": 5, "max_len": 15}
    assert records[TEST[0]]["video_file"].endswith(f"{TEST[0]}.mp4")
    assert "video_file" not in records[TEST[1]]  # no file: no strip, no error


def test_weights_are_normalised(full):
    _, _, records, _ = full
    for rec in records.values():
        K = MODEL_CFG["k"]
        alpha = np.array(rec["alpha"])
        assert alpha.shape == (K, 3) and (alpha > 0).all()
        np.testing.assert_allclose(alpha.sum(1), 1.0, atol=1e-6)  # eq. 12
        np.testing.assert_allclose(sum(rec["theta"]), 1.0, atol=1e-6)  # eq. 15
        np.testing.assert_allclose(sum(rec["g"]), 1.0, atol=1e-6)  # eq. 26
        emo = rec["emotion"]
        dist, mass = np.array(emo["distribution"]), np.array(emo["category_mass"])
        assert dist.shape == mass.shape == (K, 3)
        np.testing.assert_allclose(dist.sum(1), 1.0, atol=1e-6)
        # "upset" is both sadness and anger, so the masses sum to 1 + its attention
        assert (mass.sum(1) > 1.0).all()
        # lift = mass / the category's share of the words: the distribution is the lifts normalised
        lift = np.array(emo["lift"])
        np.testing.assert_allclose(dist, lift / lift.sum(1, keepdims=True), rtol=1e-5)
        np.testing.assert_allclose(np.array(emo["word_attention"]).sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(sum(emo["classifier"]), 1.0, atol=1e-6)
        for gate in ("b_f", "b_e"):
            g = rec["gates"][gate]
            assert len(g["values"]) == MODEL_CFG["d"] and sum(g["histogram"]["counts"]) == MODEL_CFG["d"]
            assert -1 <= g["min"] <= g["mean"] <= g["max"] <= 1  # tanh; float32 may round to +-1


def test_json_numbers_are_the_forward_pass_outputs(full):
    """Every number equals, bit for bit, what FCUE / PVEA / DBAR returned inside explain()."""
    _, _, records, hooked = full
    assert [len(v) for v in hooked.values()] == [1, 1, 1]  # one batch: one call of each module
    fc, pv, db = hooked[FCUE][0], hooked[PVEA][0], hooked[DBAR][0]
    for b, vid in enumerate(TEST):
        rec = records[vid]
        assert torch.equal(_f32(rec["alpha"]), fc.alpha[b])
        assert torch.equal(_f32(rec["theta"]), fc.theta[b])
        assert torch.equal(_f32(rec["g"]), db.g[b])
        assert torch.equal(_f32(rec["gates"]["b_f"]["values"]), db.b_f[b])
        assert torch.equal(_f32(rec["gates"]["b_e"]["values"]), db.b_e[b])
        assert torch.equal(_f32(rec["emotion"]["word_attention"]), pv.lexicon_attn[b].mean(1))  # frame mean


def test_explain_path_equals_the_normal_forward(full, art):
    """The encoder output explain decodes from is the normal forward's, and so is the caption."""
    ckpt, _, records, _ = full
    model, _ = load_model(ckpt)
    a = load_artifacts(art["features"], art["topk"], art["triplets"], art["lexicon_h5"])
    batch = a.video_inputs(TEST)
    enc, ids = explain_batch(model, batch)
    with torch.no_grad():
        normal = model(batch)
    assert torch.equal(enc["memory"], normal["memory"])
    assert torch.equal(enc["emotion_logits"], normal["emotion_logits"])
    assert generate_captions(model, a, TEST) == {v: records[v]["caption"] for v in TEST}  # predict's path
    rec = video_record(1, enc, ids[1], model, a, None, TEST[1])
    assert rec["g"] == records[TEST[1]]["g"] and rec["alpha"] == records[TEST[1]]["alpha"]


def test_retrieved_triplets_are_the_triplet_file_rows(full, art):
    _, _, records, _ = full
    a = load_artifacts(art["features"], art["topk"], art["triplets"])
    for vid in TEST:
        row = a.topk_video_ids.index(vid)
        for k, item in enumerate(records[vid]["retrieved"]):
            r = int(a.topk_indices[row, k])
            assert item["repository_row"] == r and item["caption"] == a.repo_captions[r]
            assert item["similarity"] == pytest.approx(float(a.topk_scores[row, k]))
            assert (item["subject"], item["predicate"], item["object"]) == (f"subj{r}", f"pred{r}", f"obj{r}" if r % 2 else "")


@pytest.mark.parametrize("over, nulls, note", [
    ({"use_pvea": False}, ["emotion"], "EA off"),
    ({"use_dbar": False}, ["g", "gates"], "BA off"),
    ({"use_fcue": False}, ["alpha", "theta"], "FC off"),
    ({"self_refine": False}, ["alpha"], "SR off"),
    ({"use_retrieval": False}, ["alpha", "theta", "g", "emotion", "gates"], "RE off"),
    ({"order": "emotion_first"}, [], "order emotion_first"),
])
def test_ablated_modules_are_omitted_and_named(art, tmp_path, over, nulls, note):
    ckpt = make_checkpoint(art, tmp_path / "ckpt", **over)
    rec = _run(art, ckpt, tmp_path / "out", videos=TEST[:1])[TEST[0]]
    for key in nulls:
        assert rec[key] is None, key
    for key in {"alpha", "theta", "g", "emotion", "gates"} - set(nulls):
        assert rec[key] is not None, key
    assert any(s.startswith(note) for s in rec["omitted"] + rec["notes"]), rec["omitted"] + rec["notes"]
    if over.get("use_pvea") is False:
        assert rec["gates"]["b_e"] is None and rec["gates"]["b_f"] is not None
    assert (rec["retrieved"] == []) == (note == "RE off")
    with Image.open(tmp_path / "out" / f"{TEST[0]}.png") as im:
        assert im.format == "PNG" and min(im.size) > 0


def test_cli_first_n_test_videos(full, art, tmp_path, capsys):
    ckpt = full[0]
    out = tmp_path / "cli"
    rc = main(["explain", "--checkpoint", str(ckpt), "--features", art["features"], "--topk", art["topk"],
               "--triplets", art["triplets"], "--lexicon-h5", art["lexicon_h5"], "--lexicon", art["lexicon_dir"],
               "--captions", art["test"], "--captions-seps", "comma", "--first", "2", "--device", "cpu",
               "--out-dir", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{v}.{e}" for v in TEST[:2] for e in ("json", "png"))
    printed = json.loads(capsys.readouterr().out)
    assert printed["captions"] == {v: full[2][v]["caption"] for v in TEST[:2]}
    rec = json.loads((out / f"{TEST[0]}.json").read_text())
    assert rec["references"] is None and "emotion_words" in rec


def test_cli_errors_name_the_problem(full, art, tmp_path, capsys):
    ckpt = str(full[0])
    base = ["explain", "--checkpoint", ckpt, "--features", art["features"], "--topk", art["topk"],
            "--triplets", art["triplets"], "--lexicon-h5", art["lexicon_h5"], "--out-dir", str(tmp_path / "o")]
    assert main(base) == 2
    assert "name the videos" in capsys.readouterr().err
    assert main(base + ["--first", "2"]) == 2
    assert "--first needs --captions" in capsys.readouterr().err
    assert main(base + ["nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and art["features"] in err
    # a lexicon the checkpoint was not trained with
    other = Path(art["root"]) / "other_lexicon.h5"
    from facenet_evc.data.lexicon import read_lexicon
    from facenet_evc.stages.emotion_embed import write_lexicon_h5

    lex_dir = Path(art["root"]) / "other_lex"
    lex_dir.mkdir()
    (lex_dir / "joy.txt").write_text("glad\nhappy\n")
    (lex_dir / "sadness.txt").write_text("sad\nupset\nblue\n")
    lexicon = read_lexicon(lex_dir)
    write_lexicon_h5(other, lexicon, np.ones((len(lexicon.words), MODEL_CFG["d_e"])), [], {})
    args = base[:-4] + ["--lexicon-h5", str(other), "--out-dir", str(tmp_path / "o"), TEST[0]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(other) in err and "lexicon" in err
    with pytest.raises(ArtifactError):
        explain(ckpt, art["features"], art["topk"], art["triplets"], str(other), [TEST[0]], tmp_path / "o")
