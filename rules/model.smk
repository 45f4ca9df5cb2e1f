# FACE-net training, prediction and the retrieval baseline (issue 03).


rule train:
    """Train FACE-net (eq. 10-32) on the cached artifacts; resumes from train/last after a kill."""
    input:
        unpack(artifacts),
        captions=caption_files("trainval"),
        lexicon=lexicon_dir,
    output:
        summary=layout.artifact_path(RESULTS, "{ds}", layout.TRAIN_SUMMARY),
        curves=report(
            f"{RESULTS}/{{ds}}/{{run}}train/curves.png",
            category="Training curves",
            subcategory="{ds} {run}",
        ),
    log:
        f"{RESULTS}/{{ds}}/logs/{{run}}train.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/{{run}}train.tsv"
    wildcard_constraints:
        run=RUN,
    priority: 10
    conda:
        "../envs/pipeline.yaml"
    threads: lambda w: cfg(w)["train"]["threads"] or 2
    resources:
        mem_mb=8000,
        gpu=lambda w: 0 if cfg(w)["train"]["device"] == "cpu" else 1,
    params:
        out=layout.artifact_path(RESULTS, "{ds}", layout.TRAIN_DIR),
        seps=caption_seps("trainval"),
        model=lambda w: shlex.quote(json.dumps(cfg(w)["model"], sort_keys=True)),
        train=train_config_arg,
    shell:
        "facenet-evc train --features {input.features} --topk {input.topk} --triplets {input.triplets}"
        " --lexicon-h5 {input.lexicon_h5} --captions {input.captions} --captions-seps {params.seps}"
        " --lexicon {input.lexicon} --model-config {params.model} --train-config {params.train} --threads {threads}"
        " --restart-if-changed --out {params.out} > {log} 2>&1"


rule predict:
    """Caption the test videos with the best checkpoint: beam search, 5 beams, 15 words (train/best, or train/refit/last with train.refit)."""
    input:
        unpack(artifacts),
        summary=layout.artifact_path(RESULTS, "{ds}", layout.TRAIN_SUMMARY),
        captions=caption_files("test"),
    output:
        layout.artifact_path(RESULTS, "{ds}", layout.PREDICTIONS),
    log:
        f"{RESULTS}/{{ds}}/logs/{{run}}predict.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/{{run}}predict.tsv"
    wildcard_constraints:
        run=RUN,
    priority: 10
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=lambda w: 0 if cfg(w)["train"]["device"] == "cpu" else 1,
    params:
        checkpoint=final_checkpoint,
        seps=caption_seps("test"),
        beams=lambda w: cfg(w)["train"]["num_beams"],
        max_len=lambda w: cfg(w)["train"]["max_len"],
        device=lambda w: cfg(w)["train"]["device"],
    shell:
        "facenet-evc predict --checkpoint {params.checkpoint} --features {input.features} --topk {input.topk}"
        " --triplets {input.triplets} --captions {input.captions} --captions-seps {params.seps}"
        " --num-beams {params.beams} --max-len {params.max_len} --device {params.device} --threads {threads}"
        " --out {output} > {log} 2>&1"


rule export:
    """The best checkpoint with everything `facenet-evc caption` needs for new videos, in one folder."""
    input:
        unpack(artifacts),
        repository=layout.artifact_path(RESULTS, "{ds}", layout.REPOSITORY),
        summary=layout.artifact_path(RESULTS, "{ds}", layout.TRAIN_SUMMARY, run=""),
        clip=clip_checkpoint,
    output:
        f"{RESULTS}/{{ds}}/export/manifest.json",
    log:
        f"{RESULTS}/{{ds}}/logs/export.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/export.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        checkpoint=final_checkpoint,
        out=f"{RESULTS}/{{ds}}/export",
        beams=lambda w: dataset(w.ds)["train"]["num_beams"],
        max_len=lambda w: dataset(w.ds)["train"]["max_len"],
    shell:
        "facenet-evc export --checkpoint {params.checkpoint} --features {input.features} --topk {input.topk}"
        " --repository {input.repository} --triplets {input.triplets} --lexicon-h5 {input.lexicon_h5}"
        " --num-beams {params.beams} --max-len {params.max_len} --out {params.out} > {log} 2>&1"


rule retrieval_baseline:
    """Baseline: each test video's top-1 retrieved caption as its prediction."""
    input:
        topk=lambda w: artifacts(w)["topk"],
        captions=caption_files("test"),
    output:
        f"{RESULTS}/{{ds}}/baselines/retrieval/predictions.json",
    log:
        f"{RESULTS}/{{ds}}/logs/retrieval_baseline.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/retrieval_baseline.tsv"
    conda:
        "../envs/evaluation.yaml"
    params:
        seps=caption_seps("test"),
        max_len=max_caption_len,
    shell:
        "facenet-evc retrieval-baseline --topk {input.topk} --captions {input.captions} --captions-seps {params.seps}"
        " --max-len {params.max_len} --out {output} > {log} 2>&1"
