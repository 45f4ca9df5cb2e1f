"""FACE-net modules, equation by equation."""
