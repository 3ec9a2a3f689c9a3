# Zero-shot classification with WCA and its baselines: a classification data set ->
# images/labels/class names -> crop features per encoder (full image + M seeded crops) ->
# [class descriptions from an LLM] -> one score per (encoder, method) ->
# results/zeroshot/{dataset}/summary.json.
from crossmodal.wca import wiring as zeroshot


rule prepare_classification:
    input:
        unpack(STAGES["prepare_classification"].inputs),
    output:
        **STAGES["prepare_classification"].outputs,
    params:
        job=STAGES["prepare_classification"].job,
        settings=STAGES["prepare_classification"].settings,
        code=code("prepare-classification"),
    conda:
        ENV["clip"]
    log:
        "results/logs/prepare_classification/{dataset}.log",
    shell:
        "python -m crossmodal prepare-classification {params.job} 2> {log}"


rule wca_crops:
    input:
        unpack(STAGES["wca_crops"].inputs),
    output:
        **STAGES["wca_crops"].outputs,
    params:
        job=STAGES["wca_crops"].job_with_threads,
        settings=STAGES["wca_crops"].settings,
        code=code("wca-crops"),
    wildcard_constraints:
        collection="cls_[A-Za-z0-9_]+",
        alpha="[0-9.]+",
        n_crops="[0-9]+",
    threads: max(1, config["features"]["workers"])
    conda:
        ENV["clip"]
    log:
        "results/logs/wca_crops/{collection}_{encoder}_{alpha}_{n_crops}.log",
    shell:
        "python -m crossmodal wca-crops {params.job} 2> {log}"


rule wca_describe_classes:
    input:
        unpack(STAGES["wca_describe_classes"].inputs),
    output:
        **STAGES["wca_describe_classes"].outputs,
    params:
        job=STAGES["wca_describe_classes"].job,
        settings=STAGES["wca_describe_classes"].settings,
        code=code("wca-describe-classes"),
    resources:
        gpu=lambda w: config["llms"][w.llm]["gpus"],
        mem_mb=lambda w: config["llms"][w.llm]["mem_mb"],
    conda:
        lambda w: model_env("llms", w.llm)
    log:
        "results/logs/wca_describe_classes/{dataset}_{llm}.log",
    shell:
        "python -m crossmodal wca-describe-classes {params.job} 2> {log}"


rule zeroshot:
    input:
        unpack(STAGES["zeroshot"].inputs),
    output:
        **STAGES["zeroshot"].outputs,
    params:
        job=STAGES["zeroshot"].job,
        settings=STAGES["zeroshot"].settings,
        code=code("zeroshot"),
    wildcard_constraints:
        method="clip|clip-e|clip-d|waffle|cupl|wca",
    conda:
        ENV["clip"]
    log:
        "results/logs/zeroshot/{dataset}_{encoder}_{method}.log",
    shell:
        "python -m crossmodal zeroshot {params.job} 2> {log}"


rule zeroshot_summary:
    input:
        unpack(STAGES["zeroshot_summary"].inputs),
    output:
        summary=report(
            STAGES["zeroshot_summary"].outputs["summary"],
            caption="../report/zeroshot_summary.rst",
            category="Zero-shot classification",
        ),
        plot=report(
            STAGES["zeroshot_summary"].outputs["plot"],
            caption="../report/zeroshot_summary.rst",
            category="Zero-shot classification",
        ),
    params:
        job=STAGES["zeroshot_summary"].job,
        settings=STAGES["zeroshot_summary"].settings,
        code=code("zeroshot-summary"),
    conda:
        ENV["eval"]
    log:
        "results/logs/zeroshot_summary/{dataset}.log",
    shell:
        "python -m crossmodal zeroshot-summary {params.job} 2> {log}"
