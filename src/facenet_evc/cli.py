"""``facenet-evc <command>``: one registry of commands, each module imported only when it runs.

Every command reads files, calls one package function and writes its output atomically; a
bad input ends with ``facenet-evc: error: <file>:<line>: ...`` and exit status 2, and no
partial output (``-v`` adds the traceback). Any other exception is a bug: its traceback is
printed, then ``facenet-evc: internal error ...`` as the last line, exit 1.

:data:`COMMANDS` is the single registry: a command is one entry naming the module that holds
its ``add_arguments(parser)`` / ``run_cli(args)`` pair (other function names where a module
serves several commands) and its one-line help. :func:`build_parser` adds the arguments of the
command being run only, so ``facenet-evc --help`` imports no command module at all and
``facenet-evc evaluate --help`` imports only evaluate's. This module is the top layer: it
imports only downward and nothing in the package imports it.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NamedTuple

from facenet_evc.errors import UserError

# OSError: missing or unreadable files; FloatingPointError: a diverged loss (lower the lr)
USER_ERRORS = (ValueError, OSError, UserError, FloatingPointError)


class Command(NamedTuple):
    """A subcommand: where its code lives and its one-line help."""

    module: str
    help: str
    add: str = "add_arguments"  # (parser) -> None: the command's arguments
    run: str = "run_cli"  # (args) -> int: the command itself

    def load(self) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
        mod = importlib.import_module(self.module)
        return getattr(mod, self.add), getattr(mod, self.run)


def _small(name: str, help_: str) -> Command:
    """A command of :mod:`facenet_evc.commands` (``add_<name>`` / ``run_<name>``)."""
    return Command("facenet_evc.commands", help_, f"add_{name}", f"run_{name}")


# In `facenet-evc --help` order. A new command is one entry here.
COMMANDS: dict[str, Command] = {
    # data and evaluation
    "make-demo": Command("facenet_evc.data.demo", "generate the embedded synthetic demo dataset (videos, captions, lexicon)"),
    "evaluate": _small("evaluate", "official EmVidCap metrics of predictions against references"),
    "prepare-references": _small("prepare_references", "normalise caption CSVs into R.json as EPAN's loader does"),
    "human-baseline": _small("human_baseline", "first reference as prediction vs the others (human agreement)"),
    "bias-stats": _small("bias_stats", "factual-emotional bias statistics (paper Sec. 3.1) under every reading"),
    "validate-config": _small("validate_config", "validate a dataset config and print it with defaults filled in"),
    # cached stages
    "clip-pretrain": Command("facenet_evc.stages.clip_pretrain",
                             "train a small CLIP contrastively on a dataset's videos (the demo has no pretrained weights)",
                             "add_clip_pretrain_arguments", "run_clip_pretrain_cli"),
    "extract-features": Command("facenet_evc.stages.clip_features",
                                "per-frame CLIP features V (eq. 1) and their mean (eq. 3) -> HDF5",
                                "add_extract_features_arguments", "run_extract_features_cli"),
    "import-features": Command("facenet_evc.stages.clip_features",
                               "import pre-extracted features in EPAN's HDF5 format -> HDF5",
                               "add_import_features_arguments", "run_import_features_cli"),
    "merge-features": Command("facenet_evc.stages.feature_shards",
                              "join the shard files of `extract-features --shard I/N` into one features file",
                              "add_merge_arguments", "run_merge_cli"),
    "build-repository": _small("build_repository", "CLIP text embeddings of the training captions (eq. 4) -> HDF5"),
    "retrieve": _small("retrieve", "top-K repository captions per video, own captions excluded (eq. 5-6)"),
    "triplets": Command("facenet_evc.stages.triplets",
                        "subject-predicate-object triplets of captions (one per line) -> JSONL"),
    "embed-triplets": _small("embed_triplets",
                             "S-P-O triplets of the repository captions + CLIP embeddings (eq. 7-9) -> HDF5"),
    "embed-lexicon": _small("embed_lexicon", "GloVe embeddings of the emotion lexicon (eq. 2) -> HDF5"),
    # the model
    "train": Command("facenet_evc.training.trainer", "train FACE-net on the cached artifacts (resumes from <out>/last)",
                     "add_train_arguments", "run_train_cli"),
    "predict": Command("facenet_evc.inference.predict",
                       "caption a split's videos with a checkpoint (beam search) -> predictions.json"),
    "retrieval-baseline": Command("facenet_evc.inference.baseline",
                                  "the top-1 retrieved caption as the prediction -> predictions.json"),
    "export": Command("facenet_evc.inference.export",
                      "a self-contained model directory (weights, repository + FAISS index, triplets, CLIP) for `caption`",
                      "add_export_arguments", "run_export_cli"),
    "caption": Command("facenet_evc.inference.caption", "caption new video files with an exported model directory",
                       "add_caption_arguments", "run_caption_cli"),
    # analyses of trained models
    "ablation-table": _small("ablation_table", "the ablation variants' metrics as the paper's tables (md + csv)"),
    "metrics-table": Command("facenet_evc.analysis.metrics_table",
                             "several runs' metrics.json side by side (paper column order, x100) -> md"),
    "compare": Command("facenet_evc.analysis.compare",
                       "B - A of every official metric with a paired-bootstrap 95% interval and p-value -> JSON + md"),
    "seeds-table": Command("facenet_evc.analysis.seeds_table",
                           "metrics as mean ± sd over training seeds, with each seed's paired-bootstrap comparison -> md + csv"),
    "efficiency": Command("facenet_evc.analysis.efficiency",
                          "parameters, FLOPs, latency / throughput and peak memory of captioning (paper Table 6) -> JSON + md"),
    "bias-groups": Command("facenet_evc.analysis.bias_groups",
                           "official metrics per F-E bias group of the test videos, for labelled prediction files -> JSON + md"),
    "explain": Command("facenet_evc.analysis.explain",
                       "per video: retrieved triplets, alpha/theta/g, emotion attention, gates, caption (paper Figs. 7-8) -> PNG + JSON"),
    "thumbnails": Command("facenet_evc.analysis.browse",
                          "a strip of frame thumbnails per video of a split (for the results browser) -> <video>.jpg",
                          "add_thumbnail_arguments", "run_thumbnail_cli"),
    "browse": Command("facenet_evc.analysis.browse",
                      "a static per-video results browser of several runs (index.html + data.js, opens from file://)"),
    "inspect": _small("inspect", "print what an HDF5 artifact holds (datasets, shapes, attrs)"),
}


def command_of(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (the first word that is not an option), or None."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command's name and help, with the arguments of ``command`` only."""
    p = argparse.ArgumentParser(prog="facenet-evc",
                                description="FACE-net emotional video captioning: pipeline stages, evaluation and tools.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        # argparse %-formats help strings (not descriptions): "95%" must reach it as "95%%"
        s = sub.add_parser(name, help=cmd.help.replace("%", "%%"), description=cmd.help)
        if name == command:
            add, run = cmd.load()
            add(s)
            s.set_defaults(func=run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(command_of(argv)).parse_args(argv)
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
