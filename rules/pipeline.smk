# The cached stages (issue 02): CLIP (trained for the demo), frame features, the caption
# repository and its index, triplets, lexicon embeddings. Each writes one HDF5 file.


def clip_checkpoint(w):
    """[] or the demo CLIP checkpoint a stage must wait for."""
    return [f"{RESULTS}/{w.ds}/clip/clip.pt"] if dataset(w.ds)["clip"]["pretrain"] else []


def clip_args(w):
    clip = dataset(w.ds)["clip"]
    pretrained = f"{RESULTS}/{w.ds}/clip/clip.pt" if clip["pretrain"] else clip["pretrained"]
    return f"--model {clip['model']} --pretrained {shlex.quote(str(pretrained))} --device {clip['device']}"


def videos_dir(w):
    ds = dataset(w.ds)
    if ds["data"].get("demo"):
        return f"{ds['data']['demo']['out']}/videos"
    if not ds["features"]["videos"]:
        raise ValueError(f"{ds['_source']}: features.videos: set the folder of the videos (or features.source: epan)")
    return ds["features"]["videos"]


def pretrain_pool(w):
    """Videos generated for CLIP pretraining only (clip.pretrain.pool_videos), or None."""
    pre = dataset(w.ds)["clip"]["pretrain"]
    return pre if pre and pre["pool_videos"] else None


def pretrain_inputs(w):
    """What the demo CLIP trains on: the separate pool when configured, else the trainval split."""
    ins = {"test_videos": videos_dir(w), "test": caption_files("test")(w)}
    if pretrain_pool(w):
        pool = f"{RESULTS}/{w.ds}/clip/pool"
        return {**ins, "videos": f"{pool}/videos", "trainval": [f"{pool}/captions/EmVideo_trainval_captions.csv"]}
    return {**ins, "videos": videos_dir(w), "trainval": caption_files("trainval")(w)}


rule clip_pool:
    """Generate the demo CLIP's pretraining videos: same generator, another seed, no test split.

    A real CLIP is pretrained on other data than the captioning videos; a demo CLIP trained on
    the trainval videos themselves memorises them, so its features are cleaner on the training
    videos than on the test videos and the captioner learns on a distribution it never meets.
    """
    output:
        trainval=f"{RESULTS}/{{ds}}/clip/pool/captions/EmVideo_trainval_captions.csv",
        videos=directory(f"{RESULTS}/{{ds}}/clip/pool/videos"),
    params:
        out=f"{RESULTS}/{{ds}}/clip/pool",
        n_videos=lambda w: pretrain_pool(w)["pool_videos"],
        seed=lambda w: pretrain_pool(w)["pool_seed"],
    log:
        f"{RESULTS}/{{ds}}/logs/clip_pool.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/clip_pool.tsv"
    conda:
        "../envs/pipeline.yaml"
    shell:
        "facenet-evc make-demo --out {params.out} --n-videos {params.n_videos} --seed {params.seed}"
        " --test-fraction 0 > {log} 2>&1"


rule clip_pretrain:
    """Train the small demo CLIP contrastively (no weights can be downloaded); recall is reported on the test split."""
    input:
        unpack(pretrain_inputs),
    output:
        ckpt=f"{RESULTS}/{{ds}}/clip/clip.pt",
        sidecar=f"{RESULTS}/{{ds}}/clip/clip.json",
    params:
        model=lambda w: dataset(w.ds)["clip"]["model"],
        opts=lambda w: " ".join([
            f"--max-seconds {dataset(w.ds)['clip']['pretrain']['max_seconds']}",
            f"--seed {dataset(w.ds)['clip']['pretrain']['seed']}",
            f"--batch-size {dataset(w.ds)['clip']['pretrain']['batch_size']}",
            (f"--max-steps {dataset(w.ds)['clip']['pretrain']['max_steps']}"
             if dataset(w.ds)["clip"]["pretrain"]["max_steps"] else ""),
            "" if dataset(w.ds)["clip"]["pretrain"]["temporal_head"] else "--no-temporal-head",
        ]),
    threads: 2
    resources:
        mem_mb=4000,
    log:
        f"{RESULTS}/{{ds}}/logs/clip_pretrain.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/clip_pretrain.tsv"
    conda:
        "../envs/pipeline.yaml"
    shell:
        "facenet-evc clip-pretrain --videos {input.videos} --trainval {input.trainval[0]} --test {input.test[0]}"
        " --test-videos {input.test_videos} --model {params.model} --threads {threads} {params.opts}"
        " --out {output.ckpt} > {log} 2>&1"


def feature_shards(w):
    """features.shards: extraction from videos split over this many jobs (EPAN import is one job)."""
    ds = dataset(w.ds)
    return ds["features"]["shards"] if ds["features"]["source"] == "videos" else 1


def extract_inputs(w):
    return {"captions": caption_files("trainval")(w) + caption_files("test")(w), "videos": videos_dir(w),
            "clip": clip_checkpoint(w)}


def feature_inputs(w):
    ds = dataset(w.ds)
    n = feature_shards(w)
    if ds["features"]["source"] == "epan":
        if not ds["features"]["epan"]:
            raise ValueError(f"{ds['_source']}: features.epan: source is 'epan' but no files are given")
        return {"captions": caption_files("trainval")(w) + caption_files("test")(w),
                "epan": ds["features"]["epan"]["files"]}
    if n > 1:
        return {"captions": caption_files("trainval")(w) + caption_files("test")(w),
                "shards": [f"{RESULTS}/{w.ds}/features/shards/clip_frames.{i}-of-{n}.h5" for i in range(n)]}
    return extract_inputs(w)


def extract_command(w, input, output, threads, shard=""):
    f = dataset(w.ds)["features"]
    tubelet = f" --tubelet {' '.join(map(str, f['tubelet']))}" if f["tubelet"] else ""
    return (f"facenet-evc extract-features --videos {input.videos} --captions {' '.join(input.captions)}"
            f" {clip_args(w)} --n-frames {f['n_frames']} --batch-size {f['batch_size']}"
            f" --num-workers {f['num_workers']} --threads {threads}{tubelet}{shard} --out {output[0]}")


def feature_command(w, input, output, threads):
    f = dataset(w.ds)["features"]
    captions = " ".join(input.captions)
    if f["source"] == "epan":
        prefixes = f["epan"].get("prefixes")
        pre = f" --vid-prefix {' '.join(p or 'none' for p in prefixes)}" if prefixes else ""
        return (f"facenet-evc import-features --epan-h5 {' '.join(input.epan)}{pre} --captions {captions}"
                f" --n-frames {f['n_frames']} --out {output[0]}")
    if feature_shards(w) > 1:
        return f"facenet-evc merge-features --shards {' '.join(input.shards)} --captions {captions} --out {output[0]}"
    return extract_command(w, input, output, threads)


def feature_gpus(w):
    return 1 if dataset(w.ds)["clip"]["device"].startswith("cuda") else 0


rule clip_features:
    """N frames per video through CLIP's image encoder (eq. 1, 3), or EPAN features imported; with
    features.shards > 1, the gather step: the shards merged into the file one job would write."""
    input:
        unpack(feature_inputs),
    output:
        f"{RESULTS}/{{ds}}/features/clip_frames.h5",
    params:
        # the whole command is a param, so a change of any feature setting re-runs the rule
        cmd=feature_command,
    threads: lambda w: 1 if feature_shards(w) > 1 else 2
    resources:
        mem_mb=4000,
        gpu=lambda w: 0 if feature_shards(w) > 1 else feature_gpus(w),
    log:
        f"{RESULTS}/{{ds}}/logs/clip_features.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/clip_features.tsv"
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.cmd} > {log} 2>&1"


rule clip_features_shard:
    """The scatter step of features.shards > 1: shard i of n (whole batches of the videos in caption
    order), a job of its own, e.g. one GPU each on SLURM. Deleted once merged."""
    input:
        unpack(extract_inputs),
    output:
        temp(f"{RESULTS}/{{ds}}/features/shards/clip_frames.{{i}}-of-{{n}}.h5"),
    wildcard_constraints:
        i="[0-9]+",
        n="[0-9]+",
    params:
        cmd=lambda w, input, output, threads: extract_command(w, input, output, threads, f" --shard {w.i}/{w.n}"),
    threads: 2
    resources:
        mem_mb=4000,
        gpu=feature_gpus,
    log:
        f"{RESULTS}/{{ds}}/logs/clip_features.{{i}}-of-{{n}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/clip_features.{{i}}-of-{{n}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.cmd} > {log} 2>&1"


def extra_captions(w):
    """retrieval.extra_captions: external corpora appended to the repository."""
    return dataset(w.ds)["retrieval"]["extra_captions"]


def extra_caption_args(w):
    """The corpora and, so that no copy of a reference slips in without a video id, the test split."""
    extra = extra_captions(w)
    if not extra:
        return ""
    return (" --extra-captions " + " ".join(shlex.quote(c["path"]) for c in extra)
            + " --extra-columns " + " ".join(shlex.quote(c["column"] or "none") for c in extra)
            + " --extra-seps " + " ".join(SEP_NAMES[c.get("sep")] for c in extra)
            + " --exclude " + " ".join(caption_files("test")(w)) + " --exclude-seps " + caption_seps("test")(w))


rule repository:
    """CLIP text embeddings of the training captions and any external corpora, the retrieval repository (eq. 4)."""
    input:
        captions=caption_files("trainval"),
        clip=clip_checkpoint,
        extra=lambda w: [c["path"] for c in extra_captions(w)],
        exclude=lambda w: caption_files("test")(w) if extra_captions(w) else [],
    output:
        f"{RESULTS}/{{ds}}/retrieval/repository.h5",
    params:
        seps=caption_seps("trainval"),
        clip=clip_args,
        extra=extra_caption_args,
    threads: 2
    resources:
        mem_mb=4000,
    log:
        f"{RESULTS}/{{ds}}/logs/repository.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/repository.tsv"
    conda:
        "../envs/pipeline.yaml"
    shell:
        "facenet-evc build-repository --captions {input.captions} --captions-seps {params.seps} {params.clip}"
        "{params.extra} --out {output} > {log} 2>&1"


rule retrieval:
    """Top-K captions per video by CLIP cosine similarity, the video's own captions excluded (eq. 5-6)."""
    input:
        features=f"{RESULTS}/{{ds}}/features/clip_frames.h5",
        repository=f"{RESULTS}/{{ds}}/retrieval/repository.h5",
    output:
        f"{RESULTS}/{{ds}}/retrieval/topk_k{{k}}.h5",
    wildcard_constraints:
        k="[0-9]+",
    params:
        index=lambda w: dataset(w.ds)["retrieval"]["index"],
        nprobe=lambda w: dataset(w.ds)["retrieval"]["nprobe"],
        nlist=lambda w: (f"--nlist {dataset(w.ds)['retrieval']['nlist']}"
                         if dataset(w.ds)["retrieval"]["nlist"] else ""),
    threads: 2
    resources:
        mem_mb=4000,
    log:
        f"{RESULTS}/{{ds}}/logs/retrieval_k{{k}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/retrieval_k{{k}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    shell:
        "facenet-evc retrieve --features {input.features} --repository {input.repository} --k {wildcards.k}"
        " --index {params.index} --nprobe {params.nprobe} {params.nlist} --threads {threads}"
        " --out {output} > {log} 2>&1"


def triplet_topk(w):
    """[] (triplets of every caption) or the top-K file whose retrieved captions alone get triplets."""
    from facenet_evc.stages.repository import triplet_scope

    ds = dataset(w.ds)
    if triplet_scope(ds["triplets"]["scope"], ds["retrieval"]["extra_captions"]) == "retrieved":
        return [f"{RESULTS}/{w.ds}/retrieval/topk_k{ds['retrieval']['k']}.h5"]
    return []


rule triplets:
    """One S-P-O triplet per repository caption, or per retrieved caption of a large repository (spaCy
    parse), and CLIP embeddings of its parts (eq. 7-9)."""
    input:
        repository=f"{RESULTS}/{{ds}}/retrieval/repository.h5",
        clip=clip_checkpoint,
        topk=triplet_topk,
    output:
        f"{RESULTS}/{{ds}}/triplets/triplets.h5",
    params:
        clip=clip_args,
        extractor=lambda w: dataset(w.ds)["triplets"]["extractor"],
        pipeline=lambda w: dataset(w.ds)["triplets"]["pipeline"],
        prompt=lambda w: shlex.quote(dataset(w.ds)["triplets"]["prompt"]),
        topk=lambda w, input: f" --topk {' '.join(input.topk)}" if input.topk else "",
    threads: 1
    resources:
        mem_mb=4000,
    log:
        f"{RESULTS}/{{ds}}/logs/triplets.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/triplets.tsv"
    conda:
        "../envs/pipeline.yaml"
    shell:
        "facenet-evc embed-triplets --repository {input.repository} {params.clip} --extractor {params.extractor}"
        " --pipeline {params.pipeline} --prompt {params.prompt}{params.topk} --out {output} > {log} 2>&1"


rule lexicon_embeddings:
    """GloVe vectors of the emotion lexicon words, E_0 of eq. 2 (OOV words get a documented fallback)."""
    input:
        lexicon=lexicon_dir,
    output:
        f"{RESULTS}/{{ds}}/emotion/lexicon.h5",
    params:
        glove=lambda w: shlex.quote(dataset(w.ds)["emotion"]["glove"]),
    threads: 1
    resources:
        mem_mb=2000,
    log:
        f"{RESULTS}/{{ds}}/logs/lexicon_embeddings.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/lexicon_embeddings.tsv"
    conda:
        "../envs/pipeline.yaml"
    shell:
        "facenet-evc embed-lexicon --lexicon {input.lexicon} --glove {params.glove} --out {output} > {log} 2>&1"
