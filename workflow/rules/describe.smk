# Image descriptions from VLMs, with and without ReCoD. The request journal lives under
# results/journal/ (not a declared output), so a killed job resumes without resending.


rule make_tiny_vlm:
    output:
        "resources/models/{name}/config.json",
    params:
        code=wf.code_version("describe", SRC),
        arch=lambda w: wf.tiny_vlm_arch(config, f"resources/models/{w.name}"),
    conda:
        ENV["clip"]
    log:
        "results/logs/make_tiny_vlm/{name}.log",
    shell:
        "python -m crossmodal make-tiny-vlm --arch {params.arch} "
        "--out resources/models/{wildcards.name} 2> {log}"


rule describe:
    input:
        unpack(
            lambda w: wf.describe_inputs(config, w.dataset, w.split, w.vlm, w.method)
        ),
    output:
        table="results/{dataset}/{split}/descriptions/{vlm}/{method}.parquet",
        ledger="results/{dataset}/{split}/descriptions/{vlm}/{method}.ledger.json",
        export="results/{dataset}/{split}/descriptions/{vlm}/{method}.seed.json",
    params:
        code=wf.code_version("describe", SRC),
        vlm=lambda w: wf.json_arg(wf.generator_spec(config, w.vlm)),
        settings=lambda w: wf.json_arg(
            wf.describe_settings(config, w.vlm, w.method, w.split)
        ),
        encoder=lambda w: wf.encoder_spec_json(config, config["features"]["encoder"]),
        retrieval=lambda w, input: (
            ""
            if w.method == "base"
            else f"--index {input.index} --retrieval-images {input.retrieval_images} "
            f"--retrieval-captions {input.retrieval_captions}"
        ),
        limit=wf.optional_arg("--limit", config["describe"]["limit"]),
        chunk=config["describe"]["chunk"],
        journal="results/journal/{dataset}/{split}/{vlm}/{method}.jsonl",
    wildcard_constraints:
        method="base|recod|recod_img",
    resources:
        gpu=lambda w: config["vlms"][w.vlm]["gpus"],
        mem_mb=lambda w: config["vlms"][w.vlm]["mem_mb"],
    conda:
        lambda w: model_env("vlms", w.vlm)
    log:
        "results/logs/describe/{dataset}_{split}_{vlm}_{method}.log",
    shell:
        "python -m crossmodal describe --vlm-spec {params.vlm:q} --settings {params.settings:q} "
        "--images {input.images} --questions {input.questions} {params.limit} "
        "--encoder-spec {params.encoder:q} {params.retrieval} --chunk {params.chunk} "
        "--journal {params.journal} --out {output.table} --ledger {output.ledger} "
        "--export {output.export} 2> {log}"
