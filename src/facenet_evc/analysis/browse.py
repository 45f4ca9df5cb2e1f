"""A static per-video results browser: ``results/<ds>/browse/index.html``.

``facenet-evc browse`` writes a folder that opens from ``file://`` with nothing fetched (no
server, no CDN):

* ``index.html``, ``browse.css``, ``browse.js``: the page, copied from the package's
  ``browse_template/``;
* ``data.js``: one ``window.FACENET_BROWSE = {...}`` assignment (a script, since browsers refuse
  ``fetch()`` of a JSON file under ``file://``). It is columnar: per video the shared facts
  (references, F-E bias group, retrieved captions with S/P/O and the model's weights) once,
  and per run one array of ``[caption, CIDEr, outcome, emotion words]`` aligned with the
  videos; numbers rounded to 4 digits. EVC-Combine's test split (hundreds of videos,
  thousands of references) stays around a megabyte;
* ``thumbs/<video>.jpg``: frame strips from :func:`make_thumbnails`, linked (or copied) from a
  cache folder built once (rule ``browse_thumbnails``); none for features-only datasets.

Per video and run, reusing the evaluation code:

* CIDEr-D with the idf of the whole test set (:func:`.bias_groups.cider_per_video`, as the
  ``CIDEr*`` column of the bias-group table);
* the emotion outcome of the caption under the official rule
  (:func:`facenet_evc.evaluation.emotion.caption_labels`): ``right`` (every emotion label of
  the caption is among the references' categories), ``mixed`` (right and wrong labels: the
  caption counts for N_r1 and N_h), ``wrong`` (only wrong labels), ``none`` (no lexicon word);
  with each emotion word, its label and whether it is right;
* the F-E bias group of the video (:func:`.bias_groups.video_groups`, the default reading).

With a checkpoint, the retrieved captions of each video carry the model's alpha (S/P/O,
eq. 12), theta (eq. 15) and router weight g (eq. 26) from one encoder pass
(:func:`.explain.explained_records` without beam search, so the same numbers as ``explain``).

Comparing two runs A and B on the page, a video's emotion is *fixed* by A when B's outcome is
not ``right`` and A's is, *broken* when the reverse holds (the counts are shown as "A fixes
the emotion of X videos and breaks Y").
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from facenet_evc.io import atomic_path, read_json

log = logging.getLogger(__name__)

TEMPLATE_FILES = ("index.html", "browse.css", "browse.js")
OUTCOMES = ("right", "mixed", "wrong", "none")
THUMB_FRAMES = 6
THUMB_HEIGHT = 56
DIGITS = 4


# --------------------------------------------------------------------------- per-video facts


def emotion_outcome(caption: str, ref_cats: set[str], lexicon: Any) -> tuple[str, list[list[Any]]]:
    """``(outcome, [[word, label, right], ...])`` of one caption under the official rule."""
    from facenet_evc.evaluation.emotion import caption_labels

    right, wrong = caption_labels(caption, ref_cats, lexicon)
    outcome = "mixed" if right and wrong else "right" if right else "wrong" if wrong else "none"
    words = []
    for token in caption.split():
        label = lexicon.first_category(token)
        if label is not None:
            words.append([token, label, label in ref_cats])
    return outcome, words


def run_results(predictions: Mapping[str, str], references: Mapping[str, list[str]], video_ids: Sequence[str],
                lexicon: Any) -> list[list[Any]]:
    """Per video (in ``video_ids`` order): ``[caption, CIDEr, outcome, emotion words]``."""
    from facenet_evc.analysis.bias_groups import cider_per_video
    from facenet_evc.evaluation.emotion import reference_categories

    cider = cider_per_video({v: predictions[v] for v in video_ids}, references)
    rows = []
    for v in video_ids:
        outcome, words = emotion_outcome(predictions[v], reference_categories(references[v], lexicon), lexicon)
        rows.append([predictions[v], round(cider[v], DIGITS), outcome, words])
    return rows


def _round(x: Any) -> Any:
    if x is None:
        return None
    return np.round(np.asarray(x, dtype=np.float64), DIGITS).tolist()


def compact_explain(rec: Mapping[str, Any]) -> dict[str, Any]:
    """What the page shows of an :func:`.explain.video_record`: the retrieved captions with S/P/O and
    similarity, alpha (K, 3), theta (K,), g (K,), the gates' means and what is omitted."""
    gates = rec.get("gates") or {}
    return {
        "retrieved": [[r["caption"], r.get("subject"), r.get("predicate"), r.get("object"), round(r["similarity"], DIGITS)]
                      for r in rec.get("retrieved") or []],
        "alpha": _round(rec.get("alpha")),
        "theta": _round(rec.get("theta")),
        "g": _round(rec.get("g")),
        "gates": {k: round(v["mean"], DIGITS) for k, v in gates.items() if v is not None} or None,
        "omitted": rec.get("omitted") or [],
    }


# --------------------------------------------------------------------------- thumbnails


def thumbnail_strip(frames: np.ndarray, height: int = THUMB_HEIGHT) -> Any:
    """A PIL image of the frames (N, H, W, 3) side by side, each scaled to ``height`` pixels."""
    from PIL import Image

    tiles = []
    for f in frames:
        img = Image.fromarray(f)
        width = max(1, round(img.width * height / img.height))
        tiles.append(img.resize((width, height), Image.BILINEAR))
    strip = Image.new("RGB", (sum(t.width for t in tiles), height))
    x = 0
    for t in tiles:
        strip.paste(t, (x, 0))
        x += t.width
    return strip


def make_thumbnails(videos_dir: str | Path, video_ids: Iterable[str], out_dir: str | Path,
                    n_frames: int = THUMB_FRAMES, height: int = THUMB_HEIGHT, progress: bool = True) -> dict[str, str]:
    """``out_dir/<video>.jpg`` frame strips of the videos that have a file in ``videos_dir``
    (PyAV decode, :func:`facenet_evc.data.video.read_frames`). A strip newer than its video is
    kept (made once); returns ``{video_id: file name}``."""
    from facenet_evc.analysis.explain import find_video_files
    from facenet_evc.data.video import read_frames
    from facenet_evc.progress import progress_bar

    ids = list(dict.fromkeys(video_ids))
    files = find_video_files(videos_dir, ids)
    if len(files) < len(ids):
        log.warning("%d of %d videos have no file in %s: no thumbnail for them", len(ids) - len(files), len(ids),
                    videos_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = kept = 0
    names: dict[str, str] = {}
    for vid in progress_bar(list(files), desc="thumbnails", unit="video", disable=not progress):
        target = out / f"{vid}.jpg"
        names[vid] = target.name
        if target.is_file() and target.stat().st_mtime >= files[vid].stat().st_mtime:
            kept += 1
            continue
        strip = thumbnail_strip(read_frames(files[vid], n_frames), height)  # frames: (n, H, W, 3) uint8
        with atomic_path(target, suffix=".jpg") as tmp:
            strip.save(tmp, format="JPEG", quality=80)
            os.chmod(tmp, 0o644)  # readable by whoever is shown the page
        made += 1
    log.info("thumbnails: %d made, %d cached, in %s", made, kept, out)
    return names


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the cache and the page share the bytes
    except OSError:
        shutil.copy2(src, dst)


# --------------------------------------------------------------------------- the page


def build_data(
    runs: Mapping[str, str | Path],
    references_json: str | Path,
    lexicon_dir: str | Path,
    captions: Any,
    explained: Mapping[str, Mapping[str, Any]] | None = None,
    thumbs: Mapping[str, str] | None = None,
    explain_figures: Mapping[str, str] | None = None,
    title: str = "",
    t1: float | None = None,
    t2: float | None = None,
) -> dict[str, Any]:
    """The ``FACENET_BROWSE`` object: ``videos`` (per video facts) and ``results`` (per run, aligned).

    ``runs``: ``{name: predictions.json}``, the first the page's default run A, the second its
    default run B. Every run must caption exactly the references' videos.
    """
    from facenet_evc.analysis.bias_groups import video_groups
    from facenet_evc.data.lexicon import read_lexicon
    from facenet_evc.evaluation import check_inputs
    from facenet_evc.evaluation.bias import T1, T2
    from facenet_evc.evaluation.emotion import reference_categories

    if not runs:
        raise ValueError("browse: give at least one run (--runs NAME=predictions.json)")
    lexicon = read_lexicon(lexicon_dir)
    refs = read_json(references_json)
    if not isinstance(refs, dict):
        raise ValueError(f"{references_json}: expected a JSON object {{video_id: [captions]}}")
    video_ids = sorted(refs)
    groups = video_groups(captions, lexicon, t1=T1 if t1 is None else t1, t2=T2 if t2 is None else t2)
    missing = [v for v in video_ids if v not in groups]
    if missing:
        raise ValueError(f"{references_json}: {len(missing)} videos are not in the caption files (e.g. {missing[:5]}): "
                         "references and captions must be the same split")
    results: dict[str, list[list[Any]]] = {}
    for name, path in runs.items():
        preds = read_json(path)
        check_inputs(preds, refs, where=(str(path), str(references_json)))
        results[name] = run_results(preds, refs, video_ids, lexicon)
        log.info("browse: run %s (%s) scored per video", name, path)
    videos = []
    for v in video_ids:
        row: dict[str, Any] = {
            "id": v,
            "group": groups[v],
            "refs": list(refs[v]),
            "ref_cats": sorted(reference_categories(refs[v], lexicon)),
            "thumb": f"thumbs/{thumbs[v]}" if thumbs and v in thumbs else None,
            "figure": (explain_figures or {}).get(v),
        }
        if explained is not None and v in explained:
            row.update(compact_explain(explained[v]))
        videos.append(row)
    return {
        "title": title,
        "runs": list(runs),
        "run_files": {k: str(p) for k, p in runs.items()},
        "categories": list(lexicon.categories),
        "outcomes": list(OUTCOMES),
        "groups": ["emotional", "neutral", "factual"],
        "explained_with": next((str(r.get("checkpoint")) for r in (explained or {}).values()), None),
        "videos": videos,
        "results": results,
    }


def write_page(data: Mapping[str, Any], out_dir: str | Path, thumbs_dir: str | Path | None = None) -> Path:
    """The page folder (module docstring), written beside itself and renamed into place: a failed
    build leaves the previous folder, never a half-written one. Returns ``out_dir/index.html``."""
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        template = resources.files("facenet_evc.analysis") / "browse_template"
        for name in TEMPLATE_FILES:
            (tmp / name).write_bytes((template / name).read_bytes())
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
        (tmp / "data.js").write_text(f"window.FACENET_BROWSE = {payload};\n", encoding="utf-8")
        if thumbs_dir is not None:
            (tmp / "thumbs").mkdir()
            for v in data["videos"]:
                if v["thumb"]:
                    _link_or_copy(Path(thumbs_dir) / Path(v["thumb"]).name, tmp / v["thumb"])
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def explain_all(checkpoint: str | Path, features: str | Path, topk: str | Path, triplets: str | Path,
                lexicon_h5: str | Path, video_ids: Sequence[str], device: str = "auto", batch_size: int = 64,
                threads: int | None = None) -> dict[str, dict[str, Any]]:
    """alpha / theta / g of every video from the checkpoint (:func:`.explain.explained_records`,
    encoder only)."""
    import torch

    from facenet_evc.analysis.explain import explained_records

    if threads:
        torch.set_num_threads(int(threads))
    return dict(explained_records(checkpoint, features, topk, triplets, lexicon_h5, video_ids, batch_size=batch_size,
                                  device=device, decode=False))


def figure_links(explain_dir: str | Path | None, out_dir: str | Path, video_ids: Iterable[str]) -> dict[str, str]:
    """``{video: relative link}`` to ``explain_dir/<video>.png`` for the videos that have one."""
    if explain_dir is None:
        return {}
    explain_dir = Path(explain_dir)
    rel = Path(os.path.relpath(explain_dir.resolve(), Path(out_dir).resolve()))
    return {v: (rel / f"{v}.png").as_posix() for v in video_ids if (explain_dir / f"{v}.png").is_file()}


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc browse``."""
    from facenet_evc.data.sources import add_captions_args
    from facenet_evc.training.data import add_artifact_args

    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=PATH",
                        help="labelled predictions.json files; the first is run A, the second run B by default "
                             "(e.g. facenet=results/ds/predictions.json retrieval=results/ds/baselines/retrieval/...)")
    parser.add_argument("--references", required=True, help="R.json of the test split")
    parser.add_argument("--lexicon", required=True, help="folder of <category>.txt emotion word files")
    add_captions_args(parser)  # the test caption files: the F-E bias groups
    parser.add_argument("--t1", type=float, default=None, help="Rule 1 emotional threshold (default 1/6)")
    parser.add_argument("--t2", type=float, default=None, help="Rule 1 factual threshold (default 1/10)")
    parser.add_argument("--checkpoint", help="checkpoint of run A (e.g. <train>/best): alpha, theta, g per video")
    add_artifact_args(parser, required=False)  # with --checkpoint
    parser.add_argument("--lexicon-h5", help="lexicon embeddings HDF5 (with --checkpoint)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--thumbs", help="folder of <video>.jpg strips (facenet-evc thumbnails); none: no thumbnails")
    parser.add_argument("--explain-dir", help="folder of explain figures <video>.png, linked from their rows")
    parser.add_argument("--title", default="", help="page title, e.g. the dataset name")
    parser.add_argument("--out", required=True, help="the page folder (index.html, data.js, ...)")


def run_cli(args: argparse.Namespace) -> int:
    from facenet_evc.analysis.bias_groups import parse_labelled
    from facenet_evc.data.sources import caption_sources
    from facenet_evc.data.emvidcap import read_split

    runs = parse_labelled(args.runs)
    captions = read_split(caption_sources(args.captions, args.captions_seps))
    video_ids = sorted(read_json(args.references))
    explained = None
    needed = {"--features": args.features, "--topk": args.topk, "--triplets": args.triplets,
              "--lexicon-h5": args.lexicon_h5}
    if args.checkpoint:
        absent = [k for k, v in needed.items() if not v]
        if absent:
            raise ValueError(f"--checkpoint needs {', '.join(absent)}")
        explained = explain_all(args.checkpoint, args.features, args.topk, args.triplets, args.lexicon_h5, video_ids,
                                device=args.device, threads=args.threads)
    thumbs = None
    if args.thumbs:
        thumbs = {v: f"{v}.jpg" for v in video_ids if (Path(args.thumbs) / f"{v}.jpg").is_file()}
    data = build_data(runs, args.references, args.lexicon, captions, explained, thumbs,
                      figure_links(args.explain_dir, args.out, video_ids), args.title, args.t1, args.t2)
    page = write_page(data, args.out, args.thumbs)
    size = (Path(args.out) / "data.js").stat().st_size
    print(json.dumps({"page": str(page), "videos": len(data["videos"]), "runs": list(runs), "data_js_bytes": size,
                      "thumbnails": sum(1 for v in data["videos"] if v["thumb"]),
                      "explained": explained is not None}))
    return 0


def add_thumbnail_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc thumbnails``."""
    from facenet_evc.data.sources import add_captions_args

    parser.add_argument("--videos", required=True, help="folder of <video_id>.<ext> files")
    add_captions_args(parser)  # the split whose videos get a strip
    parser.add_argument("--frames", type=int, default=THUMB_FRAMES, help="frames per strip")
    parser.add_argument("--height", type=int, default=THUMB_HEIGHT, help="strip height in pixels")
    parser.add_argument("--out", required=True, help="folder of <video_id>.jpg (kept strips are not redone)")


def run_thumbnail_cli(args: argparse.Namespace) -> int:
    from facenet_evc.data.sources import split_video_ids

    if args.frames < 1 or args.height < 8:
        raise ValueError(f"--frames must be >= 1 and --height >= 8, got {args.frames} and {args.height}")
    names = make_thumbnails(args.videos, split_video_ids(args.captions, args.captions_seps), args.out,
                            n_frames=args.frames, height=args.height)
    print(json.dumps({"out": str(args.out), "thumbnails": len(names)}))
    return 0
