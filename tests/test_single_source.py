"""One source of truth: the dataset schema agrees with the dataclasses it configures, the decoder
kinds are one list, and the artifact layout is the one the workflow and `export` share."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from facenet_evc import layout
from facenet_evc.config import load_schema
from facenet_evc.models.config import DECODER_KINDS, LLM_DECODERS, ORDERS, WORD_DECODERS, FaceNetConfig
from facenet_evc.training.config import LR_SCHEDULES, SELECTIONS, TrainConfig

SCHEMA = load_schema("dataset")["properties"]
# FaceNetConfig fields the dataset config does not set: widths read from the artifacts, and N and K,
# which come from the features and retrieval sections.
FROM_ARTIFACTS = {"d_v", "d_t", "d_e", "n_frames", "k"}


def defaults(cls: type) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


@pytest.mark.parametrize("section, cls, unset", [("model", FaceNetConfig, FROM_ARTIFACTS), ("train", TrainConfig, set())])
def test_schema_defaults_are_the_dataclass_defaults(section, cls, unset):
    props = SCHEMA[section]["properties"]
    fields = defaults(cls)
    assert set(props) == set(fields) - unset, "schema keys and dataclass fields differ"
    differ = {k: (props[k].get("default"), fields[k]) for k in props if props[k].get("default") != fields[k]}
    assert not differ, f"{section}: schema default != {cls.__name__} default: {differ}"


def test_one_list_of_decoder_kinds():
    from facenet_evc.models.decoders import KINDS

    assert DECODER_KINDS == WORD_DECODERS + LLM_DECODERS and KINDS is DECODER_KINDS
    model = SCHEMA["model"]["properties"]
    assert tuple(model["decoder"]["enum"]) == DECODER_KINDS
    assert tuple(model["order"]["enum"]) == ORDERS
    assert tuple(SCHEMA["train"]["properties"]["lr_schedule"]["enum"]) == LR_SCHEDULES
    assert tuple(SCHEMA["train"]["properties"]["select"]["enum"]) == SELECTIONS


def test_layout_fills_fields_and_keeps_wildcards():
    assert layout.artifact_path("results", "{ds}", layout.TOPK) == "results/{ds}/retrieval/topk_k{k}.h5"
    assert layout.artifact_path("r", "demo", layout.TOPK, k=4) == "r/demo/retrieval/topk_k4.h5"
    assert layout.artifact_path("r", "demo", layout.CHECKPOINT, run="") == "r/demo/train/best"
    assert layout.model_inputs("r", "demo", 2)["topk"] == "r/demo/retrieval/topk_k2.h5"


def test_export_finds_the_workflow_artifacts(tmp_path):
    """`export --config` reads the artifacts where the rules write them (facenet_evc.layout)."""
    from facenet_evc.inference.export import standard_sources

    cfg = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
    sources, _ = standard_sources(cfg, results_root=str(tmp_path))
    root = str(tmp_path)
    inputs = layout.model_inputs(root, "demo", 4)
    assert str(sources.features) == inputs["features"] and str(sources.topk) == inputs["topk"]
    assert str(sources.triplets) == inputs["triplets"] and str(sources.lexicon) == inputs["lexicon_h5"]
    assert str(sources.repository) == layout.artifact_path(root, "demo", layout.REPOSITORY)
    train = yaml.safe_load(cfg.read_text())["train"]
    assert train["select"] == "last"  # the demo predicts with its last step (config/demo.yaml)
    assert str(sources.checkpoint) == layout.artifact_path(root, "demo", layout.final_checkpoint(train), run="")
    assert str(sources.checkpoint).endswith("demo/train/last")
