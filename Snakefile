# facenet-evc workflow: every stage is a rule whose output is a file under results/<dataset>/.
#   snakemake --cores 2                                    # the embedded demo (default target)
#   snakemake --cores 8 results/evc_combine/metrics.json   # a real dataset (set emvidcap_root etc.)
# Rules only choose paths and call one `facenet-evc` subcommand; all logic is in src/facenet_evc.
from snakemake.utils import validate


configfile: "config/config.yaml"


validate(config, "workflow/schemas/workflow.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pipeline.smk"
include: "rules/model.smk"
include: "rules/evaluation.smk"
include: "rules/analysis.smk"


rule all:
    input:
        f"{RESULTS}/demo/metrics.json",
        f"{RESULTS}/demo/baselines/retrieval/metrics.json",
        f"{RESULTS}/demo/baselines/human/metrics.json",
        f"{RESULTS}/demo/bias_stats.json",
        f"{RESULTS}/demo/metrics.md",
        f"{RESULTS}/demo/bias_groups.md",
        f"{RESULTS}/demo/explain",
        f"{RESULTS}/demo/browse",


rule artifacts:
    """Every cached stage of a dataset (features, repository, top-K, triplets, lexicon)."""
    input:
        lambda w: [*artifacts(w).values(), f"{RESULTS}/{w.ds}/retrieval/repository.h5"],
    output:
        touch(f"{RESULTS}/{{ds}}/artifacts.done"),
