# Shared helpers of the rules: the per-dataset configs (loaded and validated on first use), the
# artifact layout (facenet_evc.layout, shared with `facenet-evc export`) and the command line
# pieces the rules pass on. The rule files hold rules only.
import copy
import functools
import json
import re
import shlex
import sys
from pathlib import Path

from facenet_evc import layout
from facenet_evc.config import load_dataset_config, require_paths

RESULTS = config["results_root"]
# Rules call `facenet-evc` of the environment whose interpreter runs Snakemake: the venv's
# snakemake works without activating the venv (the venv's bin goes first on the jobs' PATH).
shell.prefix(f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH; ")
SEP_NAMES = {",": "comma", "\t": "tab", None: "auto"}


wildcard_constraints:
    ds="[a-z][a-z0-9_]*",


@functools.cache
def dataset(name):
    """The validated config of dataset `name`; its input paths must exist unless generated."""
    if name not in config["datasets"]:
        raise ValueError(
            f"unknown dataset {name!r}: config/config.yaml 'datasets' lists {sorted(config['datasets'])}"
        )
    cfg = load_dataset_config(config["datasets"][name], config)
    if cfg["name"] != name:
        raise ValueError(
            f"{cfg['_source']}: name: {cfg['name']!r} but it is listed as {name!r} in config/config.yaml"
        )
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
        raise ValueError(
            f"unknown ablation variant {v!r} for {name}: known {sorted(known)}"
        )
    return variant_config(base, known[v], v)


# {run}: '' (the dataset's own run), 'ablations/<variant>/', 'seeds/seed<N>/' or both
# ('ablations/<variant>/seeds/seed<N>/'): the same rules train, predict and score each.
RUN = r"(?:ablations/[a-z][a-z0-9_]*/)?(?:seeds/seed[0-9]+/)?"


def run_prefix_variant(run):
    """'ablations/<v>/...' -> '<v>'; anything else ('' or 'baselines/...') -> None: the dataset's own config."""
    parts = Path(run).parts
    return parts[1] if parts[:1] == ("ablations",) else None


def run_seed(run):
    """'.../seeds/seed<N>/' -> N; None when the run has no seed of its own."""
    m = re.search(r"(?:^|/)seeds/seed([0-9]+)/$", run)
    return int(m.group(1)) if m else None


def final_checkpoint(w):
    """The checkpoint a run's predictions use: train/best, or train/refit/last with train.refit."""
    run = getattr(w, "run", "")
    return layout.artifact_path(
        RESULTS, w.ds, layout.final_checkpoint(cfg(w)["train"]), run=run
    )


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

    The seed the config already uses is its own run (no re-training); others get seeds/seed<N>/.
    """
    base = f"ablations/{v}/" if v and v != "full" else ""
    own = (variant(ds, v) if base else dataset(ds))["train"]["seed"]
    return base if seed == own else f"{base}seeds/seed{seed}/"


def caption_files(split):
    return lambda w: [c["path"] for c in dataset(w.ds)["data"]["captions"][split]]


def caption_seps(split):
    return lambda w: " ".join(
        SEP_NAMES[c.get("sep")] for c in dataset(w.ds)["data"]["captions"][split]
    )


def lexicon_dir(w):
    return dataset(w.ds)["data"]["lexicon"]


def max_caption_len(w):
    return dataset(w.ds)["text"]["max_caption_len"]


# helpers of rules/analysis.smk
def explain_videos_dir(w):
    """The dataset's video folder for the frame strip, or [] (EPAN-imported features have none)."""
    ds = dataset(w.ds)
    if ds["data"].get("demo"):
        return f"{ds['data']['demo']['out']}/videos"
    return ds["features"].get("videos") or []


def ablation_metrics(w):
    """variant -> metrics.json of every variant the dataset runs ('full' is the dataset's own run)."""
    from facenet_evc.ablations import selected_variants

    names = selected_variants(ablation_grid(), dataset(w.ds))
    return {
        v: (
            f"{RESULTS}/{w.ds}/metrics.json"
            if v == "full"
            else f"{RESULTS}/{w.ds}/ablations/{v}/metrics.json"
        )
        for v in names
    }


def seed_inputs(w):
    """metrics.json and compare_retrieval.json of FACE-net for every seed of the dataset."""
    out = {}
    for s in dataset(w.ds)["seeds"]:
        run = seed_run(w.ds, s)
        out[f"metrics{s}"] = f"{RESULTS}/{w.ds}/{run}metrics.json"
        out[f"compare{s}"] = f"{RESULTS}/{w.ds}/{run}compare_retrieval.json"
    return out


def ablation_seed_metrics(w):
    """'<variant>@<seed>' -> metrics.json for every variant and every seed in ablations.seeds."""
    from facenet_evc.ablations import selected_variants

    abl = dataset(w.ds)["ablations"]
    if not abl["seeds"]:
        raise ValueError(
            f"dataset {w.ds}: ablations.seeds is null; list seeds to build ablations/seeds/table.md"
        )
    names = selected_variants(ablation_grid(), dataset(w.ds))
    if abl["seed_variants"] is not None:
        unknown = sorted(set(abl["seed_variants"]) - set(names))
        if unknown:
            raise ValueError(
                f"dataset {w.ds}: ablations.seed_variants {unknown} are not in ablations.variants {names}"
            )
        names = [v for v in names if v in abl["seed_variants"]]
    return {
        f"{v}@{s}": f"{RESULTS}/{w.ds}/{seed_run(w.ds, s, v)}metrics.json"
        for v in names
        for s in abl["seeds"]
    }


def browse_name(run):
    """A run's name on the page: 'ablations/v' -> 'v', 'seeds/seed1' -> 'seed1',
    'ablations/v/seeds/seed1' -> 'v.seed1', 'baselines/x' -> 'x'."""
    parts = list(Path(run).parts)
    if parts[:1] == ["ablations"]:
        parts = parts[1:]
    while "seeds" in parts[1:]:  # '<x>/seeds/<seed>' -> '<x>.<seed>'
        i = parts.index("seeds", 1)
        parts[i - 1 : i + 2] = [f"{parts[i - 1]}.{parts[i + 1]}"]
    if parts[:1] == ["seeds"]:
        parts = parts[1:]
    return parts[-1]


def browse_runs(w):
    """name -> predictions.json of the runs on the page: FACE-net, the retrieval baseline, analysis.browse_runs."""
    runs = {
        "facenet": f"{RESULTS}/{w.ds}/predictions.json",
        "retrieval_baseline": f"{RESULTS}/{w.ds}/baselines/retrieval/predictions.json",
    }
    for run in dataset(w.ds)["analysis"].get("browse_runs", []):
        run = run.rstrip("/")
        # ablations/v -> v, seeds/seed1 -> seed1, ablations/v/seeds/seed1 -> v.seed1, baselines/x -> x
        name = browse_name(run)
        runs[name] = f"{RESULTS}/{w.ds}/{run}/predictions.json"
    return runs


def browse_inputs(w):
    """Every input of the page; thumbnails only where the dataset has video files."""
    inputs = {**artifacts(w), **{f"run_{k}": v for k, v in browse_runs(w).items()}}
    if explain_videos_dir(w):
        inputs["thumbs"] = f"{RESULTS}/{w.ds}/browse_thumbs"
    return inputs


# helpers of rules/evaluation.smk
def references_for(w):
    # A baseline that holds references out ships its own reference file.
    if w.run == "baselines/human/":
        return f"{RESULTS}/{w.ds}/baselines/human/references.json"
    return f"{RESULTS}/{w.ds}/references/test.json"


def msvd_args(w):
    msvd = dataset(w.ds)["data"].get("msvd")
    if not msvd:
        return ""
    return (
        "--msvd-captions "
        + " ".join(msvd["captions"])
        + " --youtube-mapping "
        + msvd["youtube_mapping"]
    )


def msvd_inputs(w):
    msvd = dataset(w.ds)["data"].get("msvd")
    return [*msvd["captions"], msvd["youtube_mapping"]] if msvd else []


# helpers of rules/model.smk
def k_of(w):
    return cfg(w)["retrieval"]["k"]


def train_config_arg(w):
    """--train-config: the run's train section, without a progress bar in the log. Its threads, when
    null, come from the job (`--threads {threads}` in the rule): a params function that reads
    `threads` is evaluated late and not recorded, so a changed setting would not re-run the job.
    """
    return shlex.quote(
        json.dumps({**cfg(w)["train"], "progress": False}, sort_keys=True)
    )


def artifacts(w):
    """The cached inputs of training and prediction."""
    return layout.model_inputs(RESULTS, w.ds, k_of(w))


# helpers of rules/pipeline.smk
def clip_checkpoint(w):
    """[] or the demo CLIP checkpoint a stage must wait for."""
    return (
        [layout.artifact_path(RESULTS, w.ds, layout.CLIP)]
        if dataset(w.ds)["clip"]["pretrain"]
        else []
    )


def clip_args(w):
    clip = dataset(w.ds)["clip"]
    pretrained = (
        layout.artifact_path(RESULTS, w.ds, layout.CLIP)
        if clip["pretrain"]
        else clip["pretrained"]
    )
    return f"--model {clip['model']} --pretrained {shlex.quote(str(pretrained))} --device {clip['device']}"


def videos_dir(w):
    ds = dataset(w.ds)
    if ds["data"].get("demo"):
        return f"{ds['data']['demo']['out']}/videos"
    if not ds["features"]["videos"]:
        raise ValueError(
            f"{ds['_source']}: features.videos: set the folder of the videos (or features.source: epan)"
        )
    return ds["features"]["videos"]


def pretrain_pool(w):
    """Videos generated for CLIP pretraining only (clip.pretrain.pool_videos), or None."""
    pre = dataset(w.ds)["clip"]["pretrain"]
    return pre if pre and pre["pool_videos"] else None


def pool_emotion_share_option(w):
    """make-demo's --emotion-share for the pool ('' keeps the captioning data's shares)."""
    share = pretrain_pool(w).get("pool_emotion_share")
    return "" if share is None else f"--emotion-share {share}"


def pretrain_inputs(w):
    """What the demo CLIP trains on: the separate pool when configured, else the trainval split."""
    ins = {"test_videos": videos_dir(w), "test": caption_files("test")(w)}
    if pretrain_pool(w):
        pool = f"{RESULTS}/{w.ds}/clip/pool"
        return {
            **ins,
            "videos": f"{pool}/videos",
            "trainval": [f"{pool}/captions/EmVideo_trainval_captions.csv"],
        }
    return {**ins, "videos": videos_dir(w), "trainval": caption_files("trainval")(w)}


def feature_shards(w):
    """features.shards: extraction from videos split over this many jobs (EPAN import is one job)."""
    ds = dataset(w.ds)
    return ds["features"]["shards"] if ds["features"]["source"] == "videos" else 1


def extract_inputs(w):
    return {
        "captions": caption_files("trainval")(w) + caption_files("test")(w),
        "videos": videos_dir(w),
        "clip": clip_checkpoint(w),
    }


def feature_inputs(w):
    ds = dataset(w.ds)
    n = feature_shards(w)
    if ds["features"]["source"] == "epan":
        if not ds["features"]["epan"]:
            raise ValueError(
                f"{ds['_source']}: features.epan: source is 'epan' but no files are given"
            )
        return {
            "captions": caption_files("trainval")(w) + caption_files("test")(w),
            "epan": ds["features"]["epan"]["files"],
        }
    if n > 1:
        return {
            "captions": caption_files("trainval")(w) + caption_files("test")(w),
            "shards": [
                layout.artifact_path(RESULTS, w.ds, layout.FEATURE_SHARD, i=i, n=n)
                for i in range(n)
            ],
        }
    return extract_inputs(w)


def extract_command(w, input, output, threads, shard=""):
    f = dataset(w.ds)["features"]
    tubelet = f" --tubelet {' '.join(map(str, f['tubelet']))}" if f["tubelet"] else ""
    return (
        f"facenet-evc extract-features --videos {input.videos} --captions {' '.join(input.captions)}"
        f" {clip_args(w)} --n-frames {f['n_frames']} --batch-size {f['batch_size']}"
        f" --num-workers {f['num_workers']} --threads {threads}{tubelet}{shard} --out {output[0]}"
    )


def feature_settings(w):
    """What the features depend on besides their inputs: a params entry of its own, because `cmd`
    reads `threads` and Snakemake neither records nor compares such late-evaluated params.
    """
    return json.dumps(
        {"features": dataset(w.ds)["features"], "clip": clip_args(w)}, sort_keys=True
    )


def feature_command(w, input, output, threads):
    f = dataset(w.ds)["features"]
    captions = " ".join(input.captions)
    if f["source"] == "epan":
        prefixes = f["epan"].get("prefixes")
        pre = (
            f" --vid-prefix {' '.join(p or 'none' for p in prefixes)}"
            if prefixes
            else ""
        )
        return (
            f"facenet-evc import-features --epan-h5 {' '.join(input.epan)}{pre} --captions {captions}"
            f" --n-frames {f['n_frames']} --out {output[0]}"
        )
    if feature_shards(w) > 1:
        return f"facenet-evc merge-features --shards {' '.join(input.shards)} --captions {captions} --out {output[0]}"
    return extract_command(w, input, output, threads)


def feature_gpus(w):
    return 1 if dataset(w.ds)["clip"]["device"].startswith("cuda") else 0


def extra_captions(w):
    """retrieval.extra_captions: external corpora appended to the repository."""
    return dataset(w.ds)["retrieval"]["extra_captions"]


def extra_caption_args(w):
    """The corpora and, so that no copy of a reference slips in without a video id, the test split."""
    extra = extra_captions(w)
    if not extra:
        return ""
    return (
        " --extra-captions "
        + " ".join(shlex.quote(c["path"]) for c in extra)
        + " --extra-columns "
        + " ".join(shlex.quote(c["column"] or "none") for c in extra)
        + " --extra-seps "
        + " ".join(SEP_NAMES[c.get("sep")] for c in extra)
        + " --exclude "
        + " ".join(caption_files("test")(w))
        + " --exclude-seps "
        + caption_seps("test")(w)
    )


def triplet_topk(w):
    """[] (triplets of every caption) or the top-K file whose retrieved captions alone get triplets."""
    from facenet_evc.stages.repository import triplet_scope

    ds = dataset(w.ds)
    if (
        triplet_scope(ds["triplets"]["scope"], ds["retrieval"]["extra_captions"])
        == "retrieved"
    ):
        return [
            layout.artifact_path(RESULTS, w.ds, layout.TOPK, k=ds["retrieval"]["k"])
        ]
    return []
