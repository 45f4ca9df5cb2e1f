# Dataset preparation: the synthetic demo and the normalised evaluation references.


rule make_demo:
    """Generate the embedded synthetic demo (videos, captions, lexicon) deterministically."""
    output:
        trainval=f"{RESULTS}/{{ds}}/data/captions/EmVideo_trainval_captions.csv",
        test=f"{RESULTS}/{{ds}}/data/captions/EmVideo_test_captions.csv",
        scenes=f"{RESULTS}/{{ds}}/data/scenes.json",
        lexicon=directory(f"{RESULTS}/{{ds}}/data/lexicon"),
        videos=directory(f"{RESULTS}/{{ds}}/data/videos"),
    log:
        f"{RESULTS}/{{ds}}/logs/make_demo.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/make_demo.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        out=lambda w: dataset(w.ds)["data"]["demo"]["out"],
        n_videos=lambda w: dataset(w.ds)["data"]["demo"]["n_videos"],
        seed=lambda w: dataset(w.ds)["data"]["demo"]["seed"],
        test_fraction=lambda w: dataset(w.ds)["data"]["demo"]["test_fraction"],
    shell:
        "facenet-evc make-demo --out {params.out} --n-videos {params.n_videos} --seed {params.seed}"
        " --test-fraction {params.test_fraction} > {log} 2>&1"


rule references:
    """Test references normalised as EPAN's loader does (lowercase, no punctuation, 15 words)."""
    input:
        captions=caption_files("test"),
    output:
        f"{RESULTS}/{{ds}}/references/test.json",
    log:
        f"{RESULTS}/{{ds}}/logs/references.log",
    benchmark:
        f"{RESULTS}/{{ds}}/benchmarks/references.tsv"
    conda:
        "../envs/evaluation.yaml"
    params:
        seps=caption_seps("test"),
        max_len=max_caption_len,
    shell:
        "facenet-evc prepare-references --captions {input.captions} --captions-seps {params.seps}"
        " --max-len {params.max_len} --out {output} > {log} 2>&1"
