# FAISS indexes over image features.


rule build_index:
    input:
        "results/features/{collection}/{encoder}.parquet",
    output:
        index="results/index/{collection}/{encoder}.faiss",
        meta="results/index/{collection}/{encoder}.json",
    params:
        code=wf.code_version("index", SRC),
        index=lambda w: wf.json_arg(config["index"]),
    conda:
        ENV["clip"]
    log:
        "results/logs/build_index/{collection}_{encoder}.log",
    shell:
        "python -m crossmodal build-index --features {input} --out {output.index} "
        "--params {params.index:q} 2> {log}"
