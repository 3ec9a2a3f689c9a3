# CLIP image and question features -> Parquet.


rule extract_features:
    input:
        unpack(STAGES["extract_features"].inputs),
    output:
        **STAGES["extract_features"].outputs,
    params:
        job=STAGES["extract_features"].job_with_threads,
        settings=STAGES["extract_features"].settings,
        code=code("extract-features"),
    threads: max(1, config["features"]["workers"])
    conda:
        ENV["clip"]
    log:
        "results/logs/extract_features/{collection}_{encoder}.log",
    shell:
        "python -m crossmodal extract-features {params.job} 2> {log}"


rule extract_question_features:
    input:
        unpack(STAGES["extract_question_features"].inputs),
    output:
        **STAGES["extract_question_features"].outputs,
    params:
        job=STAGES["extract_question_features"].job,
        settings=STAGES["extract_question_features"].settings,
        code=code("extract-text-features"),
    conda:
        ENV["clip"]
    log:
        "results/logs/extract_question_features/{dataset}_{split}_{encoder}.log",
    shell:
        "python -m crossmodal extract-text-features {params.job} 2> {log}"
