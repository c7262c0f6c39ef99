"""Validation errors as one line: every problem, each naming its dotted key and what is allowed."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from study.errors import did_you_mean


def describe(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line for every problem of ``err``; an unknown field of ``model`` (or of a section
    nested in it) gets the closest known name and the allowed ones."""
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden" and (fields := _fields_at(model, e["loc"][:-1])):
            hint = did_you_mean(str(e["loc"][-1]), fields)
            parts.append(f"unknown field '{key}'{hint}; allowed: {', '.join(fields)}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = f" (got {got!r})" if not isinstance(got, dict) and key else ""
        parts.append(f"{key}: {msg}{shown}" if key else msg)
    return "; ".join(parts)


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """Field names of the model found by following ``loc`` from ``model`` through nested
    models, lists of them, or a union holding one model; empty when ``loc`` leads elsewhere."""
    kind: Any = model
    for part in loc:
        if isinstance(part, int):  # an item of a list
            kind = next(iter(get_args(kind)), None)
        else:
            model = _model_in(kind)
            field = model.model_fields.get(part) if model is not None else None
            kind = field.annotation if field is not None else None
    model = _model_in(kind)
    return list(model.model_fields) if model is not None else []


def _model_in(kind: Any) -> type[BaseModel] | None:
    """``kind`` if it is a model, the one model of a union, else ``None``."""
    models = [a for a in (kind, *get_args(kind)) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None
