"""`facenet-evc browse`: the static results browser, its data and the page in a real browser.

Uses the tiny artifacts and untrained checkpoint of test_explain (tests/helpers.py) (4 test videos, lexicon joy /
sadness / anger, "upset" in two categories). Run A and run B are crafted so the emotion
outcome of every video is known: A fixes te00 and breaks te01, te02 and te03.
The page test opens index.html from file:// in headless Chromium (Debian's `chromium`;
skipped where it is missing), applies filters through the address, reads the rows it drew
and takes a screenshot.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facenet_evc.analysis.browse import build_data, emotion_outcome, make_thumbnails, write_page
from facenet_evc.analysis.explain import explained_records
from facenet_evc.cli import main
from facenet_evc.data.emvidcap import CaptionSource, read_split
from facenet_evc.data.lexicon import read_lexicon
from helpers import TEST, build_explain_artifacts, make_checkpoint

RUN_A = {"te00": "a happy man plays", "te01": "a happy woman cooks", "te02": "a dog barks",
         "te03": "a happy man is angry"}
RUN_B = {"te00": "a man plays", "te01": "a sad woman cooks", "te02": "an angry dog barks",
         "te03": "a happy man plays guitar"}
OUTCOME_A = {"te00": "right", "te01": "wrong", "te02": "none", "te03": "mixed"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> dict[str, str]:
    """The artifacts, refs.json and one video file of test_explain (helpers.build_explain_artifacts)."""
    return build_explain_artifacts(tmp_path_factory.mktemp("explain"))


@pytest.fixture(scope="module")
def page(art, tmp_path_factory):
    """The page built by the CLI with both runs, the checkpoint's weights and thumbnails."""
    root = tmp_path_factory.mktemp("browse")
    ckpt = make_checkpoint(art, root / "ckpt")
    (root / "a.json").write_text(json.dumps(RUN_A))
    (root / "b.json").write_text(json.dumps(RUN_B))
    assert main(["thumbnails", "--videos", art["videos"], "--captions", art["test"], "--out", str(root / "thumbs")]) == 0
    out = root / "site" / "browse"
    assert main(["browse", "--runs", f"full={root / 'a.json'}", f"other={root / 'b.json'}", "--references", art["refs"],
                 "--lexicon", art["lexicon_dir"], "--captions", art["test"], "--checkpoint", str(ckpt),
                 "--features", art["features"], "--topk", art["topk"], "--triplets", art["triplets"],
                 "--lexicon-h5", art["lexicon_h5"], "--device", "cpu", "--thumbs", str(root / "thumbs"),
                 "--title", "tiny", "--out", str(out)]) == 0
    text = (out / "data.js").read_text(encoding="utf-8")
    prefix = "window.FACENET_BROWSE = "
    assert text.startswith(prefix) and text.rstrip().endswith(";")
    data = json.loads(text[len(prefix):].rstrip().rstrip(";"))
    return out, data, ckpt


def test_emotion_outcome_follows_the_official_rule(art):  # noqa: F811
    lexicon = read_lexicon(art["lexicon_dir"])
    # "upset" is an anger and a sadness word: as a reference word both count; in a caption the first
    # lexicon file in sorted order (anger) labels it, as the official get_result does
    assert emotion_outcome("a happy dog", {"joy"}, lexicon) == ("right", [["happy", "joy", True]])
    assert emotion_outcome("a happy angry dog", {"joy"}, lexicon)[0] == "mixed"
    assert emotion_outcome("an upset dog", {"sadness"}, lexicon) == ("wrong", [["upset", "anger", False]])
    assert emotion_outcome("a dog", {"joy"}, lexicon) == ("none", [])


def test_data_holds_every_video_and_run(page, art):  # noqa: F811
    _, data, _ = page
    ids = [v["id"] for v in data["videos"]]
    assert ids == sorted(TEST) and data["runs"] == ["full", "other"]
    for i, v in enumerate(ids):
        caption, cider, outcome, words = data["results"]["full"][i]
        assert caption == RUN_A[v] and outcome == OUTCOME_A[v] and cider >= 0
        assert data["results"]["other"][i][0] == RUN_B[v]
    assert data["results"]["full"][3][3] == [["happy", "joy", True], ["angry", "anger", False]]
    refs = json.loads(Path(art["refs"]).read_text())
    assert all(v["refs"] == refs[v["id"]] for v in data["videos"])
    assert {v["group"] for v in data["videos"]} <= {"emotional", "neutral", "factual"}
    # only te00 has a video file: one thumbnail, linked into the page folder
    assert [v["thumb"] for v in data["videos"]] == ["thumbs/te00.jpg", None, None, None]


def test_weights_are_the_models(page, art):  # noqa: F811
    """alpha, theta, g and the S/P/O rows on the page are explain's numbers (rounded to 4 digits)."""
    _, data, ckpt = page
    recs = dict(explained_records(ckpt, art["features"], art["topk"], art["triplets"], art["lexicon_h5"], TEST,
                                  device="cpu", decode=False, progress=False))
    for v in data["videos"]:
        rec = recs[v["id"]]
        for key in ("alpha", "theta", "g"):
            np.testing.assert_allclose(v[key], rec[key], atol=5e-5)
        assert [r[:4] for r in v["retrieved"]] == [[r["caption"], r["subject"], r["predicate"], r["object"]]
                                                   for r in rec["retrieved"]]
        assert len(v["retrieved"]) == 2 and np.allclose(np.sum(v["g"]), 1, atol=1e-3)


def test_thumbnails_are_made_once(art, tmp_path):  # noqa: F811
    out = tmp_path / "thumbs"
    assert make_thumbnails(art["videos"], TEST, out, n_frames=3, height=20, progress=False) == {"te00": "te00.jpg"}
    img = Image.open(out / "te00.jpg")
    assert img.height == 20 and img.width == 3 * 20  # three square 32x32 frames scaled to 20 px
    mtime = (out / "te00.jpg").stat().st_mtime_ns
    make_thumbnails(art["videos"], TEST, out, n_frames=3, height=20, progress=False)
    assert (out / "te00.jpg").stat().st_mtime_ns == mtime  # kept, not re-decoded


def test_a_run_missing_a_video_is_named(art, tmp_path):  # noqa: F811
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({k: v for k, v in RUN_A.items() if k != "te02"}))
    captions = read_split([CaptionSource(Path(art["test"]))])
    with pytest.raises(ValueError, match="bad.json"):
        build_data({"a": bad}, art["refs"], art["lexicon_dir"], captions)


def test_a_failed_build_keeps_the_previous_page(page, tmp_path):
    out, data, _ = page
    site = tmp_path / "browse"
    write_page(data, site)
    before = (site / "data.js").read_bytes()
    with pytest.raises(FileNotFoundError):
        write_page(data, site, thumbs_dir=tmp_path / "no_such_thumbs")
    assert (site / "data.js").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["browse"]  # no half-written folder left


def test_large_run_data_stays_small(tmp_path):
    """EVC-Combine size: 600 test videos x 20 references, 3 runs, K = 4 -> data.js of about a megabyte."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    sent = lambda n: " ".join(rng.choice(words, n))  # noqa: E731
    videos = [{"id": f"v{i:04d}", "group": "neutral", "refs": [sent(10) for _ in range(20)], "ref_cats": ["joy"],
               "thumb": None, "figure": None,
               "retrieved": [[sent(10), "a", "b", "c", 0.5]] * 4, "alpha": [[0.3333, 0.3333, 0.3334]] * 4,
               "theta": [0.25] * 4, "g": [0.25] * 4, "gates": {"b_f": 0.1, "b_e": 0.2}, "omitted": []}
              for i in range(600)]
    results = {r: [[sent(10), 0.1234, "none", []] for _ in videos] for r in ("a", "b", "c")}
    write_page({"title": "", "runs": ["a", "b", "c"], "videos": videos, "results": results}, tmp_path / "p")
    size = (tmp_path / "p" / "data.js").stat().st_size
    assert size < 2_000_000, size
    assert (tmp_path / "p" / "index.html").stat().st_size < 10_000  # no data inline in the page


# --------------------------------------------------------------------------- in a real browser


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", "--window-size=1400,900"]
    return subprocess.run([CHROMIUM, *flags, *extra, url], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(profile)})


def shown_rows(page_dir: Path, tmp_path: Path, view: str) -> tuple[list[str], str]:
    r = chromium(f"{(page_dir / 'index.html').as_uri()}#{view}", tmp_path / f"profile{abs(hash(view))}", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    return re.findall(r'<tr class="row[^"]*" data-vid="([^"]+)"', r.stdout), r.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on the PATH (Debian: apt-get install chromium)")
def test_page_filters_in_headless_chromium(page, tmp_path):
    out, data, _ = page
    rows, dom = shown_rows(out, tmp_path, "a=full&b=other")
    assert rows == sorted(TEST)
    m = re.search(r'id="compare" data-fixed="(\d+)" data-broken="(\d+)"', dom)
    assert m and (int(m[1]), int(m[2])) == (1, 3), dom[-3000:]  # A fixes te00, breaks te01 te02 te03
    assert "full</b> fixes the emotion of" in dom

    assert shown_rows(out, tmp_path, "a=full&b=other&outcome=wrong")[0] == ["te01"]
    assert shown_rows(out, tmp_path, "a=full&b=other&outcome=notright")[0] == ["te01", "te02", "te03"]
    assert shown_rows(out, tmp_path, "a=full&b=other&change=fixed")[0] == ["te00"]
    assert shown_rows(out, tmp_path, "a=full&b=other&change=broken&sort=cider_desc")[0] == sorted(
        ["te01", "te02", "te03"], key=lambda v: (-data["results"]["full"][TEST.index(v)][1], v))
    # search by word: "guitar" is in te00's and te03's references (and in B's caption of te03)
    assert shown_rows(out, tmp_path, "a=full&b=other&q=guitar")[0] == ["te00", "te03"]
    group = data["videos"][0]["group"]
    expect = [v["id"] for v in data["videos"] if v["group"] == group]
    assert shown_rows(out, tmp_path, f"a=other&b=-&group={group}")[0] == expect

    shot = tmp_path / "browse.png"
    r = chromium(f"{(out / 'index.html').as_uri()}#a=full&b=other&outcome=notright", tmp_path / "profile_shot",
                 f"--screenshot={shot}")
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (900, 1400) and img.std() > 10  # something was drawn
    target = os.environ.get("FACENET_EVC_SCREENSHOT")
    if target:  # keep the screenshot to look at it
        shutil.copy(shot, target)
