# FAISS indexes over image features.


rule build_index:
    input:
        unpack(STAGES["build_index"].inputs),
    output:
        **STAGES["build_index"].outputs,
    params:
        job=STAGES["build_index"].job,
        settings=STAGES["build_index"].settings,
        code=code("build-index"),
    conda:
        ENV["clip"]
    log:
        "results/logs/build_index/{collection}_{encoder}.log",
    shell:
        "python -m crossmodal build-index {params.job} 2> {log}"
