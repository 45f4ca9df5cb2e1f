"""The four feature artifacts FACE-net trains on, and batches in the FaceNet batch contract.

Artifacts (each written by its stage, read whole into memory: even EVC-Combine's frame
features are a few hundred MB):

* features (``clip_features``): ``video_ids`` (n,) str, ``frames`` (n, N, d_v), ``mean`` (n, d_v);
* top-K (``retrieval``): per video the K repository rows retrieved for it (own-video captions
  excluded), ``indices``/``scores`` (m, K), and the repository table ``repository/caption``,
  ``repository/video_id``;
* triplets (``triplets``): one row per repository caption, in repository order, with the
  (n_repo, 3, d_T) CLIP embeddings of its S, P, O (eq. 8) — or, for a large repository,
  only the retrieved captions with their repository rows in ``repository_index``;
* lexicon (``emotion_embed``): words, their categories (``member`` (N_w, C)) and E_0 (N_w, d_E).

Contract checked here: the triplet file's captions equal the repository's, caption for
caption (so ``indices`` can index the embeddings), or at the rows of its ``repository_index``,
which must then hold every retrieved row; :meth:`Artifacts.check_repository` checks the
repository is the trainval split in file order, optionally followed by external captions. A
video missing from an artifact is an error naming the video and the file.

Training samples are (video, caption) pairs over the training videos' captions normalised
as EPAN does (:func:`~facenet_evc.data.emvidcap.normalize_caption`: ASCII, lowercase, no
punctuation, <= 15 words); a caption that normalises to nothing is dropped (it would teach
the model to emit an empty caption).

Validation split (:func:`split_train_val`): ``val_fraction`` of the *trainval* videos,
chosen by a permutation of the sorted video ids drawn from a ``torch.Generator`` seeded with
``seed``; the split therefore depends only on the set of ids and the seed, not on file
order. The test split is never used for model selection.
"""
from __future__ import annotations

import argparse

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import os

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from facenet_evc.data.emvidcap import normalize_caption
from facenet_evc.io import read_strings


class ArtifactError(ValueError):
    """An artifact that is missing a video, or that does not match another artifact or the config."""


def _read_features(path: Path) -> tuple[list[str], np.ndarray]:
    # clip_features.read_features also loads ``mean``; we only need the frames, and reading
    # directly keeps this module independent of the open_clip imports of that stage.
    if not path.is_file():
        raise FileNotFoundError(f"{path}: feature file not found")
    with h5py.File(path, "r") as f:
        for name in ("video_ids", "frames"):
            if name not in f:
                raise ArtifactError(f"{path}: not a frame-feature file (no {name!r} dataset)")
        ids = read_strings(f["video_ids"])
        frames = np.asarray(f["frames"][()], dtype=np.float32)  # (n, N, d_v)
    if frames.ndim != 3 or frames.shape[0] != len(ids):
        raise ArtifactError(f"{path}: frames has shape {frames.shape}, expected ({len(ids)}, N, d)")
    return ids, frames


def _row_index(ids: Sequence[str], path: Path) -> dict[str, int]:
    rows: dict[str, int] = {}
    for i, vid in enumerate(ids):
        if vid in rows:
            raise ArtifactError(f"{path}: video id {vid!r} appears twice (rows {rows[vid]} and {i})")
        rows[vid] = i
    return rows


@dataclass
class Artifacts:
    """Everything a batch is gathered from; build with :func:`load_artifacts`."""

    paths: dict[str, str]
    video_ids: list[str]  # rows of ``frames``
    frames: np.ndarray  # (n_videos, N, d_v) float32
    topk_video_ids: list[str]  # rows of ``topk_indices``
    topk_indices: np.ndarray  # (m, K) int64 into the repository
    topk_scores: np.ndarray  # (m, K) float32 cosines (eq. 5)
    repo_captions: list[str]
    repo_video_ids: list[str]
    triplet_embeddings: np.ndarray  # (n_repo, 3, d_T) float32, or (n_rows, 3, d_T) with triplet_rows
    lexicon_words: list[str] = field(default_factory=list)
    lexicon_categories: list[str] = field(default_factory=list)
    lexicon_member: np.ndarray | None = None  # (N_w, C) bool, every category of each word
    lexicon_vectors: np.ndarray | None = None  # (N_w, d_E) float32, E_0 of eq. 2
    triplet_rows: np.ndarray | None = None  # (n_rows,) sorted repository row of each triplet row; None = all

    def __post_init__(self) -> None:
        self._video_row = _row_index(self.video_ids, Path(self.paths["features"]))
        self._topk_row = _row_index(self.topk_video_ids, Path(self.paths["topk"]))
        self._word_row = {w: i for i, w in enumerate(self.lexicon_words)}

    # sizes -------------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[1])

    @property
    def d_v(self) -> int:
        return int(self.frames.shape[2])

    @property
    def k(self) -> int:
        return int(self.topk_indices.shape[1])

    @property
    def d_t(self) -> int:
        return int(self.triplet_embeddings.shape[2])

    @property
    def d_e(self) -> int:
        return 0 if self.lexicon_vectors is None else int(self.lexicon_vectors.shape[1])

    @property
    def n_categories(self) -> int:
        return len(self.lexicon_categories)

    # checks ------------------------------------------------------------------------------
    def check_videos(self, video_ids: Iterable[str]) -> None:
        """Raise :class:`ArtifactError` naming the first video missing from the features or top-K file."""
        for vid in video_ids:
            if vid not in self._video_row:
                raise ArtifactError(f"video {vid!r} has no row in the features file {self.paths['features']}")
            if vid not in self._topk_row:
                raise ArtifactError(f"video {vid!r} has no row in the top-K file {self.paths['topk']}")

    def check_repository(self, trainval: pd.DataFrame, sources: Sequence[str] = ()) -> None:
        """The repository must be the trainval captions in file order (raw or normalised text),
        optionally followed by external captions (video id ``EXTERNAL_VIDEO_ID``)."""
        from facenet_evc.data.corpus import EXTERNAL_VIDEO_ID

        where = ", ".join(str(s) for s in sources) or "the trainval caption files"
        ids = [str(v) for v in trainval["VideoID"]]
        caps = [str(c) for c in trainval["EmCaptions"]]
        topk = self.paths["topk"]
        n_own = len(self.repo_video_ids) - sum(1 for v in self.repo_video_ids if v == EXTERNAL_VIDEO_ID)
        if len(ids) != n_own:
            raise ArtifactError(f"the repository of {topk} has {n_own} training captions but {where} "
                                f"hold {len(ids)}: the top-K file was built from other captions")
        for i, (vid, cap, rvid, rcap) in enumerate(zip(ids, caps, self.repo_video_ids, self.repo_captions)):
            if vid != rvid or (cap != rcap and normalize_caption(cap) != normalize_caption(rcap)):
                raise ArtifactError(f"repository row {i} of {topk} is ({rvid!r}, {rcap!r}) but caption {i} of "
                                    f"{where} is ({vid!r}, {cap!r}): the top-K file was built from other captions")

    def check_model_config(self, cfg: Any) -> None:
        """Widths and sizes of a :class:`~facenet_evc.models.config.FaceNetConfig` against the files."""
        checks = [("n_frames", self.n_frames, "features", "N (frames per video)"),
                  ("d_v", self.d_v, "features", "frame feature width")]
        if cfg.use_retrieval:
            checks += [("k", self.k, "topk", "K (retrieved captions per video)"),
                       ("d_t", self.d_t, "triplets", "triplet embedding width")]
        if self.lexicon_vectors is not None:
            checks.append(("d_e", self.d_e, "lexicon", "lexicon embedding width"))
        for key, value, kind, what in checks:
            if int(getattr(cfg, key)) != value:
                raise ArtifactError(f"model config {key}={getattr(cfg, key)} but the {kind} file "
                                    f"{self.paths[kind]} has {what} {value}")

    # batches -----------------------------------------------------------------------------
    def video_inputs(self, video_ids: Sequence[str]) -> dict[str, Tensor]:
        """``frames`` (B, N, d_v), ``triplets`` (B, K, 3, d_T), ``sims`` (B, K) of the videos."""
        self.check_videos(video_ids)
        vrows = np.fromiter((self._video_row[v] for v in video_ids), dtype=np.int64, count=len(video_ids))
        trows = np.fromiter((self._topk_row[v] for v in video_ids), dtype=np.int64, count=len(video_ids))
        idx = self.topk_indices[trows]  # (B, K) repository rows
        if self.triplet_rows is not None:
            idx = np.searchsorted(self.triplet_rows, idx)  # (B, K) rows of the retrieved-only triplet file
        return {
            "frames": torch.from_numpy(self.frames[vrows]),  # (B, N, d_v)
            "triplets": torch.from_numpy(self.triplet_embeddings[idx]),  # (B, K, 3, d_T)
            "sims": torch.from_numpy(self.topk_scores[trows]),  # (B, K)
        }

    def emotion_targets(self, captions: Sequence[str]) -> Tensor:
        """(B, C) multi-hot: every category of every lexicon word of each caption (eq. 31's E)."""
        if self.lexicon_member is None:
            raise ArtifactError("emotion targets need the lexicon file")
        out = np.zeros((len(captions), self.n_categories), dtype=np.float32)
        for b, caption in enumerate(captions):
            for word in caption.split():
                row = self._word_row.get(word)
                if row is not None:
                    out[b, self.lexicon_member[row]] = 1.0  # a two-category word counts for both
        return torch.from_numpy(out)

    def top1_caption(self, video_id: str) -> str:
        """The best retrieved repository caption of a video (raw text)."""
        self.check_videos([video_id])
        return self.repo_captions[int(self.topk_indices[self._topk_row[video_id], 0])]


def load_artifacts(
    features_h5: str | Path,
    topk_h5: str | Path,
    triplets_h5: str | Path,
    lexicon_h5: str | Path | None = None,
) -> Artifacts:
    """Read the four artifacts and check they agree with one another (see module docstring).

    ``lexicon_h5`` may be None for inference from a checkpoint, which carries E_0 itself.
    """
    from facenet_evc.stages.retrieval import read_topk_h5
    from facenet_evc.stages.triplets import read_repository_index, read_triplets_h5

    features_h5, topk_h5, triplets_h5 = Path(features_h5), Path(topk_h5), Path(triplets_h5)
    for p, what in ((topk_h5, "top-K"), (triplets_h5, "triplets")):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: {what} file not found")
    ids, frames = _read_features(features_h5)
    topk = read_topk_h5(topk_h5)
    t_captions, _, t_emb, _ = read_triplets_h5(triplets_h5)
    t_emb = np.asarray(t_emb, dtype=np.float32)

    repo = topk["repo_captions"]
    indices = topk["indices"]  # (m, K)
    if indices.size and (indices.min() < 0 or indices.max() >= len(repo)):
        raise ArtifactError(f"{topk_h5}: indices outside the repository [0, {len(repo)})")
    t_rows = read_repository_index(triplets_h5)
    if t_rows is not None:
        _check_triplet_rows(t_rows, t_captions, t_emb, repo, topk["video_ids"], indices, triplets_h5, topk_h5)
    elif len(t_captions) != len(repo):
        raise ArtifactError(f"{triplets_h5} holds {len(t_captions)} captions but the repository of {topk_h5} holds "
                            f"{len(repo)}: the triplets must be extracted from the repository captions, in order")
    elif t_captions != repo:
        i = next(i for i, (a, b) in enumerate(zip(t_captions, repo)) if a != b)
        raise ArtifactError(f"caption {i} differs between {triplets_h5} ({t_captions[i]!r}) and the repository of "
                            f"{topk_h5} ({repo[i]!r}): the triplets must follow the repository order")
    if t_emb.ndim != 3 or t_emb.shape[:2] != (len(t_captions), 3):
        raise ArtifactError(f"{triplets_h5}: embeddings have shape {t_emb.shape}, expected ({len(t_captions)}, 3, d_T)")

    paths = {"features": str(features_h5), "topk": str(topk_h5), "triplets": str(triplets_h5),
             "lexicon": "" if lexicon_h5 is None else str(lexicon_h5)}
    lex: dict[str, Any] = {}
    if lexicon_h5 is not None:
        from facenet_evc.stages.emotion_embed import read_lexicon_h5

        lexicon_h5 = Path(lexicon_h5)
        if not lexicon_h5.is_file():
            raise FileNotFoundError(f"{lexicon_h5}: lexicon embedding file not found")
        raw = read_lexicon_h5(lexicon_h5)
        member = np.asarray(raw["member"], dtype=bool)
        vectors = np.asarray(raw["vectors"], dtype=np.float32)
        if member.shape != (len(raw["words"]), len(raw["categories"])) or vectors.shape[0] != len(raw["words"]):
            raise ArtifactError(f"{lexicon_h5}: member {member.shape} / vectors {vectors.shape} do not match "
                                f"{len(raw['words'])} words and {len(raw['categories'])} categories")
        lex = dict(lexicon_words=list(raw["words"]), lexicon_categories=list(raw["categories"]),
                   lexicon_member=member, lexicon_vectors=vectors)
    return Artifacts(paths=paths, video_ids=ids, frames=frames, topk_video_ids=topk["video_ids"],
                     topk_indices=indices, topk_scores=topk["scores"], repo_captions=repo,
                     repo_video_ids=topk["repo_video_ids"], triplet_embeddings=t_emb, triplet_rows=t_rows, **lex)


def _check_triplet_rows(rows: np.ndarray, t_captions: Sequence[str], t_emb: np.ndarray, repo: Sequence[str],
                        topk_ids: Sequence[str], indices: np.ndarray, triplets_h5: Path, topk_h5: Path) -> None:
    """A retrieved-only triplet file must name real repository rows, hold their captions and
    cover every row the top-K file retrieved."""
    if rows.shape != (len(t_captions),) or (rows.size and (rows[0] < 0 or rows[-1] >= len(repo)
                                                            or (np.diff(rows) <= 0).any())):
        raise ArtifactError(f"{triplets_h5}: repository_index must be {len(t_captions)} increasing rows of the "
                            f"repository of {topk_h5} ([0, {len(repo)}))")
    for i, r in enumerate(rows.tolist()):
        if t_captions[i] != repo[r]:
            raise ArtifactError(f"caption {i} of {triplets_h5} ({t_captions[i]!r}) is not repository row {r} of "
                                f"{topk_h5} ({repo[r]!r}): the triplets were built from another repository")
    missing = ~np.isin(indices, rows)  # (m, K)
    if missing.any():
        q, j = (int(a[0]) for a in np.nonzero(missing))
        raise ArtifactError(f"{topk_h5} retrieves repository row {int(indices[q, j])} for video {topk_ids[q]!r} but "
                            f"{triplets_h5} has no triplet for it: rebuild the triplets from this top-K file")


# --------------------------------------------------------------------------- samples and splits


def split_train_val(video_ids: Iterable[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``(train, val)`` video ids, both sorted: ``round(val_fraction * n)`` ids (at least one when
    ``val_fraction > 0``, at most ``n - 1``) taken from a permutation of the sorted ids drawn
    from ``torch.Generator().manual_seed(seed)``."""
    ids = sorted(set(video_ids))
    if val_fraction <= 0:
        return ids, []
    if len(ids) < 2:
        raise ValueError(f"cannot hold out validation videos from {len(ids)} trainval video(s)")
    n_val = min(max(1, round(val_fraction * len(ids))), len(ids) - 1)
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(int(seed))).tolist()
    val = {ids[i] for i in perm[:n_val]}
    return [v for v in ids if v not in val], sorted(val)


def make_samples(
    captions: Mapping[str, Sequence[str]], video_ids: Collection[str], max_len: int = 15
) -> list[tuple[str, str]]:
    """(video, normalised caption) pairs of ``video_ids`` in ``captions`` order (file order)."""
    keep = set(video_ids)
    out: list[tuple[str, str]] = []
    for vid, caps in captions.items():
        if vid in keep:
            out.extend((vid, c) for c in (normalize_caption(c, max_len) for c in caps) if c)
    return out


class EVCDataset(torch.utils.data.Dataset):
    """(video id, normalised caption) samples; :class:`Collator` turns a list of them into a batch."""

    def __init__(self, artifacts: Artifacts, samples: Sequence[tuple[str, str]]) -> None:
        artifacts.check_videos(dict.fromkeys(v for v, _ in samples))
        self.artifacts = artifacts
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[str, str]:
        return self.samples[i]


class Collator:
    """Batches in the FaceNet contract (see :mod:`facenet_evc.models.facenet`).

    ``frames`` (B, N, d_v), ``triplets`` (B, K, 3, d_T), ``sims`` (B, K), ``emotion_targets``
    (B, C), ``targets`` / ``target_weights`` (B, L) from the decoder's ``encode_targets``
    (weights ``1 + delta`` on lexicon words), plus ``video_ids`` and ``captions`` lists.
    """

    def __init__(self, artifacts: Artifacts, decoder: Any, delta: float) -> None:
        self.artifacts = artifacts
        self.decoder = decoder
        self.delta = float(delta)

    def __call__(self, items: Sequence[tuple[str, str]]) -> dict[str, Any]:
        vids = [v for v, _ in items]
        caps = [c for _, c in items]
        batch: dict[str, Any] = self.artifacts.video_inputs(vids)
        batch["emotion_targets"] = self.artifacts.emotion_targets(caps)
        targets, weights = self.decoder.encode_targets(caps, self.artifacts.lexicon_words, self.delta)
        batch["targets"] = targets  # (B, L)
        batch["target_weights"] = weights  # (B, L)
        batch["video_ids"] = vids
        batch["captions"] = caps
        return batch


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors moved to ``device``; other entries (id and caption lists) kept as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def iter_video_batches(video_ids: Sequence[str], batch_size: int) -> Iterable[list[str]]:
    """Consecutive chunks of ``video_ids`` (inference)."""
    for start in range(0, len(video_ids), batch_size):
        yield list(video_ids[start : start + batch_size])



def artifact_dims(features_h5: str | os.PathLike, topk_h5: str | os.PathLike, triplets_h5: str | os.PathLike,
                  lexicon_h5: str | os.PathLike | None = None) -> dict[str, int]:
    """The FaceNetConfig sizes the artifacts fix (``n_frames, d_v, k, d_t, d_e``), read from
    the HDF5 shapes alone, so a workflow config need not repeat them."""
    dims: dict[str, int] = {}
    _, dims["n_frames"], dims["d_v"] = _dataset_shape(features_h5, "frames", "features", "(n_videos, N, d_v)")
    dims["k"] = _dataset_shape(topk_h5, "indices", "top-K", "(n_videos, K)")[1]
    dims["d_t"] = _dataset_shape(triplets_h5, "embeddings", "triplets", "(n_captions, 3, d_T)")[2]
    if lexicon_h5 is not None:
        dims["d_e"] = _dataset_shape(lexicon_h5, "vectors", "lexicon embedding", "(n_words, d_E)")[1]
    return {k: int(v) for k, v in dims.items()}


def _dataset_shape(path: str | os.PathLike, name: str, what: str, layout: str) -> tuple[int, ...]:
    """Shape of dataset ``name`` in ``path``, which must have as many axes as ``layout`` names."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file not found")
    try:
        with h5py.File(path, "r") as f:
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise ArtifactError(f"{path}: no {name!r} dataset (not a {what} file?)")
            shape = tuple(int(n) for n in f[name].shape)
    except OSError as e:
        raise ArtifactError(f"{path}: not a readable HDF5 file ({e})") from None
    if len(shape) != layout.count(",") + 1:
        raise ArtifactError(f"{path}: dataset {name!r} has shape {shape}, expected {layout}")
    return shape


def add_artifact_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, required: bool = True) -> None:
    """``--features --topk --triplets``: the cached artifacts every model command reads."""
    parser.add_argument("--features", required=required, help="frame features HDF5 (clip_frames.h5) covering the videos")
    parser.add_argument("--topk", required=required, help="top-K retrieval HDF5")
    parser.add_argument("--triplets", required=required, help="triplet embeddings HDF5 of the repository captions")
