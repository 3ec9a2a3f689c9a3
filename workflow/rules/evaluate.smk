# Official scoring per run, then one summary per dataset.


rule score:
    input:
        answers="results/{dataset}/val/answers/{vlm}/{method}/loop{k}/{llm}.json",
        sources=lambda w: wf.dataset_sources(w.dataset),
    output:
        "results/{dataset}/val/scores/{vlm}/{method}/loop{k}/{llm}.json",
    params:
        code=wf.code_version("score", SRC),
        files=lambda w: wf.official_files(w.dataset),
        format=lambda w: wf.dataset(w.dataset).format,
    conda:
        ENV["eval"]
    log:
        "results/logs/score/{dataset}_{vlm}_{method}_loop{k}_{llm}.log",
    shell:
        "if [ {params.format} = aokvqa ]; then "
        "python -m crossmodal aokvqa-eval --dataset {params.files[questions]:q} "
        "--predictions {input.answers} --out {output} 2> {log}; "
        "else python -m crossmodal vqa-eval --questions {params.files[questions]:q} "
        "--annotations {params.files[annotations]:q} --predictions {input.answers} "
        "--out {output} 2> {log}; fi"


rule summarize:
    input:
        lambda w: [r["score"] for r in wf.score_runs(config, w.dataset)],
    output:
        json=report(
            "results/{dataset}/acc.json",
            caption="../report/acc_json.rst",
            category="Accuracy",
        ),
        png=report(
            "results/{dataset}/acc.png", caption="../report/acc_png.rst", category="Accuracy"
        ),
    params:
        code=wf.code_version("summarize", SRC),
        runs=lambda w: wf.json_arg(wf.score_runs(config, w.dataset)),
        title=lambda w: (
            f"{w.dataset}: random-weight demo models (smoke run, numbers are meaningless)"
            if w.dataset == "demo"
            else f"{w.dataset} val: PICa accuracy by number of descriptions"
        ),
    conda:
        ENV["eval"]
    log:
        "results/logs/summarize/{dataset}.log",
    shell:
        "python -m crossmodal summarize --runs {params.runs:q} --title {params.title:q} "
        "--out-json {output.json} --out-png {output.png} 2> {log}"
