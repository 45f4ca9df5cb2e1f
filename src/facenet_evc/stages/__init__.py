"""Cached pipeline stages: each is a function a Snakemake rule calls through the CLI."""
