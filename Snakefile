# crossmodal: the whole pipeline as one DAG. Rules wire files together; the `crossmodal`
# package does the work. See README.md and config/README.md.
import sys
from pathlib import Path

# The DAG is built by this checkout's own code (as every job runs it), not by whichever
# `crossmodal` happens to be installed: a recipe replayed in a second checkout stays exact.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

if not config:  # `--configfile X` replaces the paper settings instead of merging into them
    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/index.smk"
include: "workflow/rules/describe.smk"
include: "workflow/rules/vqa.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/itr.smk"
include: "workflow/rules/dialog.smk"
include: "workflow/rules/cir.smk"
include: "workflow/rules/zeroshot.smk"


rule all:
    input:
        wf.summary_targets(config),
        wf.gallery_targets(config),
        itr.summary_targets(config),
        dialog.summary_targets(config),
        cir.summary_targets(config),
        zeroshot.summary_targets(config),
    default_target: True
