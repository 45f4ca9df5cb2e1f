# Shared helpers: the per-dataset configs, loaded and validated on first use.
import copy
import functools
import json
import re
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


# {run}: '' (the dataset's own run), 'ablations/<variant>/', 'seeds/seed<N>/' or both
# ('ablations/<variant>/seeds/seed<N>/'): the same rules train, predict and score each.
RUN = r"(?:ablations/[a-z][a-z0-9_]*/)?(?:seeds/seed[0-9]+/)?"


def run_prefix_variant(run):
    """'ablations/<v>/...' -> '<v>'; anything else ('' or 'baselines/...') -> None: the dataset's own config."""
    return run.split("/")[1] if run.startswith("ablations/") else None


def run_seed(run):
    """'.../seeds/seed<N>/' -> N; None when the run has no seed of its own."""
    m = re.search(r"(?:^|/)seeds/seed([0-9]+)/$", run)
    return int(m.group(1)) if m else None


def cfg(w):
    """The config of the run a job belongs to: the dataset's or an ablation variant's, with its training seed."""
    run = getattr(w, "run", "")
    v = run_prefix_variant(run)
    c = variant(w.ds, v) if v else dataset(w.ds)
    seed = run_seed(run)
    if seed is not None and seed != c["train"]["seed"]:
        c = copy.deepcopy(c)
        c["train"]["seed"] = seed
    return c


def seed_run(ds, seed, v=None):
    """The {run} prefix that trains dataset `ds` (variant `v`) with training seed `seed`.

    The seed the config already uses is its own run (no re-training); others get seeds/seed<N>/."""
    base = f"ablations/{v}/" if v and v != "full" else ""
    own = (variant(ds, v) if base else dataset(ds))["train"]["seed"]
    return base if seed == own else f"{base}seeds/seed{seed}/"


def caption_files(split):
    return lambda w: [c["path"] for c in dataset(w.ds)["data"]["captions"][split]]


def caption_seps(split):
    return lambda w: " ".join(SEP_NAMES[c.get("sep")] for c in dataset(w.ds)["data"]["captions"][split])


def lexicon_dir(w):
    return dataset(w.ds)["data"]["lexicon"]


def max_caption_len(w):
    return dataset(w.ds)["text"]["max_caption_len"]
