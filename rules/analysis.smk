# Analyses of a trained model: efficiency (paper Table 6), metrics per F-E bias group, and what
# the model weighed for a few test captions (paper Figs. 7-8).


rule efficiency:
    """Parameters, FLOPs, latency / throughput and peak memory of captioning (paper Table 6)."""
    input:
        features=lambda w: artifacts(w)["features"],
        topk=lambda w: artifacts(w)["topk"],
        triplets=lambda w: artifacts(w)["triplets"],
        summary=layout.artifact_path(RESULTS, "{ds}", layout.TRAIN_SUMMARY, run=""),
        captions=caption_files("test"),
    output:
        json=f"{RESULTS}/{{ds}}/efficiency.json",
        md=report(f"{RESULTS}/{{ds}}/efficiency.md", category="Efficiency"),
    log:
        f"{RESULTS}/{{ds}}/logs/efficiency.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/efficiency.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=lambda w: 0 if dataset(w.ds)["train"]["device"] == "cpu" else 1,
    params:
        checkpoint=final_checkpoint,
        seps=caption_seps("test"),
        beams=lambda w: dataset(w.ds)["train"]["num_beams"],
        max_len=lambda w: dataset(w.ds)["train"]["max_len"],
        device=lambda w: dataset(w.ds)["train"]["device"],
    shell:
        "facenet-evc efficiency --checkpoint {params.checkpoint} --features {input.features} --topk {input.topk}"
        " --triplets {input.triplets} --captions {input.captions} --captions-seps {params.seps}"
        " --num-beams {params.beams} --max-len {params.max_len} --device {params.device} --threads 1"
        " --out {output.json} > {log} 2>&1"


rule bias_groups:
    """Official metrics per F-E bias group of the test videos, FACE-net beside the retrieval baseline."""
    input:
        facenet=f"{RESULTS}/{{ds}}/predictions.json",
        retrieval_baseline=f"{RESULTS}/{{ds}}/baselines/retrieval/predictions.json",
        references=f"{RESULTS}/{{ds}}/references/test.json",
        lexicon=lexicon_dir,
        captions=caption_files("test"),
    output:
        json=f"{RESULTS}/{{ds}}/bias_groups.json",
        md=report(f"{RESULTS}/{{ds}}/bias_groups.md", category="Metrics per bias group"),
    log:
        f"{RESULTS}/{{ds}}/logs/bias_groups.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/bias_groups.tsv"
    conda:
        "../envs/evaluation.yaml"
    params:
        runs=lambda w, input: f"facenet={input.facenet} retrieval_baseline={input.retrieval_baseline}",
        seps=caption_seps("test"),
        t1=lambda w: dataset(w.ds)["bias"]["t1"],
        t2=lambda w: dataset(w.ds)["bias"]["t2"],
    shell:
        "facenet-evc bias-groups --predictions {params.runs} --references {input.references} --lexicon {input.lexicon}"
        " --captions {input.captions} --captions-seps {params.seps} --t1 {params.t1} --t2 {params.t2}"
        " --out {output.json} > {log} 2>&1"


rule bias_groups_ba:
    """Does bias adjustment help each F-E bias group? FACE-net with and without BA (ablation re_fc_ea)."""
    input:
        facenet=f"{RESULTS}/{{ds}}/predictions.json",
        ba_off=f"{RESULTS}/{{ds}}/ablations/re_fc_ea/predictions.json",
        retrieval_baseline=f"{RESULTS}/{{ds}}/baselines/retrieval/predictions.json",
        references=f"{RESULTS}/{{ds}}/references/test.json",
        lexicon=lexicon_dir,
        captions=caption_files("test"),
    output:
        json=f"{RESULTS}/{{ds}}/ablations/bias_groups.json",
        md=report(
            f"{RESULTS}/{{ds}}/ablations/bias_groups.md",
            category="Metrics per bias group",
        ),
    log:
        f"{RESULTS}/{{ds}}/logs/bias_groups_ba.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/bias_groups_ba.tsv"
    conda:
        "../envs/evaluation.yaml"
    params:
        runs=lambda w, input: (
            f"facenet={input.facenet} facenet_without_BA={input.ba_off}"
            f" retrieval_baseline={input.retrieval_baseline}"
        ),
        seps=caption_seps("test"),
        t1=lambda w: dataset(w.ds)["bias"]["t1"],
        t2=lambda w: dataset(w.ds)["bias"]["t2"],
    shell:
        "facenet-evc bias-groups --predictions {params.runs} --references {input.references} --lexicon {input.lexicon}"
        " --captions {input.captions} --captions-seps {params.seps} --t1 {params.t1} --t2 {params.t2}"
        " --out {output.json} > {log} 2>&1"


rule explain:
    """Per test video: retrieved triplets, alpha / theta / g, emotion attention, gates and the caption."""
    input:
        unpack(artifacts),
        summary=layout.artifact_path(RESULTS, "{ds}", layout.TRAIN_SUMMARY, run=""),
        captions=caption_files("test"),
        references=f"{RESULTS}/{{ds}}/references/test.json",
        lexicon=lexicon_dir,
        videos=explain_videos_dir,
    output:
        report(
            directory(f"{RESULTS}/{{ds}}/explain"),
            patterns=["{video}.png"],
            category="Explain",
            labels={"video": "{video}"},
        ),
    log:
        f"{RESULTS}/{{ds}}/logs/explain.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/explain.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        checkpoint=final_checkpoint,
        seps=caption_seps("test"),
        n=lambda w: dataset(w.ds)["analysis"]["explain_videos"],
        videos=lambda w: (
            f"--videos {shlex.quote(explain_videos_dir(w))}"
            if explain_videos_dir(w)
            else ""
        ),
        beams=lambda w: dataset(w.ds)["train"]["num_beams"],
        max_len=lambda w: dataset(w.ds)["train"]["max_len"],
        device=lambda w: dataset(w.ds)["train"]["device"],
    shell:
        "facenet-evc explain --checkpoint {params.checkpoint} --features {input.features} --topk {input.topk}"
        " --triplets {input.triplets} --lexicon-h5 {input.lexicon_h5} --lexicon {input.lexicon}"
        " --references {input.references} {params.videos} --captions {input.captions} --captions-seps {params.seps}"
        " --first {params.n} --num-beams {params.beams} --max-len {params.max_len} --device {params.device}"
        " --threads {threads} --out-dir {output} > {log} 2>&1"


rule ablation_table:
    """The paper's ablations (Fig. 3, Tables 2-5) on this dataset: one trained variant per row."""
    input:
        unpack(ablation_metrics),
        grid=ABLATIONS,
    output:
        md=report(f"{RESULTS}/{{ds}}/ablations/table.md", category="Ablations"),
        csv=f"{RESULTS}/{{ds}}/ablations/table.csv",
    log:
        f"{RESULTS}/{{ds}}/logs/ablation_table.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/ablation_table.tsv"
    conda:
        "../envs/evaluation.yaml"
    params:
        metrics=lambda w, input: " ".join(
            f"{v}={input[v]}" for v in ablation_metrics(w)
        ),
        note=lambda w: shlex.quote(
            f"Dataset {w.ds}; metrics x100 on the test split; best per table in bold; "
            f"each variant trained with the dataset's train settings."
        ),
    shell:
        "facenet-evc ablation-table --grid {input.grid} --metrics {params.metrics} --note {params.note}"
        " --out-md {output.md} --out-csv {output.csv} > {log} 2>&1"


rule metrics_table:
    """FACE-net beside the retrieval and human-agreement baselines, and FACE-net - retrieval with intervals."""
    input:
        facenet=f"{RESULTS}/{{ds}}/metrics.json",
        retrieval=f"{RESULTS}/{{ds}}/baselines/retrieval/metrics.json",
        human=f"{RESULTS}/{{ds}}/baselines/human/metrics.json",
        comparison=f"{RESULTS}/{{ds}}/compare_retrieval.json",
    output:
        report(f"{RESULTS}/{{ds}}/metrics.md", category="Metrics"),
    log:
        f"{RESULTS}/{{ds}}/logs/metrics_table.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/metrics_table.tsv"
    conda:
        "../envs/evaluation.yaml"
    params:
        title=lambda w: shlex.quote(f"{w.ds}: test metrics (x100)"),
    shell:
        "facenet-evc metrics-table --metrics FACE-net={input.facenet} 'top-1 retrieved caption'={input.retrieval}"
        " 'human (one reference vs the others)'={input.human} --comparison {input.comparison}"
        " --title {params.title} --out {output} > {log} 2>&1"


rule seeds_table:
    """Every metric as mean ± sd over the dataset's training seeds, and FACE-net - retrieval per seed."""
    input:
        unpack(seed_inputs),
        retrieval=f"{RESULTS}/{{ds}}/baselines/retrieval/metrics.json",
        human=f"{RESULTS}/{{ds}}/baselines/human/metrics.json",
    output:
        md=report(f"{RESULTS}/{{ds}}/seeds/table.md", category="Seeds"),
        csv=f"{RESULTS}/{{ds}}/seeds/table.csv",
    log:
        f"{RESULTS}/{{ds}}/logs/seeds_table.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/seeds_table.tsv"
    conda:
        "../envs/evaluation.yaml"
    params:
        facenet=lambda w, input: ",".join(
            input[f"metrics{s}"] for s in dataset(w.ds)["seeds"]
        ),
        comparisons=lambda w, input: " ".join(
            f"seed{s}={input[f'compare{s}']}" for s in dataset(w.ds)["seeds"]
        ),
        title=lambda w: shlex.quote(
            f"{w.ds}: test metrics over training seeds {dataset(w.ds)['seeds']}"
        ),
    shell:
        "facenet-evc seeds-table --runs FACE-net={params.facenet} 'top-1 retrieved caption'={input.retrieval}"
        " 'human (one reference vs the others)'={input.human} --comparisons {params.comparisons}"
        " --title {params.title} --out {output.md} --csv {output.csv} > {log} 2>&1"


rule ablation_seeds_table:
    """The ablation variants as mean ± sd over ablations.seeds (one row per variant)."""
    input:
        unpack(ablation_seed_metrics),
    output:
        md=report(f"{RESULTS}/{{ds}}/ablations/seeds/table.md", category="Ablations"),
        csv=f"{RESULTS}/{{ds}}/ablations/seeds/table.csv",
    log:
        f"{RESULTS}/{{ds}}/logs/ablation_seeds_table.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/ablation_seeds_table.tsv"
    conda:
        "../envs/evaluation.yaml"
    params:
        runs=lambda w, input: " ".join(
            shlex.quote(
                v
                + "="
                + ",".join(
                    input[k] for k in ablation_seed_metrics(w) if k.split("@")[0] == v
                )
            )
            for v in dict.fromkeys(k.split("@")[0] for k in ablation_seed_metrics(w))
        ),
        title=lambda w: shlex.quote(
            f"{w.ds}: ablations over training seeds {dataset(w.ds)['ablations']['seeds']}"
        ),
    shell:
        "facenet-evc seeds-table --runs {params.runs} --title {params.title} --out {output.md} --csv {output.csv}"
        " > {log} 2>&1"


rule browse_thumbnails:
    """A strip of frame thumbnails per test video for the results browser (decoded once)."""
    input:
        videos=explain_videos_dir,
        captions=caption_files("test"),
    output:
        directory(f"{RESULTS}/{{ds}}/browse_thumbs"),
    log:
        f"{RESULTS}/{{ds}}/logs/browse_thumbnails.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/browse_thumbnails.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        seps=caption_seps("test"),
    shell:
        "facenet-evc thumbnails --videos {input.videos} --captions {input.captions} --captions-seps {params.seps}"
        " --out {output} > {log} 2>&1"


rule browse:
    """The per-video results browser: a static page (index.html + data.js) that opens from file://."""
    input:
        unpack(browse_inputs),
        summary=layout.artifact_path(RESULTS, "{ds}", layout.TRAIN_SUMMARY, run=""),
        references=f"{RESULTS}/{{ds}}/references/test.json",
        lexicon=lexicon_dir,
        captions=caption_files("test"),
        explain=f"{RESULTS}/{{ds}}/explain",
    output:
        report(
            directory(f"{RESULTS}/{{ds}}/browse"),
            htmlindex="index.html",
            category="Results browser",
        ),
    log:
        f"{RESULTS}/{{ds}}/logs/browse.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/browse.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        runs=lambda w: " ".join(
            shlex.quote(f"{k}={v}") for k, v in browse_runs(w).items()
        ),
        checkpoint=final_checkpoint,
        seps=caption_seps("test"),
        thumbs=lambda w, input: (
            f"--thumbs {shlex.quote(input.thumbs)}" if "thumbs" in input.keys() else ""
        ),
        t1=lambda w: dataset(w.ds)["bias"]["t1"],
        t2=lambda w: dataset(w.ds)["bias"]["t2"],
        device=lambda w: dataset(w.ds)["train"]["device"],
    shell:
        "facenet-evc browse --runs {params.runs} --references {input.references} --lexicon {input.lexicon}"
        " --captions {input.captions} --captions-seps {params.seps} --t1 {params.t1} --t2 {params.t2}"
        " --checkpoint {params.checkpoint} --features {input.features} --topk {input.topk}"
        " --triplets {input.triplets} --lexicon-h5 {input.lexicon_h5} --device {params.device} --threads {threads}"
        " {params.thumbs} --explain-dir {input.explain} --title {wildcards.ds} --out {output} > {log} 2>&1"
