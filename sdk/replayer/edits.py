"""Forks of a recorded run: replace workflow arguments or recorded step outputs before a replay.

``--set input.<param>[.<key>...]=<JSON>`` and ``--set <step path>.output=<JSON>`` on the command
line, ``inputs=`` and ``outputs=`` in :func:`spanflow.replay`. An edit that names nothing (an
unknown parameter, a missing field, a step path the run does not have) is refused with a
:class:`~spanflow.errors.ReplayError` before anything runs. An edited output is reused as if it
had been recorded (the step succeeded with it), so its callers see it; it still has to fit the
step's return annotation, and the step's inputs still have to match.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Mapping
from typing import Any

from .. import attributes as attr
from ..errors import ReplayError
from .plan import ReplayPlan

__all__ = ["edit_inputs", "edit_outputs", "parse_set"]

INPUT_PREFIX = "input."
OUTPUT_SUFFIX = ".output"


def parse_set(texts: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set TARGET=JSON`` options as ``(inputs, outputs)`` for :func:`edit_inputs` and
    :func:`edit_outputs`.

    Raises:
        ReplayError: no ``=``, bad JSON, or a target that is neither an input nor an output.
    """
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for text in texts:
        target, sep, raw = text.partition("=")
        target = target.strip()
        if not sep or not target:
            raise ReplayError(f"--set {text!r}: expected TARGET=JSON, e.g. input.ticket='\"hi\"'")
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise ReplayError(
                f"--set {target}: {raw!r} is not JSON ({exc}); quote strings, e.g. '\"billing\"'"
            ) from None
        if target.startswith(INPUT_PREFIX) and len(target) > len(INPUT_PREFIX):
            inputs[target[len(INPUT_PREFIX) :]] = value
        elif target.endswith(OUTPUT_SUFFIX) and len(target) > len(OUTPUT_SUFFIX):
            outputs[target[: -len(OUTPUT_SUFFIX)]] = value
        else:
            raise ReplayError(
                f"--set {target}: expected input.<param>[.<key>...] or <step path>.output "
                "(a path as the replay summary prints it, e.g. wf/classify[0].output)"
            )
    return inputs, outputs


def edit_inputs(
    fn: Any, input_json: str | None, lossy: frozenset[str], inputs: Mapping[str, Any]
) -> tuple[str, frozenset[str], list[dict[str, Any]]]:
    """The recorded arguments with ``inputs`` applied; returns the new ``input.value``, what is
    still lossy, and the edits made. A parameter replaced whole no longer counts as lossy."""
    recorded = json.loads(input_json) if input_json is not None else {}
    if not isinstance(recorded, dict):
        raise ReplayError("the run's recorded inputs are not an object of parameters")
    params = inspect.signature(inspect.unwrap(fn)).parameters
    edits: list[dict[str, Any]] = []
    replaced_whole: set[str] = set()
    for target, value in inputs.items():
        name, *keys = target.split(".")
        if name not in params and name not in recorded:
            raise ReplayError(
                f"--set input.{target}: the workflow has no parameter {name!r} "
                f"(its parameters are {', '.join(params) or 'none'})"
            )
        if not keys:
            recorded[name] = value
            replaced_whole.add(name)
        else:
            _set_field(recorded, name, keys, value, f"input.{target}")
        edits.append({"target": f"input.{target}", "value": value})
    still_lossy = lossy
    if attr.INPUT_VALUE in lossy and replaced_whole >= set(recorded):
        still_lossy = lossy - {attr.INPUT_VALUE}
    return json.dumps(recorded, ensure_ascii=False), still_lossy, edits


def _set_field(
    recorded: dict[str, Any], name: str, keys: list[str], value: Any, where: str
) -> None:
    if name not in recorded:
        raise ReplayError(
            f"--set {where}: the run recorded no argument {name!r} to edit a field of"
        )
    node: Any = recorded[name]
    walked = name
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, dict):
            if last:
                node[key] = value
            elif key not in node:
                raise ReplayError(f"--set {where}: {walked} has no field {key!r}")
            else:
                node = node[key]
        elif (
            isinstance(node, list)
            and key.lstrip("-").isdigit()
            and -len(node) <= int(key) < len(node)
        ):
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        else:
            raise ReplayError(
                f"--set {where}: {walked} is {type(node).__name__}, which has no field {key!r}"
            )
        walked = f"{walked}.{key}"


def edit_outputs(
    plan: ReplayPlan, outputs: Mapping[str, Any]
) -> tuple[ReplayPlan, list[dict[str, Any]]]:
    """A plan whose recorded calls at the given paths return the given outputs."""
    calls = dict(plan.calls)
    live = set(plan.live)
    edits: list[dict[str, Any]] = []
    for path, value in outputs.items():
        call = calls.get(path)
        if call is None or path == plan.root_path:
            steps = [p for p in calls if p != plan.root_path]
            near = [p for p in steps if p.rsplit("/", 1)[-1].split("[")[0] in path] or steps
            raise ReplayError(
                f"--set {path}.output: run {plan.original_run_id} has no step call {path!r} "
                f"(its step paths include {', '.join(near[:5]) or 'none'})"
            )
        calls[path] = dataclasses.replace(
            call,
            ok=True,
            output_json=json.dumps(value, ensure_ascii=False),
            lossy=call.lossy - {attr.OUTPUT_VALUE},
        )
        live.discard(path)  # an edited output is meant to be used, --from notwithstanding
        edits.append({"target": f"{path}.output", "value": value})
    return (
        dataclasses.replace(plan, calls=calls, live=frozenset(live), root_attributes={}),
        edits,
    )
