"""facenet-evc: retrieval-enhanced emotional video captioning (FACE-net) as a cached pipeline."""

__version__ = "0.1.0"
