"""Labelled tool calls built from the Berkeley Function Calling Leaderboard data (``bfcl-eval``).

Each case is one real function definition with its ground-truth call, plus labelled corruptions:
missing required argument, wrong type, unknown parameter, enum violation, unknown tool and
malformed JSON. BFCL writes its schemas in its own dialect (``dict``, ``float``, ``tuple``,
``any``); :func:`json_schema` turns them into the JSON schema a model would be shown (strict:
no extra properties, as OpenAI's strict function calling does).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from typing import Any

_TYPES = {"dict": "object", "float": "number", "tuple": "array", "list": "array"}

#: Corruption kind -> the outcome the store must record for it.
LABELS = {
    "valid": "ok",
    "missing_required": "invalid_arguments",
    "wrong_type": "invalid_arguments",
    "unknown_parameter": "invalid_arguments",
    "enum_violation": "invalid_arguments",
    "unknown_tool": "unknown_tool",
    "malformed_json": "invalid_arguments",
}


def json_schema(node: Any) -> Any:
    """BFCL's parameter dialect as JSON schema (recursively)."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: json_schema(value) for key, value in node.items() if key not in ("optional", "default")}
    kind = node.get("type")
    if kind == "any":
        del result["type"]
    elif isinstance(kind, str):
        result["type"] = _TYPES.get(kind, kind)
    if result.get("type") == "object" and "properties" in result:
        result["additionalProperties"] = False
    return result


@dataclass(frozen=True)
class Case:
    """One function and its labelled calls (kind -> arguments, ``None`` for the malformed one)."""

    name: str
    schema: dict[str, Any]
    calls: dict[str, Any]


def _wrong(value: Any, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return "not a number"
    if kind == "boolean":
        return "yes"
    if kind == "string":
        return 12345
    if kind == "array":
        return "not a list"
    if kind == "object":
        return 7
    return None


def load_cases(count: int, seed: int = 12) -> list[Case]:
    """``count`` cases sampled (deterministically) from BFCL's ``simple_python`` category, enum ones first."""
    data = resources.files("bfcl_eval") / "data"
    questions = [json.loads(line) for line in (data / "BFCL_v4_simple_python.json").read_text().splitlines()]
    answers = {
        row["id"]: row["ground_truth"]
        for row in map(json.loads, (data / "possible_answer" / "BFCL_v4_simple_python.json").read_text().splitlines())
    }
    random.Random(seed).shuffle(questions)
    cases: list[Case] = []
    for question in questions:
        (function,) = question["function"]
        (truth,) = answers[question["id"]]
        ((_, expected),) = truth.items()
        schema = json_schema(function["parameters"])
        properties = schema.get("properties", {})
        valid = {}
        for key, options in expected.items():
            chosen = next((o for o in options if o != ""), None)
            if chosen is not None:
                valid[key] = chosen
        required = [r for r in schema.get("required", []) if r in valid]
        typed = [k for k in valid if _wrong(valid[k], properties.get(k, {})) is not None]
        enums = [k for k, p in properties.items() if isinstance(p.get("enum"), list)]
        if not required or not typed:
            continue
        name = function["name"].replace(".", "_")
        calls: dict[str, Any] = {
            "valid": valid,
            "missing_required": {k: v for k, v in valid.items() if k != required[0]},
            "wrong_type": {**valid, typed[0]: _wrong(valid[typed[0]], properties[typed[0]])},
            "unknown_parameter": {**valid, "zz_not_a_parameter": 1},
            "unknown_tool": valid,
            "malformed_json": None,
        }
        if enums:
            calls["enum_violation"] = {**valid, enums[0]: "__not_in_the_enum__"}
        cases.append(Case(name, schema, calls))
    # Every case with an enum (few in BFCL) plus the first ``count`` of the others.
    with_enum = [c for c in cases if "enum_violation" in c.calls]
    return with_enum + [c for c in cases if "enum_violation" not in c.calls][: max(count - len(with_enum), 0)]
