"""End to end on the demo: an unreadable image and ``describe.limit`` leave questions out,
explicitly and counted, from describe through acc.json; two describe shards equal one."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, run_snakemake

LIMIT = 5


def run(work, *targets):
    proc = run_snakemake(work, work / "c.yaml", *targets)
    assert proc.returncode == 0, proc.stderr[-3000:]


def pipeline(work, shards: int):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["demo"].update(n_train=16, n_val=8)
    config["features"]["max_skip_fraction"] = 0.2
    config["describe"].update(
        n_descriptions=2, methods=["base", "recod"], limit=LIMIT, shards=shards
    )
    work.mkdir()
    (work / "c.yaml").write_text(yaml.safe_dump(config))
    run(work, "resources/demo/.generated.json")
    images = sorted((work / "resources/demo/coco/val2014").glob("*.jpg"))
    broken = images[1]  # the second validation image: truncated mid-file
    broken.write_bytes(broken.read_bytes()[:200])
    run(work, "results/demo/acc.json")
    return work


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return pipeline(tmp_path_factory.mktemp("left_out") / "two_shards", shards=2)


@pytest.mark.slow
def test_left_out_questions_are_counted_by_reason_in_acc_json(sharded):
    questions = pq.read_table(sharded / "results/data/demo/val/questions.parquet").to_pandas()
    image_ids = sorted(set(questions["image_id"]))
    broken = image_ids[1]
    described = [i for i in image_ids if i != broken][:LIMIT]
    skips = json.loads((sharded / "results/features/demo_val2014/tiny.skips.json").read_text())
    assert [s["image_id"] for s in skips["skipped"]] == [broken]

    per_image = questions.groupby("image_id").size()
    unreadable = int(per_image[broken])
    beyond = int(per_image.drop([broken, *described]).sum())
    summary = json.loads((sharded / "results/demo/acc.json").read_text())
    for r in summary["runs"]:
        assert r["n_questions"] == int(per_image[described].sum())
        assert r["n_split_questions"] == len(questions)
        assert r["n_left_out"] == unreadable + beyond
        assert r["left_out_by_reason"] == {
            "unreadable image": unreadable,
            f"beyond describe.limit={LIMIT}": beyond,
        }
    table = pq.read_table(sharded / "results/demo/val/descriptions/tiny_llava/recod.parquet")
    assert sorted(set(table.column("image_id").to_pylist())) == described


@pytest.mark.slow
def test_two_shards_give_the_same_table_as_one(sharded, tmp_path):
    single = pipeline(tmp_path / "one_shard", shards=1)
    for method in ("base", "recod"):
        rel = f"results/demo/val/descriptions/tiny_llava/{method}.parquet"
        assert pq.read_table(sharded / rel).equals(pq.read_table(single / rel))
    ledger = json.loads(
        (sharded / "results/demo/val/descriptions/tiny_llava/recod.ledger.json").read_text()
    )
    assert ledger["shards"] == 2 and ledger["targets"] == LIMIT
    for name in ("acc.json",):
        a = json.loads((sharded / "results/demo" / name).read_text())
        b = json.loads((single / "results/demo" / name).read_text())
        assert a == b  # same accuracy, same config hash: the shard count is no result setting
    shutil.rmtree(single)
