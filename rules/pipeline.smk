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


rule clip_pretrain:
    """Train the small demo CLIP contrastively on the trainval videos (no weights can be downloaded)."""
    input:
        videos=videos_dir,
        trainval=caption_files("trainval"),
        test=caption_files("test"),
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
        " --model {params.model} --threads {threads} {params.opts} --out {output.ckpt} > {log} 2>&1"


def feature_inputs(w):
    ds = dataset(w.ds)
    ins = {"captions": caption_files("trainval")(w) + caption_files("test")(w)}
    if ds["features"]["source"] == "epan":
        if not ds["features"]["epan"]:
            raise ValueError(f"{ds['_source']}: features.epan: source is 'epan' but no files are given")
        ins["epan"] = ds["features"]["epan"]["files"]
    else:
        ins["videos"] = videos_dir(w)
        ins["clip"] = clip_checkpoint(w)
    return ins


def feature_command(w, input, output, threads):
    output = output[0]
    ds = dataset(w.ds)
    f = ds["features"]
    captions = " ".join(input.captions)
    if f["source"] == "epan":
        prefixes = f["epan"].get("prefixes")
        pre = f" --vid-prefix {' '.join(p or 'none' for p in prefixes)}" if prefixes else ""
        return (f"facenet-evc import-features --epan-h5 {' '.join(input.epan)}{pre} --captions {captions}"
                f" --n-frames {f['n_frames']} --out {output}")
    tubelet = f" --tubelet {' '.join(map(str, f['tubelet']))}" if f["tubelet"] else ""
    return (f"facenet-evc extract-features --videos {input.videos} --captions {captions} {clip_args(w)}"
            f" --n-frames {f['n_frames']} --batch-size {f['batch_size']} --num-workers {f['num_workers']}"
            f" --threads {threads}{tubelet} --out {output}")


rule clip_features:
    """N frames per video through CLIP's image encoder (eq. 1, 3), or EPAN features imported."""
    input:
        unpack(feature_inputs),
    output:
        f"{RESULTS}/{{ds}}/features/clip_frames.h5",
    params:
        # the whole command is a param, so a change of any feature setting re-runs the rule
        cmd=feature_command,
    threads: 2
    resources:
        mem_mb=4000,
        gpu=lambda w: 1 if dataset(w.ds)["clip"]["device"].startswith("cuda") else 0,
    log:
        f"{RESULTS}/{{ds}}/logs/clip_features.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/clip_features.tsv"
    conda:
        "../envs/pipeline.yaml"
    shell:
        "{params.cmd} > {log} 2>&1"


rule repository:
    """CLIP text embeddings of the training captions, the retrieval repository (eq. 4)."""
    input:
        captions=caption_files("trainval"),
        clip=clip_checkpoint,
    output:
        f"{RESULTS}/{{ds}}/retrieval/repository.h5",
    params:
        seps=caption_seps("trainval"),
        clip=clip_args,
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
        " --out {output} > {log} 2>&1"


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


rule triplets:
    """One S-P-O triplet per repository caption (spaCy parse) and CLIP embeddings of its parts (eq. 7-9)."""
    input:
        repository=f"{RESULTS}/{{ds}}/retrieval/repository.h5",
        clip=clip_checkpoint,
    output:
        f"{RESULTS}/{{ds}}/triplets/triplets.h5",
    params:
        clip=clip_args,
        extractor=lambda w: dataset(w.ds)["triplets"]["extractor"],
        pipeline=lambda w: dataset(w.ds)["triplets"]["pipeline"],
        prompt=lambda w: shlex.quote(dataset(w.ds)["triplets"]["prompt"]),
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
        " --pipeline {params.pipeline} --prompt {params.prompt} --out {output} > {log} 2>&1"


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
