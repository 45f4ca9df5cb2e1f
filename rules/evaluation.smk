# Evaluation (official EmVidCap metrics), baselines and the F-E bias statistics.


rule human_baseline:
    """Human agreement: each test video's first reference scored against its other references."""
    input:
        captions=caption_files("test"),
    output:
        predictions=f"{RESULTS}/{{ds}}/baselines/human/predictions.json",
        references=f"{RESULTS}/{{ds}}/baselines/human/references.json",
    log:
        f"{RESULTS}/{{ds}}/logs/human_baseline.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/human_baseline.tsv"
    conda:
        "../envs/evaluation.yaml"
    params:
        seps=caption_seps("test"),
        max_len=max_caption_len,
    shell:
        "facenet-evc human-baseline --captions {input.captions} --captions-seps {params.seps}"
        " --max-len {params.max_len} --predictions-out {output.predictions}"
        " --references-out {output.references} > {log} 2>&1"


rule evaluate:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr, Acc_sw, Acc_c, BFS, CFS as the official code computes them."""
    input:
        predictions=layout.artifact_path(RESULTS, "{ds}", layout.PREDICTIONS),
        references=references_for,
        lexicon=lexicon_dir,
    output:
        f"{RESULTS}/{{ds}}/{{run}}metrics.json",
    log:
        f"{RESULTS}/{{ds}}/logs/{{run}}evaluate.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/{{run}}evaluate.tsv"
    wildcard_constraints:
        run=f"(?:baselines/[a-z0-9_]+/|runs/[A-Za-z0-9_.-]+/|{RUN})",
    conda:
        "../envs/evaluation.yaml"
    params:
        on_undefined=lambda w: cfg(w)["evaluation"]["on_undefined"],
    shell:
        "facenet-evc evaluate --predictions {input.predictions} --references {input.references}"
        " --lexicon {input.lexicon} --on-undefined {params.on_undefined} --out {output} > {log} 2>&1"


rule bias_stats:
    """F-E bias statistics (paper Sec. 3.1), every reading with its distance to the paper."""
    input:
        trainval=caption_files("trainval"),
        test=caption_files("test"),
        lexicon=lexicon_dir,
        msvd=msvd_inputs,
    output:
        f"{RESULTS}/{{ds}}/bias_stats.json",
    log:
        f"{RESULTS}/{{ds}}/logs/bias_stats.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/bias_stats.tsv"
    conda:
        "../envs/evaluation.yaml"
    params:
        trainval_seps=caption_seps("trainval"),
        test_seps=caption_seps("test"),
        msvd=msvd_args,
        t1=lambda w: dataset(w.ds)["bias"]["t1"],
        t2=lambda w: dataset(w.ds)["bias"]["t2"],
    shell:
        "facenet-evc bias-stats --trainval {input.trainval} --trainval-seps {params.trainval_seps}"
        " --test {input.test} --test-seps {params.test_seps} --lexicon {input.lexicon} {params.msvd}"
        " --t1 {params.t1} --t2 {params.t2} --out {output} > {log} 2>&1"


rule compare_retrieval:
    """FACE-net - top-1 retrieval on every metric, with a paired-bootstrap 95% interval over test videos."""
    input:
        facenet=layout.artifact_path(RESULTS, "{ds}", layout.PREDICTIONS),
        retrieval=f"{RESULTS}/{{ds}}/baselines/retrieval/predictions.json",
        references=f"{RESULTS}/{{ds}}/references/test.json",
        lexicon=lexicon_dir,
    output:
        json=f"{RESULTS}/{{ds}}/{{run}}compare_retrieval.json",
        md=f"{RESULTS}/{{ds}}/{{run}}compare_retrieval.md",
    log:
        f"{RESULTS}/{{ds}}/logs/{{run}}compare_retrieval.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/{{run}}compare_retrieval.tsv"
    wildcard_constraints:
        run=RUN,
    conda:
        "../envs/evaluation.yaml"
    params:
        resamples=lambda w: cfg(w)["evaluation"]["bootstrap_resamples"],
    shell:
        "facenet-evc compare {input.retrieval} {input.facenet} --references {input.references}"
        " --lexicon {input.lexicon} --names 'top-1 retrieved caption' FACE-net --resamples {params.resamples}"
        " --out {output.json} --md {output.md} > {log} 2>&1"
