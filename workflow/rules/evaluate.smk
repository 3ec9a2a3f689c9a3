# Official scoring per run, then one summary per dataset.


rule score:
    input:
        unpack(STAGES["score"].inputs),
    output:
        **STAGES["score"].outputs,
    params:
        job=STAGES["score"].job,
        settings=STAGES["score"].settings,
        code=code("score"),
    conda:
        ENV["eval"]
    log:
        "results/logs/score/{dataset}_{vlm}_{method}_loop{k}_{llm}.log",
    shell:
        "python -m crossmodal score {params.job} 2> {log}"


rule summarize:
    input:
        unpack(STAGES["summarize"].inputs),
    output:
        summary=report(
            STAGES["summarize"].outputs["summary"],
            caption="../report/acc_json.rst",
            category="Accuracy",
        ),
        plot=report(
            STAGES["summarize"].outputs["plot"],
            caption="../report/acc_png.rst",
            category="Accuracy",
        ),
    params:
        job=STAGES["summarize"].job,
        settings=STAGES["summarize"].settings,
        code=code("summarize"),
    conda:
        ENV["eval"]
    log:
        "results/logs/summarize/{dataset}.log",
    shell:
        "python -m crossmodal summarize {params.job} 2> {log}"
