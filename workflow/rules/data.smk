# Download -> verify -> extract (or generate the demo world) -> prepare Parquet tables.

ARCHIVES = wf.archive_roots()


rule download:
    output:
        "resources/downloads/{archive}",
    params:
        mirror=lambda w: wf.optional_arg(
            "--mirror", config["data"]["mirrors"].get(wf.archive_mirror_key(w.archive))
        ),
        retries=config["data"]["retries"],
        timeout=config["data"]["timeout"],
        manifest=wf.MANIFEST,
    wildcard_constraints:
        archive="|".join(re.escape(a) for a in ARCHIVES),
    conda:
        ENV["eval"]
    log:
        "results/logs/download/{archive}.log",
    shell:
        "python -m crossmodal download {wildcards.archive:q} --manifest {params.manifest} "
        "--dest resources/downloads --retries {params.retries} --timeout {params.timeout} "
        "{params.mirror} 2> {log}"


rule extract:
    input:
        "resources/downloads/{archive}",
    output:
        "resources/.extracted/{archive}.json",
    params:
        into=lambda w: f"resources/{ARCHIVES[w.archive]}",
    conda:
        ENV["eval"]
    log:
        "results/logs/extract/{archive}.log",
    shell:
        "python -m crossmodal extract {input:q} --into {params.into:q} --done {output:q} 2> {log}"


rule make_demo:
    output:
        wf.DEMO_DONE,
    params:
        code=wf.code_version("demo", SRC),
        seed=config["demo"]["seed"],
        n_train=config["demo"]["n_train"],
        n_val=config["demo"]["n_val"],
        size=" ".join(map(str, config["demo"]["image_size"])),
    conda:
        ENV["eval"]
    log:
        "results/logs/make_demo.log",
    shell:
        "python -m crossmodal make-demo --root resources/demo --seed {params.seed} "
        "--n-train {params.n_train} --n-val {params.n_val} --image-size {params.size} "
        "--done {output} 2> {log}"


rule prepare_collection:
    input:
        lambda w: wf.collection_sources(w.collection),
    output:
        images="results/data/{collection}/images.parquet",
        captions="results/data/{collection}/captions.parquet",
    params:
        code=wf.code_version("prepare", SRC),
        paths=lambda w: wf.collection_paths(w.collection),
    conda:
        ENV["eval"]
    log:
        "results/logs/prepare_collection/{collection}.log",
    shell:
        "python -m crossmodal prepare-collection --image-dir {params.paths[image_dir]:q} "
        "--captions {params.paths[captions]:q} --images-out {output.images} "
        "--captions-out {output.captions} 2> {log}"


rule prepare_questions:
    input:
        lambda w: wf.dataset_sources(w.dataset),
    output:
        "results/data/{dataset}/{split}/questions.parquet",
    params:
        code=wf.code_version("prepare", SRC),
        paths=lambda w: wf.question_paths(w.dataset, w.split),
        annotations=lambda w: wf.optional_arg(
            "--annotations", wf.question_paths(w.dataset, w.split)["annotations"]
        ),
    conda:
        ENV["eval"]
    log:
        "results/logs/prepare_questions/{dataset}_{split}.log",
    shell:
        "python -m crossmodal prepare-questions --format {params.paths[format]} "
        "--questions {params.paths[questions]:q} "
        "{params.annotations} "
        "--out {output} 2> {log}"
