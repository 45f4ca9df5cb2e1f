"""Captions of cached videos by batched beam search (paper: beam 5, at most 15 words).

Used by the trainer's validation, ``predict``, ``caption`` (new videos) and the analyses; the
model's mode is restored after, so validation inside training leaves dropout as it found it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from facenet_evc.models.facenet import FaceNet
from facenet_evc.progress import progress_bar
from facenet_evc.training.data import Artifacts, iter_video_batches, to_device
from facenet_evc.training.runtime import autocast_for


@torch.no_grad()
def generate_captions(
    model: FaceNet,
    artifacts: Artifacts,
    video_ids: Sequence[str],
    num_beams: int = 5,
    max_len: int = 15,
    batch_size: int = 64,
    device: torch.device | None = None,
    progress: bool = False,
) -> dict[str, str]:
    """``{video_id: caption}`` by batched beam search; leaves the model in the mode it found it."""
    device = device or next(model.parameters()).device
    artifacts.check_videos(video_ids)
    was_training = model.training
    model.eval()  # FACE-net's dropout too, not only the decoder's (decoder.generate sets only its own)
    out: dict[str, str] = {}
    try:
        bar = progress_bar(total=len(video_ids), unit="video", desc="decode", disable=not progress)
        for chunk in iter_video_batches(video_ids, batch_size):
            batch = to_device(artifacts.video_inputs(chunk), device)
            with autocast_for(model.cfg, device):
                ids = model.generate(batch, num_beams=num_beams, max_len=max_len)
            out.update((v, model.decoder.decode_tokens(list(s))) for v, s in zip(chunk, ids))
            bar.update(len(chunk))
        bar.close()
    finally:
        model.train(was_training)
    return out
