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


def caption_files(split):
    return lambda w: [c["path"] for c in dataset(w.ds)["data"]["captions"][split]]


def caption_seps(split):
    return lambda w: " ".join(SEP_NAMES[c.get("sep")] for c in dataset(w.ds)["data"]["captions"][split])


def lexicon_dir(w):
    return dataset(w.ds)["data"]["lexicon"]


def max_caption_len(w):
    return dataset(w.ds)["text"]["max_caption_len"]
