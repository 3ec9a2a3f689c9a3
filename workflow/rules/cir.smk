# Compositional image retrieval: the tagger's sentences -> the tagger -> per data set the
# challenge's CSVs as Parquet -> parsed edits -> the projection fine-tune -> untrained and
# fine-tuned query and database embeddings -> a FAISS index of the database (build-index) ->
# cir-eval -> results/cir/{dataset}/summary.json. Checkpoints live under results/checkpoints/
# (not declared outputs), so a killed training job resumes.
from crossmodal.cir import wiring as cir


wildcard_constraints:
    tagger="[A-Za-z0-9_-]+",
    parser="tagger|fixed",


rule prepare_cir:
    input:
        unpack(STAGES["prepare_cir"].inputs),
    output:
        **STAGES["prepare_cir"].outputs,
    params:
        job=STAGES["prepare_cir"].job,
        settings=STAGES["prepare_cir"].settings,
        code=code("prepare-cir"),
    conda:
        ENV["eval"]
    log:
        "results/logs/prepare_cir/{dataset}_{split}.log",
    shell:
        "python -m crossmodal prepare-cir {params.job} 2> {log}"


rule cir_tagger_data:
    input:
        unpack(STAGES["cir_tagger_data"].inputs),
    output:
        **STAGES["cir_tagger_data"].outputs,
    params:
        job=STAGES["cir_tagger_data"].job,
        settings=STAGES["cir_tagger_data"].settings,
        code=code("cir-tagger-data"),
    conda:
        ENV["clip"]
    log:
        "results/logs/cir_tagger_data.log",
    shell:
        "python -m crossmodal cir-tagger-data {params.job} 2> {log}"


rule make_tiny_tagger:
    input:
        unpack(STAGES["make_tiny_tagger"].inputs),
    output:
        **STAGES["make_tiny_tagger"].outputs,
    params:
        job=STAGES["make_tiny_tagger"].job,
        settings=STAGES["make_tiny_tagger"].settings,
        code=code("make-tiny-tagger"),
    conda:
        ENV["clip"]
    log:
        "results/logs/make_tiny_tagger/{name}.log",
    shell:
        "python -m crossmodal make-tiny-tagger {params.job} 2> {log}"


rule cir_train_tagger:
    input:
        unpack(STAGES["cir_train_tagger"].inputs),
    output:
        **STAGES["cir_train_tagger"].outputs,
    params:
        job=STAGES["cir_train_tagger"].job,
        settings=STAGES["cir_train_tagger"].settings,
        code=code("cir-train-tagger"),
    resources:
        gpu=lambda w: min(1, config["cir"]["gpus"]),
    conda:
        ENV["clip"]
    log:
        "results/logs/cir_train_tagger/{tagger}.log",
    shell:
        "python -m crossmodal cir-train-tagger {params.job} 2> {log}"


rule cir_parse:
    input:
        unpack(STAGES["cir_parse"].inputs),
    output:
        **STAGES["cir_parse"].outputs,
    params:
        job=STAGES["cir_parse"].job,
        settings=STAGES["cir_parse"].settings,
        code=code("cir-parse"),
    conda:
        ENV["clip"]
    log:
        "results/logs/cir_parse/{dataset}_{split}_{parser}.log",
    shell:
        "python -m crossmodal cir-parse {params.job} 2> {log}"


rule cir_train_projection:
    input:
        unpack(STAGES["cir_train_projection"].inputs),
    output:
        **STAGES["cir_train_projection"].outputs,
    params:
        job=STAGES["cir_train_projection"].job,
        settings=STAGES["cir_train_projection"].settings,
        code=code("cir-train-projection"),
    resources:
        gpu=lambda w: min(1, config["cir"]["gpus"]),
    conda:
        ENV["clip"]
    log:
        "results/logs/cir_train_projection/{dataset}_{encoder}.log",
    shell:
        "python -m crossmodal cir-train-projection {params.job} 2> {log}"


rule cir_embed:
    input:
        unpack(STAGES["cir_embed"].inputs),
    output:
        **STAGES["cir_embed"].outputs,
    params:
        job=STAGES["cir_embed"].job_with_threads,
        settings=STAGES["cir_embed"].settings,
        code=code("cir-embed"),
    wildcard_constraints:
        method="untrained|finetuned",
    threads: max(1, config["features"]["workers"])
    resources:
        gpu=lambda w: min(1, config["cir"]["gpus"]),
    conda:
        ENV["clip"]
    log:
        "results/logs/cir_embed/{dataset}_{split}_{method}_{encoder}.log",
    shell:
        "python -m crossmodal cir-embed {params.job} 2> {log}"


rule cir_build_index:
    input:
        unpack(STAGES["cir_build_index"].inputs),
    output:
        **STAGES["cir_build_index"].outputs,
    params:
        job=STAGES["cir_build_index"].job,
        settings=STAGES["cir_build_index"].settings,
        code=code("build-index"),
    wildcard_constraints:
        method="untrained|finetuned",
    conda:
        ENV["clip"]
    log:
        "results/logs/cir_build_index/{dataset}_{split}_{method}_{encoder}.log",
    shell:
        "python -m crossmodal build-index {params.job} 2> {log}"


rule cir_eval:
    input:
        unpack(STAGES["cir_eval"].inputs),
    output:
        **STAGES["cir_eval"].outputs,
    params:
        job=STAGES["cir_eval"].job,
        settings=STAGES["cir_eval"].settings,
        code=code("cir-eval"),
    wildcard_constraints:
        method="untrained|finetuned",
    conda:
        ENV["clip"]
    log:
        "results/logs/cir_eval/{dataset}_{split}_{method}_{encoder}.log",
    shell:
        "python -m crossmodal cir-eval {params.job} 2> {log}"


rule cir_summary:
    input:
        unpack(STAGES["cir_summary"].inputs),
    output:
        summary=report(
            STAGES["cir_summary"].outputs["summary"],
            caption="../report/cir_summary.rst",
            category="Compositional image retrieval",
        ),
        plot=report(
            STAGES["cir_summary"].outputs["plot"],
            caption="../report/cir_summary.rst",
            category="Compositional image retrieval",
        ),
    params:
        job=STAGES["cir_summary"].job,
        settings=STAGES["cir_summary"].settings,
        code=code("cir-summary"),
    conda:
        ENV["eval"]
    log:
        "results/logs/cir_summary/{dataset}.log",
    shell:
        "python -m crossmodal cir-summary {params.job} 2> {log}"
