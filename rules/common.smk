# Shared helpers: the per-dataset configs, loaded and validated on first use.
import functools
import json
import shlex

from facenet_evc.config import load_dataset_config, require_paths

RESULTS = config["results_root"]
SEP_NAMES = {",": "comma", "\t": "tab", None: "auto"}


wildcard_constraints:
    ds="[a-z][a-z0-9_]*",


@functools.cache
def dataset(name):
    """The validated config of dataset `name`; its input paths must exist unless generated."""
    if name not in config["datasets"]:
        raise ValueError(f"unknown dataset {name!r}: config/config.yaml 'datasets' lists {sorted(config['datasets'])}")
    cfg = load_dataset_config(config["datasets"][name], config)
    if cfg["name"] != name:
        raise ValueError(f"{cfg['_source']}: name: {cfg['name']!r} but it is listed as {name!r} in config/config.yaml")
    if not cfg["data"].get("demo"):
        require_paths(cfg, ["data.captions", "data.lexicon", "data.msvd"])
    require_paths(cfg, ["retrieval.extra_captions"])
    return cfg


ABLATIONS = config["ablations"]


@functools.cache
def ablation_grid():
    from facenet_evc.ablations import load_grid

    return load_grid(ABLATIONS)


@functools.cache
def variant(name, v):
    """Dataset `name` with ablation variant `v` merged in (config/ablations.yaml + ablations.overlays)."""
    from facenet_evc.ablations import overlays, variant_config

    base = dataset(name)
    known = overlays(ablation_grid(), base)
    if v not in known:
        raise ValueError(f"unknown ablation variant {v!r} for {name}: known {sorted(known)}")
    return variant_config(base, known[v], v)


def run_prefix_variant(run):
    """'ablations/<v>/' -> '<v>'; anything else ('' or 'baselines/...') -> None: the dataset's own config."""
    return run.split("/")[1] if run.startswith("ablations/") else None


def cfg(w):
    """The config of the run a job belongs to: the dataset's, or an ablation variant's."""
    v = run_prefix_variant(getattr(w, "run", ""))
    return variant(w.ds, v) if v else dataset(w.ds)


def caption_files(split):
    return lambda w: [c["path"] for c in dataset(w.ds)["data"]["captions"][split]]


def caption_seps(split):
    return lambda w: " ".join(SEP_NAMES[c.get("sep")] for c in dataset(w.ds)["data"]["captions"][split])


def lexicon_dir(w):
    return dataset(w.ds)["data"]["lexicon"]


def max_caption_len(w):
    return dataset(w.ds)["text"]["max_caption_len"]
