"""Where the workflow keeps a dataset's artifacts: ``<results_root>/<dataset>/<relative path>``.

The one definition of the layout: ``rules/*.smk`` build their inputs and outputs from it and
``facenet-evc export --config`` finds a trained dataset's artifacts with it. A field left out
of :func:`artifact_path` stays a ``{field}`` wildcard, so a rule can pass ``ds="{ds}"``.
"""
from __future__ import annotations

CLIP = "clip/clip.pt"
FEATURES = "features/clip_frames.h5"
FEATURE_SHARD = "features/shards/clip_frames.{i}-of-{n}.h5"
REPOSITORY = "retrieval/repository.h5"
TOPK = "retrieval/topk_k{k}.h5"
TRIPLETS = "triplets/triplets.h5"
LEXICON_H5 = "emotion/lexicon.h5"
# {run}: "" for a dataset's own run, "ablations/<variant>/" for an ablation variant
TRAIN_DIR = "{run}train"
TRAIN_SUMMARY = "{run}train/summary.json"
CHECKPOINT = "{run}train/best"
# train.select: last: the run's final step
LAST_CHECKPOINT = "{run}train/last"
# train.refit: the model retrained on every training video for the selected step count
REFIT_CHECKPOINT = "{run}train/refit/last"
PREDICTIONS = "{run}predictions.json"


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def artifact_path(results_root: str, ds: str, relative: str, **fields: object) -> str:
    """``<results_root>/<ds>/<relative>`` with ``fields`` filled in; the others stay wildcards."""
    return f"{results_root}/{ds}/" + relative.format_map(_KeepMissing({k: str(v) for k, v in fields.items()}))


def checkpoint_name(train: dict) -> str:
    """The folder inside a run's ``train/`` whose checkpoint predicts: ``best`` (picked on the
    held-out videos), ``last`` with ``train.select: last``, or with ``train.refit`` the retrained
    ``refit/last``. The one rule, used by the workflow and the trainer's summary alike."""
    if train.get("refit"):
        return "refit/last"
    return "last" if train.get("select") == "last" else "best"


def final_checkpoint(train: dict) -> str:
    """:func:`checkpoint_name` under ``{run}train`` (one of the three ``*CHECKPOINT`` paths above)."""
    return f"{TRAIN_DIR}/{checkpoint_name(train)}"


def model_inputs(results_root: str, ds: str, k: int | str) -> dict[str, str]:
    """The cached inputs of training and prediction (``--features --topk --triplets --lexicon-h5``)."""
    return {
        "features": artifact_path(results_root, ds, FEATURES),
        "topk": artifact_path(results_root, ds, TOPK, k=k),
        "triplets": artifact_path(results_root, ds, TRIPLETS),
        "lexicon_h5": artifact_path(results_root, ds, LEXICON_H5),
    }
