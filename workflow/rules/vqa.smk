# PICa answers for every loop in one job per (dataset, vlm, method, llm).

LOOPS = wf.pica_loops(config)


rule pica:
    input:
        unpack(lambda w: wf.pica_inputs(config, w.dataset, w.vlm, w.method, w.llm)),
    output:
        answers=expand(
            "results/{{dataset}}/val/answers/{{vlm}}/{{method}}/loop{k}/{{llm}}.json", k=LOOPS
        ),
        ledger="results/{dataset}/val/answers/{vlm}/{method}/{llm}.ledger.json",
    params:
        code=wf.code_version("pica", SRC),
        llm=lambda w: wf.json_arg(config["llms"][w.llm]),
        settings=wf.json_arg(
            {k: config["pica"][k] for k in ("n_shot", "n_ensemble", "max_tokens", "join")}
        ),
        format=lambda w: wf.dataset(w.dataset).format,
        loops=" ".join(map(str, LOOPS)),
        encoder=wf.encoder_spec_json(config, config["features"]["encoder"]),
        journal="results/journal/{dataset}/val/{vlm}/{method}/pica_{llm}.jsonl",
    wildcard_constraints:
        method="base|recod|recod_img",
    resources:
        gpu=lambda w: config["llms"][w.llm]["gpus"],
        mem_mb=lambda w: config["llms"][w.llm]["mem_mb"],
    conda:
        lambda w: model_env("llms", w.llm)
    log:
        "results/logs/pica/{dataset}_{vlm}_{method}_{llm}.log",
    shell:
        "python -m crossmodal pica --llm-spec {params.llm:q} --settings {params.settings:q} "
        "--format {params.format} --val-questions {input.val_questions} "
        "--train-questions {input.train_questions} "
        "--val-question-features {input.val_question_features} "
        "--train-question-features {input.train_question_features} "
        "--val-image-features {input.val_image_features} "
        "--train-image-features {input.train_image_features} "
        "--val-descriptions {input.val_descriptions} "
        "--train-descriptions {input.train_descriptions} --loops {params.loops} "
        "--encoder-spec {params.encoder:q} --out {output.answers} --journal {params.journal} "
        "--ledger {output.ledger} 2> {log}"
