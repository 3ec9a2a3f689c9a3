# PICa answers for every loop in one job per (dataset, vlm, method, llm).


rule pica:
    input:
        unpack(STAGES["pica"].inputs),
    output:
        **STAGES["pica"].outputs,
    params:
        job=STAGES["pica"].job,
        settings=STAGES["pica"].settings,
        code=code("pica"),
    resources:
        gpu=lambda w: config["llms"][w.llm]["gpus"],
        mem_mb=lambda w: config["llms"][w.llm]["mem_mb"],
    conda:
        lambda w: model_env("llms", w.llm)
    log:
        "results/logs/pica/{dataset}_{vlm}_{method}_{llm}.log",
    shell:
        "python -m crossmodal pica {params.job} 2> {log}"
