"""Argument validation on real-world function schemas: the Berkeley Function Calling Leaderboard data.

The correct calls from BFCL's possible answers must validate against the function schemas
(as JSON schema, the way a framework passes them to the model), and systematic corruptions —
wrong type, missing required argument, unknown parameter, value outside an enum — must not.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import pytest

from agentgym_runtime.recording.validation import validate_arguments

_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": None}


def _json_schema(node: Any) -> Any:
    """BFCL writes Python type names ("dict", "float", ...); map them to JSON schema."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "type" and isinstance(value, str):
                mapped = _TYPES.get(value, value)
                if mapped is not None:
                    out[key] = mapped
            elif key in ("properties",):
                out[key] = {name: _json_schema(sub) for name, sub in value.items()}
            elif key in ("items", "additionalProperties"):
                out[key] = _json_schema(value)
            elif key in ("optional", "default", "format"):
                continue
            else:
                out[key] = value
        return out
    return node


def _load(name: str) -> list[dict[str, Any]]:
    data = resources.files("bfcl_eval") / "data" / name
    return [json.loads(line) for line in data.read_text().splitlines() if line.strip()]


def _cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    questions = {q["id"]: q for q in _load("BFCL_v4_simple_python.json")}
    cases = []
    for answer in _load("possible_answer/BFCL_v4_simple_python.json"):
        question = questions[answer["id"]]
        (function,) = question["function"]
        ((name, options),) = answer["ground_truth"][0].items()
        assert name == function["name"]
        schema = _json_schema(function["parameters"])
        schema["additionalProperties"] = False
        cases.append((answer["id"], schema, _choose_object(options, schema)))
    return cases


def _choose(possible: list[Any], schema: dict[str, Any]) -> tuple[bool, Any]:
    """BFCL lists every accepted value of a parameter ("" = may be omitted), nested values
    included. Take the first accepted value that fits the parameter's schema, resolving nested
    alternatives the same way; returns (present, value)."""
    candidates = [_resolve(value, schema) for value in possible if value != ""]
    for value in candidates:
        if not validate_arguments({"type": "object", "properties": {"v": schema}}, {"v": value}):
            return True, value
    if "" in possible or not candidates:
        return False, None
    return True, candidates[0]


def _resolve(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict) and schema.get("type") == "object" and "properties" in schema:
        return _choose_object(value, schema)
    if isinstance(value, list) and schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return [_resolve(item, schema["items"]) for item in value]
    return value


def _choose_object(options: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    for parameter, possible in options.items():
        alternatives = possible if isinstance(possible, list) else [possible]
        present, value = _choose(alternatives, schema.get("properties", {}).get(parameter, {}))
        if present:
            chosen[parameter] = value
    return chosen


CASES = _cases()


def test_bfcl_data_is_present() -> None:
    assert len(CASES) == 400


def test_correct_calls_validate() -> None:
    failures = [(case_id, validate_arguments(schema, args)) for case_id, schema, args in CASES]
    failures = [f for f in failures if f[1]]
    assert failures == []


def _corruptions(schema: dict[str, Any], arguments: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    props = schema.get("properties", {})
    required = [r for r in schema.get("required", []) if r in arguments]
    if required:
        missing = dict(arguments)
        missing.pop(required[0])
        out.append(("missing_required", missing))
    typed = next((p for p in arguments if props.get(p, {}).get("type") in ("integer", "number", "boolean")), None)
    if typed is not None:
        wrong = dict(arguments)
        wrong[typed] = {"not": "a scalar"}
        out.append(("wrong_type", wrong))
    unknown = copy.deepcopy(arguments)
    unknown["definitely_not_a_parameter"] = 1
    out.append(("unknown_parameter", unknown))
    enum_param = next((p for p in arguments if "enum" in props.get(p, {})), None)
    if enum_param is not None:
        bad_enum = dict(arguments)
        bad_enum[enum_param] = "value-not-in-enum"
        out.append(("wrong_enum", bad_enum))
    return out


@pytest.mark.parametrize("kind", ["missing_required", "wrong_type", "unknown_parameter", "wrong_enum"])
def test_corrupted_calls_are_rejected(kind: str) -> None:
    checked = 0
    for case_id, schema, arguments in CASES:
        for corruption, corrupted in _corruptions(schema, arguments):
            if corruption != kind:
                continue
            problems = validate_arguments(schema, corrupted)
            assert problems, f"{case_id}: {kind} corruption was accepted: {corrupted}"
            checked += 1
    minimum = {"missing_required": 300, "wrong_type": 100, "unknown_parameter": 400, "wrong_enum": 3}[kind]
    assert checked >= minimum


def test_problem_names_the_argument() -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    assert [p["argument"] for p in validate_arguments(schema, {})] == ["city"]
    assert [p["argument"] for p in validate_arguments(schema, {"city": "x", "unit": "k"})] == ["unit"]
    assert [p["argument"] for p in validate_arguments(schema, {"city": "x", "zone": 1})] == ["zone"]
    assert validate_arguments(schema, [1])[0]["message"] == "expected an object, got list"
