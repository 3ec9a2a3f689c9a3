# CLIP image and text features -> Parquet.


rule extract_features:
    input:
        "results/data/{collection}/images.parquet",
    output:
        features="results/features/{collection}/{encoder}.parquet",
        report="results/features/{collection}/{encoder}.skips.json",
    params:
        code=wf.code_version("features", SRC),
        spec=lambda w: wf.encoder_spec_json(config, w.encoder),
        f=config["features"],
        draft=lambda w: "" if config["features"]["draft"] else "--no-draft",
    threads: max(1, config["features"]["workers"])
    conda:
        ENV["clip"]
    log:
        "results/logs/extract_features/{collection}_{encoder}.log",
    shell:
        "python -m crossmodal extract-features --encoder-spec {params.spec:q} "
        "--images {input} --out {output.features} --report {output.report} "
        "--batch-size {params.f[batch_size]} --workers {threads} {params.draft} "
        "--dtype {params.f[dtype]} --precision {params.f[precision]} "
        "--device {params.f[device]} --max-skip-fraction {params.f[max_skip_fraction]} "
        "2> {log}"


rule extract_question_features:
    input:
        "results/data/{dataset}/{split}/questions.parquet",
    output:
        "results/features/{dataset}/{split}/questions.{encoder}.parquet",
    params:
        code=wf.code_version("features", SRC),
        spec=lambda w: wf.encoder_spec_json(config, w.encoder),
        f=config["features"],
    conda:
        ENV["clip"]
    log:
        "results/logs/extract_question_features/{dataset}_{split}_{encoder}.log",
    shell:
        "python -m crossmodal extract-text-features --encoder-spec {params.spec:q} "
        "--table {input} --id-column question_id --text-column question --out {output} "
        "--dtype {params.f[dtype]} --precision {params.f[precision]} "
        "--device {params.f[device]} 2> {log}"


rule extract_caption_features:
    input:
        "results/data/{collection}/captions.parquet",
    output:
        "results/features/{collection}/captions.{encoder}.parquet",
    params:
        code=wf.code_version("features", SRC),
        spec=lambda w: wf.encoder_spec_json(config, w.encoder),
        f=config["features"],
    conda:
        ENV["clip"]
    log:
        "results/logs/extract_caption_features/{collection}_{encoder}.log",
    shell:
        "python -m crossmodal extract-text-features --encoder-spec {params.spec:q} "
        "--table {input} --id-column image_id --text-column caption --out {output} "
        "--dtype {params.f[dtype]} --precision {params.f[precision]} "
        "--device {params.f[device]} 2> {log}"
