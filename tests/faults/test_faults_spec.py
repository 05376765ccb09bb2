"""Fault spec parsing and validation: every problem is a one-line SpecError naming the value."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from faults_testutil import make_batch

from mmguard.errors import SpecError
from mmguard.faults import FaultSpec, apply_faults, load_spec, parse_spec, spec_from_dict

DOCS = Path(__file__).resolve().parents[2] / "docs" / "faults.md"


def _spec(**entry):
    base = {"modality": "vec", "type": "gaussian_noise", "params": {}, "rate": 0.5}
    base.update(entry)
    return {"scenario": {"name": "t"}, "faults": [base]}


def _one_line_error(fn, *needles):
    with pytest.raises(SpecError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@pytest.mark.parametrize("entry, needles", [
    ({"type": "gausian_noise"}, ["'gausian_noise'", "unknown fault type"]),
    ({"params": {"sigma": -1.0}}, ["sigma", "-1.0"]),
    ({"params": {"sigma": "loud"}}, ["sigma", "'loud'"]),
    ({"params": {"sigmaa": 1.0}}, ["unknown param", "'sigmaa'"]),
    ({"params": {"sigma": 0.5, "snr_db": 10}}, ["sigma", "snr_db", "exactly one"]),
    ({"params": {"sigma": float("nan")}}, ["sigma", "nan"]),
    ({"rate": 1.5}, ["rate", "1.5"]),
    ({"rate": -0.1}, ["rate", "-0.1"]),
    ({"rate": "half"}, ["rate", "'half'"]),
    ({"modality": ""}, ["modality", "''"]),
    ({"params": [1, 2]}, ["params", "[1, 2]"]),
    ({"type": "missing", "params": {"fill": "banana"}}, ["fill", "banana"]),
    ({"type": "saturation", "params": {"lo": 2, "hi": 1}}, ["lo", "hi"]),
    ({"type": "occlusion", "params": {"size": 0}}, ["size", "0"]),
])
def test_bad_entries(entry, needles):
    _one_line_error(lambda: spec_from_dict(_spec(**entry)), *needles)


def test_bad_documents():
    _one_line_error(lambda: spec_from_dict(["faults"]), "mapping")
    _one_line_error(lambda: spec_from_dict({"faults": {"modality": "a"}}), "'faults' must be a list")
    _one_line_error(lambda: spec_from_dict({"faults": [3]}), "faults[0]", "3")
    _one_line_error(lambda: spec_from_dict({"faults": [], "extra": 1}), "unknown key", "extra")
    _one_line_error(lambda: spec_from_dict({"faults": [{"type": "offset"}]}), "missing", "modality")
    _one_line_error(lambda: spec_from_dict({"scenario": {"selection": "random"}, "faults": []}),
                    "selection", "'random'")


def test_exclusive_rates_must_fit_and_groups_share_a_rate():
    doc = {"scenario": {"selection": "exclusive"},
           "faults": [{"modality": "a", "type": "offset", "rate": 0.6},
                      {"modality": "b", "type": "offset", "rate": 0.5}]}
    _one_line_error(lambda: spec_from_dict(doc), "exclusive", "1.1")
    doc["faults"][1]["rate"] = 0.4
    assert spec_from_dict(doc).scenario.selection == "exclusive"
    # a group counts once
    grouped = {"scenario": {"selection": "exclusive"},
               "faults": [{"modality": "a", "type": "offset", "rate": 0.6, "group": "g"},
                          {"modality": "b", "type": "offset", "rate": 0.6, "group": "g"}]}
    assert len(spec_from_dict(grouped).faults) == 2
    grouped["faults"][1]["rate"] = 0.3
    _one_line_error(lambda: spec_from_dict(grouped), "group 'g'", "0.3")


def test_unknown_modality_and_unsupported_kind_at_apply_time():
    batch = make_batch(10)
    _one_line_error(lambda: apply_faults(batch, _spec(modality="lidar")), "'lidar'", "faults[0]")
    _one_line_error(lambda: apply_faults(batch, _spec(type="blur")), "'blur'", "vector", "'vec'")
    _one_line_error(lambda: apply_faults(batch, _spec(modality="img", type="drift")), "'drift'", "image")


def test_malformed_files(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("faults:\n  - modality: a\n   type: [offset\n")
    _one_line_error(lambda: load_spec(bad_yaml), "malformed YAML", "bad.yaml", "line")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"faults": [}')
    _one_line_error(lambda: load_spec(bad_json), "malformed JSON", "bad.json", "line 1")
    _one_line_error(lambda: load_spec(tmp_path / "nope.yaml"), "not found", "nope.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    _one_line_error(lambda: load_spec(scalar), "mapping", "'just text'")
    _one_line_error(lambda: load_spec(42), "42")


def test_roundtrip_yaml_json_and_aliases(tmp_path):
    spec = spec_from_dict({"faults": [{"modality": "vec", "type": "bias", "params": {"value": 2}}]})
    assert spec.faults[0].type == "offset"  # alias resolved
    assert spec.faults[0].params == {"value": 2.0}
    assert spec.faults[0].rate == 1.0
    for name in ("s.yaml", "s.json", "s.yml"):
        path = spec.save(tmp_path / name)
        assert load_spec(path) == spec
    assert parse_spec(spec.to_json(), "json") == spec
    assert load_spec(spec.to_dict()) == spec
    assert isinstance(load_spec(str(tmp_path / "s.yaml")), FaultSpec)


def _doc_blocks(lang: str) -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_docs_examples_are_valid_specs():
    blocks = [b for b in _doc_blocks("json") if '"faults"' in b]
    blocks += [b for b in _doc_blocks("yaml") if "faults:" in b]
    assert len(blocks) >= 3
    for block in blocks:
        spec = parse_spec(block)
        assert spec.faults
    # the JSON thesis example is exactly the builder's schedule
    from mmguard.faults import thesis_schedule

    thesis = [parse_spec(b) for b in blocks if "emma_thesis_6_3_1" in b]
    assert thesis and all(s.faults == thesis_schedule("ip", "dm").faults for s in thesis)
    assert json.loads(_doc_blocks("json")[0])  # plain JSON, no comments


def test_docs_describe_every_fault_and_param():
    from mmguard.faults import fault_catalog

    text = DOCS.read_text(encoding="utf-8")
    for f in fault_catalog():
        section = text.split(f"#### `{f['name']}`", 1)
        assert len(section) == 2, f["name"]
        body = section[1].split("####", 1)[0]
        assert f"Severity: `{f['severity']}`" in body if f["severity"] else "Severity: none" in body
        for p in f["params"]:
            assert f"`{p['name']}`" in body, (f["name"], p["name"])
