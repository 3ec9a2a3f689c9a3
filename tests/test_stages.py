"""Stage declarations: one job per stage, the rules fill it by name, the CLI comes from it."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.jobs import demo_config, write_targets

from crossmodal import jobs, stages, workflow
from crossmodal.cli import build_parser
from crossmodal.codehash import package_root
from crossmodal.config import ConfigError
from crossmodal.errors import CrossmodalError
from crossmodal.io import write_table
from crossmodal.preflight import missing_keys, preflight
from crossmodal.recod.stage import DESCRIPTIONS_SCHEMA, merge_ledgers, select_targets
from crossmodal.vqa.stage import example_pool


class Wildcards(SimpleNamespace):
    def items(self):
        return vars(self).items()


WILDCARDS = Wildcards(
    archive="val2014.zip",
    collection="demo_val2014",
    dataset="demo",
    split="val",
    encoder="tiny",
    vlm="tiny_llava",
    method="recod",
    llm="tiny_lm",
    k="1",
    shard="0",
    shards="1",
    name="tiny_llava",
    teacher="tiny_tokens",
    variant="cusa",
    run="cusa",
    tagger="tiny_tagger",
    parser="tagger",
)
# Wildcards whose value depends on the rule (a text teacher, a sentence-transformers folder).
RULE_WILDCARDS = {
    "cusa_text_teacher": {"teacher": "tiny_st"},
    "make_tiny_st": {"name": "tiny_st"},
    "wca_crops": {"collection": "cls_demo", "alpha": "0.5", "n_crops": "8"},
    "zeroshot": {"method": "wca"},
    "make_tiny_tagger": {"name": "tiny_tagger"},
    "prepare_cir": {"split": "test"},
    "cir_parse": {"split": "test"},
    "cir_embed": {"split": "test", "method": "finetuned"},
    "cir_build_index": {"split": "test", "method": "finetuned"},
    "cir_eval": {"split": "test", "method": "untrained"},
    "dialog_prepare": {"split": "test"},
    "dialog_describe": {"split": "train"},
    "dialog_embed": {"method": "finetuned"},
    "dialog_search": {"method": "zero_shot"},
    "dialog_eval": {"method": "finetuned"},
}


@pytest.mark.parametrize("name", sorted(workflow.stages_for(demo_config())))
def test_every_rule_fills_exactly_its_jobs_fields(name):
    stage = workflow.stages_for(demo_config())[name]
    w = Wildcards(**{**vars(WILDCARDS), **RULE_WILDCARDS.get(name, {})})
    inputs = stage.inputs(w)
    params = stage.params(w)
    if stage.threads_field:
        params[stage.threads_field] = 2
        assert json.loads(stage.settings(w)) == stage.params(w)
    roles = {
        "input": set(stage.cls.names("input")),
        "output": set(stage.cls.names("output")),
    }
    assert set(inputs) <= roles["input"], "a rule input that is not a job input"
    assert set(stage.outputs) == roles["output"], "rule outputs and job outputs differ"
    outputs = {k: v for k, v in stage.outputs.items()}
    job = stage.cls.from_rule(inputs, outputs, params)
    # the job survives its own command line unchanged: what the rule passes is what runs
    args = build_parser().parse_args([stage.cls.command, *jobs.to_args(job)])
    assert jobs.from_namespace(stage.cls, args) == job


def test_wiring_mistakes_name_both_sides():
    with pytest.raises(CrossmodalError, match=r"not job fields: \['tabel'\]"):
        stages.MergeDescriptions.from_rule(
            {"tables": ["a"], "ledgers": ["b"]}, {"tabel": "t", "ledger": "l", "export": "e"}, {}
        )


def test_cli_is_generated_from_the_jobs():
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)
    assert set(jobs.JOBS) | {"recipe"} == commands
    help_text = parser._subparsers._group_actions[0].choices["pica"].format_help()
    assert "--val-descriptions" in help_text and "[input]" in help_text


def test_stage_code_covers_what_it_imports_and_the_command_line(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(package_root() / "crossmodal", src / "crossmodal")
    before = {c: workflow.code_version(c, str(src)) for c in jobs.JOBS}
    (src / "crossmodal/vqa/vqa_eval.py").write_text(
        (src / "crossmodal/vqa/vqa_eval.py").read_text() + "\n# edit\n"
    )
    workflow.code_version.cache_clear()
    after = {c: workflow.code_version(c, str(src)) for c in jobs.JOBS}
    changed = {c for c in jobs.JOBS if before[c] != after[c]}
    assert changed == {"score", "vqa-eval", "aokvqa-eval"}
    (src / "crossmodal/cli.py").write_text((src / "crossmodal/cli.py").read_text() + "\n#\n")
    workflow.code_version.cache_clear()
    assert all(workflow.code_version(c, str(src)) != after[c] for c in jobs.JOBS)
    workflow.code_version.cache_clear()


def test_select_targets_leaves_out_unreadable_images_and_those_beyond_the_limit(tmp_path):
    targets = [(i, f"/img/{i}.jpg") for i in (5, 3, 9, 7, 1)]
    files = write_targets(tmp_path, targets, {7: "undecodable (truncated)"})
    chosen, left_out = select_targets(files["images"], files["questions"], files["skips"], 3)
    assert [i for i, _ in chosen] == [1, 3, 5]
    assert left_out == {
        7: "unreadable image: undecodable (truncated)",
        9: "beyond describe.limit=3",
    }
    all_of_them, none = select_targets(files["images"], files["questions"], files["skips"], None)
    assert [i for i, _ in all_of_them] == [1, 3, 5, 9] and set(none) == {7}


def test_a_question_image_missing_from_the_collection_is_an_error(tmp_path):
    files = write_targets(tmp_path, [(1, "/a.jpg")])
    pq.write_table(pa.table({"question_id": [10, 20], "image_id": [1, 2]}), files["questions"])
    with pytest.raises(CrossmodalError, match=r"not in .*images.parquet, e.g. \[2\]"):
        select_targets(files["images"], files["questions"], files["skips"], None)


def _descriptions(path, texts: dict[int, str], left_out: dict[int, str] | None = None):
    rows = [
        {"image_id": i, "loop": 0, "text": t, "retrieved_id": None, "score": None, "reference": []}
        for i, t in texts.items()
    ]
    table = pa.Table.from_pylist(rows, schema=DESCRIPTIONS_SCHEMA)
    write_table(path, table, {"left_out": {str(k): v for k, v in (left_out or {}).items()}})


def test_pica_example_pool_is_explicit_about_what_it_leaves_out(tmp_path):
    import pandas as pd

    train = pd.DataFrame(
        {
            "question_id": [1, 2, 3, 4, 5],
            "image_id": [10, 20, 30, 40, 50],
            "question": ["q1", "", "q3", "q4", "q5"],
            "answers": [["a"], ["b"], [], ["d"], ["e"]],
        }
    )
    desc = tmp_path / "d.parquet"
    _descriptions(
        desc, {10: "ten", 20: "twenty", 30: "thirty", 40: ""}, {50: "unreadable image: x"}
    )
    rows, examples, excluded = example_pool(train, desc)
    assert rows == [0] and examples[0].context == "ten" and examples[0].answer == "a"
    assert excluded == {
        "empty question": 1,
        "empty first answer": 1,
        "empty description": 1,
        "image left out (unreadable image)": 1,
    }


def test_pica_refuses_a_missing_training_description_naming_the_image(tmp_path):
    import pandas as pd

    train = pd.DataFrame(
        {
            "question_id": [1, 2],
            "image_id": [10, 77],
            "question": ["q", "q"],
            "answers": [["a"]] * 2,
        }
    )
    desc = tmp_path / "d.parquet"
    _descriptions(desc, {10: "ten"})
    with pytest.raises(
        CrossmodalError, match=r"no description of 1 training image\(s\), e.g. \[77\]"
    ):
        example_pool(train, desc)


def test_shard_ledgers_add_up():
    a = {"model": "m", "requests": 3, "sent": 2, "answered_from_journal": 1, "cost_usd": 0.1}
    b = {"model": "m", "requests": 4, "sent": 4, "answered_from_journal": 0, "cost_usd": 0.25}
    a["sampling_sent"] = {"temperature": {"requests": 3, "min": 0.1, "max": 0.5}}
    b["sampling_sent"] = {"temperature": {"requests": 4, "min": 0.05, "max": 0.3}}
    merged = merge_ledgers([a, b])
    assert merged["requests"] == 7 and merged["sent"] == 6 and merged["shards"] == 2
    assert merged["sampling_sent"] == {"temperature": {"requests": 7, "min": 0.05, "max": 0.5}}
    assert merged["cost_usd"] == pytest.approx(0.35)


def test_preflight_names_the_missing_key_before_any_job():
    config = demo_config(
        vlms={
            "haiku": {
                "backend": "anthropic",
                "model": "claude-3-haiku-20240307",
                "price": {"input": 0.25, "output": 1.25},
            }
        },
        describe={"vlms": ["tiny_llava", "haiku"]},
    )
    assert missing_keys(config, {"ANTHROPIC_API_KEY": "x"}) == []
    with pytest.raises(
        ConfigError, match=r"vlms.haiku \(in describe.vlms\) needs ANTHROPIC_API_KEY"
    ):
        preflight(config, {})


def test_preflight_notes_documented_fallbacks(monkeypatch):
    config = demo_config(
        llms={
            "claude": {
                "backend": "anthropic",
                "model": "claude-3-haiku-20240307",
                "price": {"input": 0.25, "output": 1.25},
            }
        },
        pica={"llms": ["claude"]},
    )
    notes = preflight(config, {"ANTHROPIC_API_KEY": "x"})
    assert any("majority vote" in n for n in notes)


def test_config_hash_ignores_how_work_is_split():
    base = demo_config()
    split = demo_config(describe={"shards": 3, "chunk": 5}, features={"workers": 1})
    h = lambda c: workflow.config_hash(c, "demo", "tiny_llava", "recod", "tiny_lm")  # noqa: E731
    assert h(base) == h(split)
    assert h(base) != h(demo_config(describe={"n_reference_captions": 1}))
    # reusing the first captions draws them per shard: then shards shape the result
    reuse = {"reuse_first_references": True}
    assert h(demo_config(describe=reuse)) != h(demo_config(describe={**reuse, "shards": 2}))


def test_an_empty_list_survives_the_command_line():
    job = stages.Summarize(scores=[], runs=[], title="t", summary="s.json", plot="p.png")
    args = build_parser().parse_args(["summarize", *jobs.to_args(job)])
    assert jobs.from_namespace(stages.Summarize, args).scores == []


def test_describe_settings_have_no_defaults_outside_the_schema():
    from crossmodal.recod.loop import DescribeSettings
    from crossmodal.vqa.pica import PicaSettings

    with pytest.raises(TypeError):
        DescribeSettings(method="base")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        PicaSettings()  # type: ignore[call-arg]
    with pytest.raises(CrossmodalError, match=r"missing keys \['join'"):
        PicaSettings.from_dict({"n_shot": 1, "n_ensemble": 1, "max_tokens": 1})
    assert json.dumps(workflow.describe_settings(demo_config(), "tiny_llava", "base", "val"))
