"""Training lineage without training: the tool offer of the sources, their content manifests, and which log
entries a resumed W&B run already holds. (The artifacts and files of a real run: tests/test_train_run.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("datasets")

from toolturn.core.lineage import dataset_manifest, hf_dataset_manifest  # noqa: E402
from toolturn.train.lineage import (  # noqa: E402
    already_logged,
    generation_run,
    source_manifest,
    tools_per_dialogue,
    training_lineage,
)


def run_dir(root: Path, config: dict) -> Path:
    """A generation run dir as far as lineage reads it: config.yaml, one shard, dataset/."""
    import datasets

    (root / "shards").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "shards" / "part-0000-00000.jsonl").write_text(
        f'{{"id": "{root.name}", "messages": [], "tools": [], "meta": {{"digest": "d-{root.name}"}}}}\n')
    datasets.Dataset.from_list([{"id": root.name, "messages": "[]"}]).save_to_disk(str(root / "dataset"))
    return root


@pytest.fixture
def sources(tmp_path) -> dict[str, Path]:
    import datasets

    hf = tmp_path / "hf"
    datasets.Dataset.from_list([{"id": "x", "messages": "[]"}]).save_to_disk(str(hf))
    return {"four": run_dir(tmp_path / "four", {"tools_per_dialogue": 4, "seed": 0}),
            "four_again": run_dir(tmp_path / "four_again", {"tools_per_dialogue": 4, "seed": 1}),
            "twelve": run_dir(tmp_path / "twelve", {"tools_per_dialogue": 12}),
            "unknown": run_dir(tmp_path / "unknown", {"seed": 0}),
            "hf": hf}


@pytest.mark.parametrize("names, expected", [
    (["four"], 4), (["four", "four_again"], 4), (["four", "twelve"], None), (["four", "hf"], None),
    (["hf"], None), (["unknown"], None),
])
def test_tools_per_dialogue_is_the_sources_common_value(sources, names, expected):
    assert tools_per_dialogue([str(sources[n]) for n in names]) == expected


def test_a_runs_dataset_dir_is_that_run(sources):
    assert generation_run(sources["four"] / "dataset").root == sources["four"].resolve()
    assert generation_run(sources["hf"]) is None
    assert tools_per_dialogue([str(sources["four"] / "dataset")]) == 4


def test_source_manifests_are_the_producers(sources):
    assert source_manifest(sources["four"]) == dataset_manifest(sources["four"])
    assert source_manifest(sources["four"] / "dataset") == dataset_manifest(sources["four"])
    assert source_manifest(sources["hf"]) == hf_dataset_manifest(sources["hf"])
    assert source_manifest(sources["four"]) != source_manifest(sources["four_again"])


def test_training_lineage(sources, tmp_path):
    paths = [str(sources["four"]), str(sources["hf"])]
    manifests = [source_manifest(p) for p in paths]
    lineage = training_lineage(paths, manifests, "tiny_qwen3", "lora", tmp_path / "out")
    assert lineage == {"tools_per_dialogue": None, "base_model": "tiny_qwen3", "method": "lora",
                       "datasets": [{"path": str(sources["four"].resolve()), **manifests[0]},
                                    {"path": str(sources["hf"].resolve()), **manifests[1]}],
                       "train_out_dir": str((tmp_path / "out").resolve())}


HELD = {"train/global_step": 5, "train/loss": 1.5, "train/epoch": 0.5, "eval/loss": 2.0}


@pytest.mark.parametrize("entry, held, expected", [
    ({"train/global_step": 1, "train/loss": 3.0}, {}, False),  # a new run holds nothing
    ({"train/global_step": 4, "train/loss": 1.7}, HELD, True),  # before the last step W&B has
    ({"train/global_step": 6, "train/loss": 1.4}, HELD, False),  # after it
    ({"train/global_step": 5, "train/loss": 1.5, "train/epoch": 0.5}, HELD, True),  # the last step's latest values
    ({"train/global_step": 5, "eval/loss": 1.9, "train/epoch": 0.5}, HELD, False),  # the last step's eval got lost
])
def test_a_resumed_run_logs_what_wandb_lacks(entry, held, expected):
    assert already_logged(entry, held) is expected
