"""Check tool-call arguments against a tool's JSON schema, as the framework sees it.

Used to classify calls the model requested but the framework never ran
(``invalid_arguments`` versus ``not_executed``), and by adapters whose
framework does not validate. Validators are compiled once per distinct schema.

Example:
    >>> schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    >>> validate_arguments(schema, {"n": 3})
    []
    >>> validate_arguments(schema, {})[0]["argument"]
    'n'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError


@lru_cache(maxsize=1024)
def _validator(schema_text: str) -> Draft202012Validator:
    schema = json.loads(schema_text)
    return Draft202012Validator(schema)


def _argument_of(error: ValidationError) -> str:
    if error.validator == "required" and isinstance(error.instance, Mapping):
        for name in error.validator_value or ():  # type: ignore[union-attr]
            if name not in error.instance:
                return str(name)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = set((error.schema.get("properties") or {}).keys()) if isinstance(error.schema, Mapping) else set()
        extra = [k for k in error.instance if k not in allowed]
        if extra:
            return ",".join(sorted(map(str, extra)))
    path = [str(p) for p in error.absolute_path]
    return ".".join(path) if path else "(arguments)"


def validate_arguments(schema: Mapping[str, Any] | None, arguments: Any) -> list[dict[str, Any]]:
    """Return one entry per problem (``argument``, ``message``, ``type``); empty when valid.

    A missing or empty schema accepts any object.
    """
    if not isinstance(arguments, Mapping):
        return [
            {
                "argument": "(arguments)",
                "message": f"expected an object, got {type(arguments).__name__}",
                "type": "type",
            }
        ]
    if not schema:
        return []
    validator = _validator(json.dumps(schema, sort_keys=True, default=str))
    problems = []
    for error in sorted(validator.iter_errors(dict(arguments)), key=lambda e: list(map(str, e.absolute_path))):
        problems.append({"argument": _argument_of(error), "message": error.message, "type": str(error.validator)})
    return problems
