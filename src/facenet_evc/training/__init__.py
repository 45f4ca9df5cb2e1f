"""Training, checkpointing and inference of FACE-net (paper Sec. 3.6, 4.1).

* :mod:`.config` — :class:`~.config.TrainConfig`, the optimisation knobs;
* :mod:`.data` — the four feature artifacts and the batches FaceNet consumes;
* :mod:`.checkpoint` — atomic, bit-exact resumable checkpoints;
* :mod:`.trainer` — :func:`~.trainer.train` (validation, logging, resume);
* :mod:`.predict` — beam-search captions of a split and the retrieval baseline.
"""
