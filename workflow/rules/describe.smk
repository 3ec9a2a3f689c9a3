# Image descriptions from VLMs, with and without ReCoD, in `describe.shards` jobs per stage
# (each its own server and GPU on a cluster), merged into one table. The request journals live
# under results/journal/ (not declared outputs), so a killed job resumes without resending.


rule make_tiny_vlm:
    output:
        **STAGES["make_tiny_vlm"].outputs,
    params:
        job=STAGES["make_tiny_vlm"].job,
        settings=STAGES["make_tiny_vlm"].settings,
        code=code("make-tiny-vlm"),
    conda:
        ENV["clip"]
    log:
        "results/logs/make_tiny_vlm/{name}.log",
    shell:
        "python -m crossmodal make-tiny-vlm {params.job} 2> {log}"


rule describe:
    input:
        unpack(STAGES["describe"].inputs),
    output:
        **STAGES["describe"].outputs,
    params:
        job=STAGES["describe"].job,
        settings=STAGES["describe"].settings,
        code=code("describe"),
    resources:
        gpu=lambda w: config["vlms"][w.vlm]["gpus"],
        mem_mb=lambda w: config["vlms"][w.vlm]["mem_mb"],
    conda:
        lambda w: model_env("vlms", w.vlm)
    log:
        "results/logs/describe/{dataset}_{split}_{vlm}_{method}_{shard}of{shards}.log",
    shell:
        "python -m crossmodal describe {params.job} 2> {log}"


rule merge_descriptions:
    input:
        unpack(STAGES["merge_descriptions"].inputs),
    output:
        **STAGES["merge_descriptions"].outputs,
    params:
        job=STAGES["merge_descriptions"].job,
        settings=STAGES["merge_descriptions"].settings,
        code=code("merge-descriptions"),
    conda:
        ENV["eval"]
    log:
        "results/logs/merge_descriptions/{dataset}_{split}_{vlm}_{method}.log",
    shell:
        "python -m crossmodal merge-descriptions {params.job} 2> {log}"


rule gallery:
    input:
        unpack(STAGES["gallery"].inputs),
    output:
        page=report(
            STAGES["gallery"].outputs["page"],
            caption="../report/gallery.rst",
            category="ReCoD loops",
            subcategory="{dataset} {vlm} {method}",
        ),
    params:
        job=STAGES["gallery"].job,
        settings=STAGES["gallery"].settings,
        code=code("gallery"),
    wildcard_constraints:
        method="recod|recod_img",
    conda:
        ENV["eval"]
    log:
        "results/logs/gallery/{dataset}_{vlm}_{method}.log",
    shell:
        "python -m crossmodal gallery {params.job} 2> {log}"
