# Download -> verify -> extract (or generate the demo world) -> prepare Parquet tables.

ARCHIVES = wf.archive_roots()


rule download:
    output:
        **STAGES["download"].outputs,
    params:
        job=STAGES["download"].job,
        settings=STAGES["download"].settings,
    wildcard_constraints:
        archive="|".join(re.escape(a) for a in ARCHIVES),
    conda:
        ENV["eval"]
    log:
        "results/logs/download/{archive}.log",
    shell:
        "python -m crossmodal download {params.job} 2> {log}"


rule extract:
    input:
        unpack(STAGES["extract"].inputs),
    output:
        **STAGES["extract"].outputs,
    params:
        job=STAGES["extract"].job,
        settings=STAGES["extract"].settings,
    conda:
        ENV["eval"]
    log:
        "results/logs/extract/{archive}.log",
    shell:
        "python -m crossmodal extract {params.job} 2> {log}"


rule make_demo:
    output:
        **STAGES["make_demo"].outputs,
    params:
        job=STAGES["make_demo"].job,
        settings=STAGES["make_demo"].settings,
        code=code("make-demo"),
    conda:
        ENV["eval"]
    log:
        "results/logs/make_demo.log",
    shell:
        "python -m crossmodal make-demo {params.job} 2> {log}"


rule prepare_collection:
    input:
        unpack(STAGES["prepare_collection"].inputs),
    output:
        **STAGES["prepare_collection"].outputs,
    params:
        job=STAGES["prepare_collection"].job,
        settings=STAGES["prepare_collection"].settings,
        code=code("prepare-collection"),
    conda:
        ENV["eval"]
    log:
        "results/logs/prepare_collection/{collection}.log",
    shell:
        "python -m crossmodal prepare-collection {params.job} 2> {log}"


rule prepare_questions:
    input:
        unpack(STAGES["prepare_questions"].inputs),
    output:
        **STAGES["prepare_questions"].outputs,
    params:
        job=STAGES["prepare_questions"].job,
        settings=STAGES["prepare_questions"].settings,
        code=code("prepare-questions"),
    conda:
        ENV["eval"]
    log:
        "results/logs/prepare_questions/{dataset}_{split}.log",
    shell:
        "python -m crossmodal prepare-questions {params.job} 2> {log}"
