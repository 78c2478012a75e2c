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
