# Dialogue-to-photo retrieval: PhotoChat's JSON shards (or the demo world's dialogues) ->
# dialogues per split -> photos with a status table -> LLM descriptors (journalled) -> a torchrun
# CLIP fine-tune -> zero-shot and fine-tuned embeddings of the test split -> FAISS search and
# predictions.csv -> dialog-eval -> results/dialog/{dataset}/summary.json. Checkpoints, the
# journal and fetched photos live outside the declared outputs, so a killed job resumes.
from crossmodal.dialog import wiring as dialog


rule make_dialog_demo:
    output:
        **STAGES["make_dialog_demo"].outputs,
    params:
        job=STAGES["make_dialog_demo"].job,
        settings=STAGES["make_dialog_demo"].settings,
        code=code("make-dialog-demo"),
    conda:
        ENV["eval"]
    log:
        "results/logs/make_dialog_demo.log",
    shell:
        "python -m crossmodal make-dialog-demo {params.job} 2> {log}"


rule dialog_prepare:
    input:
        unpack(STAGES["dialog_prepare"].inputs),
    output:
        **STAGES["dialog_prepare"].outputs,
    params:
        job=STAGES["dialog_prepare"].job,
        settings=STAGES["dialog_prepare"].settings,
        code=code("dialog-prepare"),
    wildcard_constraints:
        dataset="photochat|demo",
        split="train|test",
    conda:
        ENV["eval"]
    log:
        "results/logs/dialog_prepare/{dataset}_{split}.log",
    shell:
        "python -m crossmodal dialog-prepare {params.job} 2> {log}"


rule dialog_photos:
    input:
        unpack(STAGES["dialog_photos"].inputs),
    output:
        **STAGES["dialog_photos"].outputs,
    params:
        job=STAGES["dialog_photos"].job,
        settings=STAGES["dialog_photos"].settings,
        code=code("dialog-photos"),
    wildcard_constraints:
        dataset="photochat|demo",
    conda:
        ENV["eval"]
    log:
        "results/logs/dialog_photos/{dataset}.log",
    shell:
        "python -m crossmodal dialog-photos {params.job} 2> {log}"


rule dialog_describe:
    input:
        unpack(STAGES["dialog_describe"].inputs),
    output:
        **STAGES["dialog_describe"].outputs,
    params:
        job=STAGES["dialog_describe"].job,
        settings=STAGES["dialog_describe"].settings,
        code=code("dialog-describe"),
    wildcard_constraints:
        dataset="photochat|demo",
        split="train|test",
    conda:
        lambda w: model_env("llms", w.llm)
    log:
        "results/logs/dialog_describe/{dataset}_{split}_{llm}.log",
    shell:
        "python -m crossmodal dialog-describe {params.job} 2> {log}"


rule dialog_train:
    input:
        unpack(STAGES["dialog_train"].inputs),
    output:
        **STAGES["dialog_train"].outputs,
    params:
        job=STAGES["dialog_train"].job_with_threads,
        settings=STAGES["dialog_train"].settings,
        code=code("dialog-train"),
        processes=max(1, config["dialog"]["train"]["gpus"]),
    wildcard_constraints:
        dataset="photochat|demo",
    threads: max(1, config["dialog"]["train"]["workers"])
    resources:
        gpu=config["dialog"]["train"]["gpus"],
        mem_mb=config["dialog"]["train"]["mem_mb"],
    conda:
        ENV["clip"]
    log:
        "results/logs/dialog_train/{dataset}_{llm}_{encoder}.log",
    shell:
        "torchrun --standalone --nproc_per_node {params.processes} "
        "-m crossmodal dialog-train {params.job} 2> {log}"


rule dialog_embed:
    input:
        unpack(STAGES["dialog_embed"].inputs),
    output:
        **STAGES["dialog_embed"].outputs,
    params:
        job=STAGES["dialog_embed"].job,
        settings=STAGES["dialog_embed"].settings,
        code=code("dialog-embed"),
    wildcard_constraints:
        dataset="photochat|demo",
        method="zero_shot|finetuned",
    resources:
        gpu=lambda w: min(1, config["dialog"]["train"]["gpus"]),
    conda:
        ENV["clip"]
    log:
        "results/logs/dialog_embed/{dataset}_{method}_{llm}_{encoder}.log",
    shell:
        "python -m crossmodal dialog-embed {params.job} 2> {log}"


rule dialog_search:
    input:
        unpack(STAGES["dialog_search"].inputs),
    output:
        **STAGES["dialog_search"].outputs,
    params:
        job=STAGES["dialog_search"].job,
        settings=STAGES["dialog_search"].settings,
        code=code("dialog-search"),
    wildcard_constraints:
        dataset="photochat|demo",
        method="zero_shot|finetuned",
    conda:
        ENV["clip"]
    log:
        "results/logs/dialog_search/{dataset}_{method}_{llm}_{encoder}.log",
    shell:
        "python -m crossmodal dialog-search {params.job} 2> {log}"


rule dialog_eval:
    input:
        unpack(STAGES["dialog_eval"].inputs),
    output:
        **STAGES["dialog_eval"].outputs,
    params:
        job=STAGES["dialog_eval"].job,
        settings=STAGES["dialog_eval"].settings,
        code=code("dialog-eval"),
    wildcard_constraints:
        dataset="photochat|demo",
        method="zero_shot|finetuned",
    conda:
        ENV["eval"]
    log:
        "results/logs/dialog_eval/{dataset}_{method}_{llm}_{encoder}.log",
    shell:
        "python -m crossmodal dialog-eval {params.job} 2> {log}"


rule dialog_summary:
    input:
        unpack(STAGES["dialog_summary"].inputs),
    output:
        summary=report(
            STAGES["dialog_summary"].outputs["summary"],
            caption="../report/dialog_summary.rst",
            category="Dialogue-to-photo retrieval",
        ),
        plot=report(
            STAGES["dialog_summary"].outputs["plot"],
            caption="../report/dialog_summary.rst",
            category="Dialogue-to-photo retrieval",
        ),
    params:
        job=STAGES["dialog_summary"].job,
        settings=STAGES["dialog_summary"].settings,
        code=code("dialog-summary"),
    wildcard_constraints:
        dataset="photochat|demo",
    conda:
        ENV["eval"]
    log:
        "results/logs/dialog_summary/{dataset}.log",
    shell:
        "python -m crossmodal dialog-summary {params.job} 2> {log}"
