# Image-text retrieval with CUSA: Karpathy-split pairs -> teacher features -> one torchrun
# training job per method variant -> similarity matrices of the test split -> itr-eval ->
# results/itr/{dataset}/summary.json. Checkpoints live under results/checkpoints/ (not
# declared outputs), so a killed training job resumes.
from crossmodal.cusa import wiring as itr


wildcard_constraints:
    variant="contrastive|csa|usa|cusa",
    run="zero_shot|contrastive|csa|usa|cusa",
    teacher="[A-Za-z0-9_-]+",


rule prepare_itr:
    input:
        unpack(STAGES["prepare_itr"].inputs),
    output:
        **STAGES["prepare_itr"].outputs,
    params:
        job=STAGES["prepare_itr"].job,
        settings=STAGES["prepare_itr"].settings,
        code=code("prepare-itr"),
    conda:
        ENV["clip"]
    log:
        "results/logs/prepare_itr/{dataset}.log",
    shell:
        "python -m crossmodal prepare-itr {params.job} 2> {log}"


rule make_tiny_st:
    output:
        **STAGES["make_tiny_st"].outputs,
    params:
        job=STAGES["make_tiny_st"].job,
        settings=STAGES["make_tiny_st"].settings,
        code=code("make-tiny-st"),
    conda:
        ENV["clip"]
    log:
        "results/logs/make_tiny_st/{name}.log",
    shell:
        "python -m crossmodal make-tiny-st {params.job} 2> {log}"


rule cusa_image_teacher:
    input:
        unpack(STAGES["cusa_image_teacher"].inputs),
    output:
        **STAGES["cusa_image_teacher"].outputs,
    params:
        job=STAGES["cusa_image_teacher"].job_with_threads,
        settings=STAGES["cusa_image_teacher"].settings,
        code=code("cusa-image-teacher"),
    threads: max(1, config["features"]["workers"])
    resources:
        gpu=lambda w: min(1, config["cusa"]["train"]["gpus"]),
    conda:
        ENV["clip"]
    log:
        "results/logs/cusa_image_teacher/{dataset}_{teacher}.log",
    shell:
        "python -m crossmodal cusa-image-teacher {params.job} 2> {log}"


rule cusa_text_teacher:
    input:
        unpack(STAGES["cusa_text_teacher"].inputs),
    output:
        **STAGES["cusa_text_teacher"].outputs,
    params:
        job=STAGES["cusa_text_teacher"].job,
        settings=STAGES["cusa_text_teacher"].settings,
        code=code("cusa-text-teacher"),
    resources:
        gpu=lambda w: min(1, config["cusa"]["train"]["gpus"]),
    conda:
        ENV["clip"]
    log:
        "results/logs/cusa_text_teacher/{dataset}_{teacher}.log",
    shell:
        "python -m crossmodal cusa-text-teacher {params.job} 2> {log}"


rule cusa_train:
    input:
        unpack(STAGES["cusa_train"].inputs),
    output:
        **STAGES["cusa_train"].outputs,
    params:
        job=STAGES["cusa_train"].job_with_threads,
        settings=STAGES["cusa_train"].settings,
        code=code("cusa-train"),
        processes=max(1, config["cusa"]["train"]["gpus"]),
    threads: max(1, config["cusa"]["train"]["workers"])
    resources:
        gpu=config["cusa"]["train"]["gpus"],
        mem_mb=config["cusa"]["train"]["mem_mb"],
    conda:
        ENV["clip"]
    log:
        "results/logs/cusa_train/{dataset}_{variant}.log",
    shell:
        "torchrun --standalone --nproc_per_node {params.processes} "
        "-m crossmodal cusa-train {params.job} 2> {log}"


rule itr_scores:
    input:
        unpack(STAGES["itr_scores"].inputs),
    output:
        **STAGES["itr_scores"].outputs,
    params:
        job=STAGES["itr_scores"].job_with_threads,
        settings=STAGES["itr_scores"].settings,
        code=code("itr-scores"),
    threads: max(1, config["features"]["workers"])
    resources:
        gpu=lambda w: min(1, config["cusa"]["train"]["gpus"]),
    conda:
        ENV["clip"]
    log:
        "results/logs/itr_scores/{dataset}_{run}.log",
    shell:
        "python -m crossmodal itr-scores {params.job} 2> {log}"


rule itr_eval:
    input:
        unpack(STAGES["itr_eval"].inputs),
    output:
        **STAGES["itr_eval"].outputs,
    params:
        job=STAGES["itr_eval"].job,
        settings=STAGES["itr_eval"].settings,
        code=code("itr-eval"),
    conda:
        ENV["eval"]
    log:
        "results/logs/itr_eval/{dataset}_{run}.log",
    shell:
        "python -m crossmodal itr-eval {params.job} 2> {log}"


rule itr_summary:
    input:
        unpack(STAGES["itr_summary"].inputs),
    output:
        summary=report(
            STAGES["itr_summary"].outputs["summary"],
            caption="../report/itr_summary.rst",
            category="Image-text retrieval",
        ),
        plot=report(
            STAGES["itr_summary"].outputs["plot"],
            caption="../report/itr_summary.rst",
            category="Image-text retrieval",
        ),
    params:
        job=STAGES["itr_summary"].job,
        settings=STAGES["itr_summary"].settings,
        code=code("itr-summary"),
    conda:
        ENV["eval"]
    log:
        "results/logs/itr_summary/{dataset}.log",
    shell:
        "python -m crossmodal itr-summary {params.job} 2> {log}"
