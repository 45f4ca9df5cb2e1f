# The cached stages (issue 02): CLIP (trained for the demo), frame features, the caption
# repository and its index, triplets, lexicon embeddings. Each writes one HDF5 file.
# Rules on the demo's critical path (CLIP -> features, repository, triplets, retrieval -> train ->
# predict) have priority 10, so that the small jobs fill the gaps instead of delaying them.


rule clip_pool:
    """Generate the demo CLIP's pretraining videos: same generator, another seed, no test split.

    A real CLIP is pretrained on other data than the captioning videos; a demo CLIP trained on
    the trainval videos themselves memorises them, so its features are cleaner on the training
    videos than on the test videos and the captioner learns on a distribution it never meets.
    """
    output:
        trainval=f"{RESULTS}/{{ds}}/clip/pool/captions/EmVideo_trainval_captions.csv",
        videos=directory(f"{RESULTS}/{{ds}}/clip/pool/videos"),
    log:
        f"{RESULTS}/{{ds}}/logs/clip_pool.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/clip_pool.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        out=f"{RESULTS}/{{ds}}/clip/pool",
        n_videos=lambda w: pretrain_pool(w)["pool_videos"],
        seed=lambda w: pretrain_pool(w)["pool_seed"],
        share=pool_emotion_share_option,
    shell:
        "facenet-evc make-demo --out {params.out} --n-videos {params.n_videos} --seed {params.seed}"
        " --test-fraction 0 {params.share} > {log} 2>&1"


rule clip_pretrain:
    """Train the small demo CLIP contrastively (no weights can be downloaded); recall is reported on the test split."""
    input:
        unpack(pretrain_inputs),
    output:
        ckpt=layout.artifact_path(RESULTS, "{ds}", layout.CLIP),
        sidecar=f"{RESULTS}/{{ds}}/clip/clip.json",
    log:
        f"{RESULTS}/{{ds}}/logs/clip_pretrain.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/clip_pretrain.tsv"
    priority: 10
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        model=lambda w: dataset(w.ds)["clip"]["model"],
        opts=lambda w: " ".join(
            [
                f"--max-seconds {dataset(w.ds)['clip']['pretrain']['max_seconds']}",
                f"--seed {dataset(w.ds)['clip']['pretrain']['seed']}",
                f"--batch-size {dataset(w.ds)['clip']['pretrain']['batch_size']}",
                (
                    f"--max-steps {dataset(w.ds)['clip']['pretrain']['max_steps']}"
                    if dataset(w.ds)["clip"]["pretrain"]["max_steps"]
                    else ""
                ),
                (
                    ""
                    if dataset(w.ds)["clip"]["pretrain"]["temporal_head"]
                    else "--no-temporal-head"
                ),
            ]
        ),
    shell:
        "facenet-evc clip-pretrain --videos {input.videos} --trainval {input.trainval[0]} --test {input.test[0]}"
        " --test-videos {input.test_videos} --model {params.model} --threads {threads} {params.opts}"
        " --out {output.ckpt} > {log} 2>&1"


rule clip_features:
    """N frames per video through CLIP's image encoder (eq. 1, 3), or EPAN features imported; with
    features.shards > 1, the gather step: the shards merged into the file one job would write.
    """
    input:
        unpack(feature_inputs),
    output:
        layout.artifact_path(RESULTS, "{ds}", layout.FEATURES),
    log:
        f"{RESULTS}/{{ds}}/logs/clip_features.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/clip_features.tsv"
    priority: 10
    conda:
        "../envs/pipeline.yaml"
    threads: lambda w: 1 if feature_shards(w) > 1 else 2
    resources:
        mem_mb=4000,
        gpu=lambda w: 0 if feature_shards(w) > 1 else feature_gpus(w),
    params:
        settings=feature_settings,
        cmd=feature_command,
    shell:
        "{params.cmd} > {log} 2>&1"


rule clip_features_shard:
    """The scatter step of features.shards > 1: shard i of n (whole batches of the videos in caption
    order), a job of its own, e.g. one GPU each on SLURM. Deleted once merged."""
    input:
        unpack(extract_inputs),
    output:
        temp(layout.artifact_path(RESULTS, "{ds}", layout.FEATURE_SHARD)),
    log:
        f"{RESULTS}/{{ds}}/logs/clip_features.{{i}}-of-{{n}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/clip_features.{{i}}-of-{{n}}.tsv"
    wildcard_constraints:
        i="[0-9]+",
        n="[0-9]+",
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        gpu=feature_gpus,
    params:
        settings=feature_settings,
        cmd=lambda w, input, output, threads: extract_command(
            w, input, output, threads, f" --shard {w.i}/{w.n}"
        ),
    shell:
        "{params.cmd} > {log} 2>&1"


rule repository:
    """CLIP text embeddings of the training captions and any external corpora, the retrieval repository (eq. 4)."""
    input:
        captions=caption_files("trainval"),
        clip=clip_checkpoint,
        extra=lambda w: [c["path"] for c in extra_captions(w)],
        exclude=lambda w: caption_files("test")(w) if extra_captions(w) else [],
    output:
        layout.artifact_path(RESULTS, "{ds}", layout.REPOSITORY),
    log:
        f"{RESULTS}/{{ds}}/logs/repository.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/repository.tsv"
    priority: 10
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        seps=caption_seps("trainval"),
        clip=clip_args,
        extra=extra_caption_args,
    shell:
        "facenet-evc build-repository --captions {input.captions} --captions-seps {params.seps} {params.clip}"
        "{params.extra} --out {output} > {log} 2>&1"


rule retrieval:
    """Top-K captions per video by CLIP cosine similarity, the video's own captions excluded (eq. 5-6)."""
    input:
        features=layout.artifact_path(RESULTS, "{ds}", layout.FEATURES),
        repository=layout.artifact_path(RESULTS, "{ds}", layout.REPOSITORY),
    output:
        layout.artifact_path(RESULTS, "{ds}", layout.TOPK),
    log:
        f"{RESULTS}/{{ds}}/logs/retrieval_k{{k}}.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/retrieval_k{{k}}.tsv"
    wildcard_constraints:
        k="[0-9]+",
    priority: 10
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        index=lambda w: dataset(w.ds)["retrieval"]["index"],
        nprobe=lambda w: dataset(w.ds)["retrieval"]["nprobe"],
        nlist=lambda w: (
            f"--nlist {dataset(w.ds)['retrieval']['nlist']}"
            if dataset(w.ds)["retrieval"]["nlist"]
            else ""
        ),
    shell:
        "facenet-evc retrieve --features {input.features} --repository {input.repository} --k {wildcards.k}"
        " --index {params.index} --nprobe {params.nprobe} {params.nlist} --threads {threads}"
        " --out {output} > {log} 2>&1"


rule triplets:
    """One S-P-O triplet per repository caption, or per retrieved caption of a large repository (spaCy
    parse), and CLIP embeddings of its parts (eq. 7-9)."""
    input:
        repository=layout.artifact_path(RESULTS, "{ds}", layout.REPOSITORY),
        clip=clip_checkpoint,
        topk=triplet_topk,
    output:
        layout.artifact_path(RESULTS, "{ds}", layout.TRIPLETS),
    log:
        f"{RESULTS}/{{ds}}/logs/triplets.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/triplets.tsv"
    priority: 10
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        clip=clip_args,
        extractor=lambda w: dataset(w.ds)["triplets"]["extractor"],
        pipeline=lambda w: dataset(w.ds)["triplets"]["pipeline"],
        prompt=lambda w: shlex.quote(dataset(w.ds)["triplets"]["prompt"]),
        topk=lambda w, input: f" --topk {' '.join(input.topk)}" if input.topk else "",
    shell:
        "facenet-evc embed-triplets --repository {input.repository} {params.clip} --extractor {params.extractor}"
        " --pipeline {params.pipeline} --prompt {params.prompt}{params.topk} --out {output} > {log} 2>&1"


rule lexicon_embeddings:
    """GloVe vectors of the emotion lexicon words, E_0 of eq. 2 (OOV words get a documented fallback)."""
    input:
        lexicon=lexicon_dir,
    output:
        layout.artifact_path(RESULTS, "{ds}", layout.LEXICON_H5),
    log:
        f"{RESULTS}/{{ds}}/logs/lexicon_embeddings.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/lexicon_embeddings.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        glove=lambda w: shlex.quote(dataset(w.ds)["emotion"]["glove"]),
    shell:
        "facenet-evc embed-lexicon --lexicon {input.lexicon} --glove {params.glove} --out {output} > {log} 2>&1"
