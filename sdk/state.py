"""Typed pipeline state whose changes every step records as a JSON Patch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class State(BaseModel):
    """Base class for pipeline state (a pydantic model).

    When a step receives a ``State`` (positionally or by keyword), spanflow snapshots it before
    and after the call and records the difference as an RFC 6902 JSON Patch in
    ``spanflow.state.diff``; a workflow records its initial state in ``spanflow.state.initial``.
    Mutate it in place (``state.docs.append(doc)``) or return a new instance of the same class:
    both are recorded. Assignments are validated, so a step cannot put a wrong type in it.
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")


_MODEL_SLOTS = ("__dict__", "__pydantic_extra__", "__pydantic_fields_set__", "__pydantic_private__")


def adopt(target: State, source: State) -> None:
    """Give ``target`` the values of ``source`` (a model of the same class, already validated),
    so that every reference to ``target`` sees them; no field is validated again on the way."""
    for slot in _MODEL_SLOTS:
        object.__setattr__(target, slot, getattr(source, slot))
