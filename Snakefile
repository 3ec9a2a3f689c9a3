# crossmodal: the whole pipeline as one DAG. Rules wire files together; the `crossmodal`
# package does the work. See ../README.md and config/README.md.

if not config:  # `--configfile X` replaces the paper settings instead of merging into them
    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/index.smk"
include: "workflow/rules/describe.smk"
include: "workflow/rules/vqa.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        final_targets(),
    default_target: True
