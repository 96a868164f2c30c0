"""The fleet file (``fleet.yaml``): which models the head keeps running, at how many replicas.

The file is written by hand and read by a head that then submits real Slurm jobs, so a
mistake must be caught before the first ``sbatch`` and reported where it is. It is therefore
read as a YAML node tree (``yaml.compose``) rather than as plain Python values: every node
keeps its line, and every message has the ``<path>:<line>: <message>`` form that editors and
terminals link to. Types are judged by the tags PyYAML's resolver gives each scalar, so a YAML
``yes`` is a boolean and not the integer someone hoped for, and ``4.0`` is not a replica count.

Everything here is pure except :func:`load` (reading the file) and the check that each
``sbatch`` script exists, which is part of validation because a missing script would
otherwise surface only when the first job is submitted, possibly hours later.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from opentela.platform.slurm import parse_duration

__all__ = ["FleetError", "FleetSpec", "ModelSpec", "load", "parse"]

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Only its scalar converters are used; they read the node and keep no state.
_SCALARS = SafeConstructor()


class FleetError(ValueError):
    """A problem in a fleet file; ``str()`` is ``<path>:<line>: <message>`` (line 1-based).

    A ValueError so that callers treating "bad configuration" generically still catch it;
    ``path``, ``line`` and ``message`` are kept apart for callers that show them differently.
    """

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        super().__init__(f"{path}:{line}: {message}")


@dataclass(frozen=True)
class ModelSpec:
    """One catalogued model: the job script that starts a replica and how many to keep.

    ``env`` is read-only and left out of the hash, so specs can still key dicts and sets.
    """

    id: str
    sbatch: Path
    env: Mapping[str, str] = field(hash=False)
    min_replicas: int = 0
    max_replicas: int = 1
    idle_after_s: float = 1800.0
    target_queue: int = 4
    handover_before_s: float = 600.0
    gpus: int = 1
    account: str = ""
    partition: str = ""
    reservation: str = ""
    qos: str = ""
    line: int = 0


@dataclass(frozen=True)
class FleetSpec:
    """The whole file: the models in file order and the limits over all of them."""

    path: Path
    models: tuple[ModelSpec, ...]
    max_jobs: int = 16
    max_gpu_hours_per_day: float | None = None
    interval_s: float = 5.0

    def model(self, model_id: str) -> ModelSpec | None:
        """The model with this id, or None: ids are unique, so there is at most one."""
        return next((m for m in self.models if m.id == model_id), None)


class _Problem(Exception):
    """A message and the line it is about; :func:`parse` adds the path (readers do not know it)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _Entry(NamedTuple):
    """One ``key: value`` of a mapping, with the key's line for messages about the key."""

    name: str
    line: int
    value: Node


_Reader = Callable[[str, Node], Any]


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _describe(node: Node) -> str:
    """What a node is, in the words a message uses ("an integer (4)", "a list")."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    names = {
        _STR: "a string",
        _INT: "an integer",
        _FLOAT: "a number",
        _BOOL: "a boolean",
        _NULL: "nothing",
    }
    name = names.get(node.tag, f"a value tagged {node.tag}")
    return f"{name} ({node.value})" if node.tag != _NULL and node.value != "" else name


def _wrong_type(name: str, node: Node, expected: str) -> _Problem:
    message = f"{name}: expected {expected}, got {_describe(node)}"
    if expected.startswith("a string") and isinstance(node, ScalarNode) and node.tag != _NULL:
        message += f'; quote it to make it a string: "{node.value}"'
    return _Problem(_line(node), message)


def _suggestion(word: str, options: Mapping[str, Any]) -> str:
    """The "did you mean" part: the closest valid key, or the list of them if none is close."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "valid keys: " + ", ".join(options)


def _entries(
    node: Node, what: str, keys: Mapping[str, Any], elsewhere: Mapping[str, str] | None = None
) -> list[_Entry]:
    """The ``key: value`` pairs of a mapping, each key known and given once.

    ``elsewhere`` names where keys that belong to another section go, so a key put at the
    wrong level is explained rather than only called unknown.
    """
    if not isinstance(node, MappingNode):
        raise _wrong_type(what, node, "a mapping")
    seen: dict[str, int] = {}
    out: list[_Entry] = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode):
            raise _Problem(
                _line(key_node), f"{what}: a key must be a name, got {_describe(key_node)}"
            )
        name, line = str(key_node.value), _line(key_node)
        if name in seen:
            raise _Problem(
                line, f"{what}: key {name!r} given twice (lines {seen[name]} and {line})"
            )
        if name not in keys:
            hint = (elsewhere or {}).get(name) or _suggestion(name, keys)
            raise _Problem(line, f"unknown key {name!r} in {what}; {hint}")
        seen[name] = line
        out.append(_Entry(name, line, value_node))
    return out


def _read_str(name: str, node: Node, *, required: bool = False) -> str:
    if not isinstance(node, ScalarNode) or node.tag != _STR:
        raise _wrong_type(name, node, "a string")
    text = str(node.value)
    if required and not text.strip():
        raise _Problem(_line(node), f"{name}: must not be empty")
    return text


def _read_int(name: str, node: Node, *, minimum: int) -> int:
    """An integer by YAML's own rules (``1_000``, ``0x10``); booleans and ``4.0`` are refused."""
    if not isinstance(node, ScalarNode) or node.tag != _INT:
        raise _wrong_type(name, node, "an integer")
    value = int(_SCALARS.construct_yaml_int(node))
    if value < minimum:
        raise _Problem(_line(node), f"{name}: must be at least {minimum}, got {value}")
    return value


def _read_number(name: str, node: Node) -> float:
    if not isinstance(node, ScalarNode) or node.tag not in (_INT, _FLOAT):
        raise _wrong_type(name, node, "a number")
    if node.tag == _INT:
        value = float(_SCALARS.construct_yaml_int(node))
    else:
        value = float(_SCALARS.construct_yaml_float(node))
    if not math.isfinite(value):
        raise _Problem(_line(node), f"{name}: must be a finite number, got {node.value}")
    return value


def _read_positive(name: str, node: Node) -> float | None:
    """A number above zero, or None for an explicit ``~``/empty value meaning "no cap"."""
    if isinstance(node, ScalarNode) and node.tag == _NULL:
        return None
    value = _read_number(name, node)
    if value <= 0:
        raise _Problem(_line(node), f"{name}: must be above 0, got {node.value}")
    return value


def _read_duration(name: str, node: Node, *, minimum_s: float) -> float:
    """Seconds, from a bare number or the units and clocks that ``--slurm.drain-before`` takes.

    Unquoted ``1:30`` reaches here as the integer 90 (YAML 1.1 base 60), which is also what
    parse_duration makes of it, so both spellings agree.
    """
    if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT):
        seconds = _read_number(name, node)
    elif isinstance(node, ScalarNode) and node.tag == _STR:
        try:
            seconds = parse_duration(str(node.value))
        except ValueError as exc:
            raise _Problem(_line(node), f"{name}: {exc}") from None
    else:
        raise _wrong_type(name, node, "a duration (30m, 1h, 90s, 300)")
    if not math.isfinite(seconds) or seconds < minimum_s:
        raise _Problem(_line(node), f"{name}: must be at least {minimum_s:g}s, got {node.value}")
    return seconds


class _AnyKey(dict[str, None]):
    """A key set that admits every name, for ``env`` whose keys are the user's own."""

    def __contains__(self, key: object) -> bool:
        return True


def _read_env(name: str, node: Node) -> Mapping[str, str]:
    """Variables for the job, kept as written: ``PORT: 8080`` and ``DEBUG: yes`` become the
    strings "8080" and "yes", which is what the script would see from a shell export anyway."""
    env: dict[str, str] = {}
    if isinstance(node, ScalarNode) and node.tag == _NULL:
        return types.MappingProxyType(env)
    for entry in _entries(node, name, _AnyKey()):
        if not _ENV_KEY.fullmatch(entry.name):
            raise _Problem(
                entry.line,
                f"{name}: {entry.name!r} is not a variable name (letters, digits and _, "
                "not starting with a digit)",
            )
        value = entry.value
        if not isinstance(value, ScalarNode) or value.tag == _NULL:
            raise _wrong_type(f"{name}.{entry.name}", value, 'a string (write "" for empty)')
        env[entry.name] = str(value.value)
    return types.MappingProxyType(env)


def _read_id(name: str, node: Node) -> str:
    text = _read_str(name, node, required=True)
    if text != text.strip():
        raise _Problem(_line(node), f"{name}: {text!r} has leading or trailing spaces")
    return text


# YAML key -> (ModelSpec field, reader). The durations drop the _s the fields carry.
_MODEL_KEYS: dict[str, tuple[str, _Reader]] = {
    "id": ("id", _read_id),
    "sbatch": ("sbatch", partial(_read_str, required=True)),
    "env": ("env", _read_env),
    "min_replicas": ("min_replicas", partial(_read_int, minimum=0)),
    "max_replicas": ("max_replicas", partial(_read_int, minimum=1)),
    "idle_after": ("idle_after_s", partial(_read_duration, minimum_s=1.0)),
    "target_queue": ("target_queue", partial(_read_int, minimum=1)),
    "handover_before": ("handover_before_s", partial(_read_duration, minimum_s=0.0)),
    "gpus": ("gpus", partial(_read_int, minimum=0)),
    "account": ("account", _read_str),
    "partition": ("partition", _read_str),
    "reservation": ("reservation", _read_str),
    "qos": ("qos", _read_str),
}
_LIMIT_KEYS: dict[str, tuple[str, _Reader]] = {
    "max_jobs": ("max_jobs", partial(_read_int, minimum=1)),
    "max_gpu_hours_per_day": ("max_gpu_hours_per_day", _read_positive),
}
_TOP_KEYS = ("models", "limits", "interval")
_MISPLACED = {
    **{k: f"{k!r} belongs under 'limits:'" for k in _LIMIT_KEYS},
    **{k: f"{k!r} belongs to a model, under 'models:'" for k in _MODEL_KEYS},
}
_MODEL_ELSEWHERE = {k: _MISPLACED[k] for k in _LIMIT_KEYS} | {
    "interval": "'interval' belongs at the top level"
}


def _resolve_sbatch(text: str, line: int, base_dir: Path) -> Path:
    """The script's absolute path: relative to the fleet file's directory first, so the file
    works from any directory, then to the current one, for paths written from the repo root."""
    given = Path(text).expanduser()
    candidates = [given] if given.is_absolute() else [base_dir / given, Path.cwd() / given]
    for candidate in candidates:
        if candidate.is_file():
            resolved = candidate.resolve()
            if not os.access(resolved, os.R_OK):
                raise _Problem(line, f"sbatch: {resolved} is not readable")
            return resolved
        if candidate.exists():
            raise _Problem(line, f"sbatch: {candidate.absolute()} is not a file")
    tried = list(dict.fromkeys(str(c.absolute()) for c in candidates))
    raise _Problem(line, f"sbatch: no such file {text!r} (looked for {' and '.join(tried)})")


def _check_replicas(values: Mapping[str, Any], lines: Mapping[str, int], entry_line: int) -> None:
    """min_replicas <= max_replicas, naming both (and saying when one is the default)."""
    low, high = values.get("min_replicas", 0), values.get("max_replicas", 1)
    if low <= high:
        return

    def where(key: str) -> str:
        return f"line {lines[key]}" if key in lines else "the default"

    raise _Problem(
        lines.get("min_replicas", entry_line),
        f"min_replicas ({low}, {where('min_replicas')}) is above max_replicas "
        f"({high}, {where('max_replicas')})",
    )


def _model(node: Node, base_dir: Path) -> tuple[ModelSpec, int]:
    """One entry of ``models`` and the line of its id (for the duplicate check)."""
    values: dict[str, Any] = {"env": types.MappingProxyType({})}
    lines: dict[str, int] = {}
    for entry in _entries(node, "a model", _MODEL_KEYS, _MODEL_ELSEWHERE):
        attr, read = _MODEL_KEYS[entry.name]
        values[attr] = read(entry.name, entry.value)
        lines[entry.name] = _line(entry.value)
    entry_line = _line(node)
    if "id" not in values:
        raise _Problem(entry_line, "model without 'id' (the name clients ask for)")
    if "sbatch" not in values:
        raise _Problem(
            entry_line, f"model {values['id']!r} without 'sbatch' (the job script that starts it)"
        )
    values["sbatch"] = _resolve_sbatch(values["sbatch"], lines["sbatch"], base_dir)
    _check_replicas(values, lines, entry_line)
    return ModelSpec(**values, line=entry_line), lines["id"]


def _models(entry: _Entry, base_dir: Path) -> tuple[ModelSpec, ...]:
    node = entry.value
    if isinstance(node, ScalarNode) and node.tag == _NULL:
        raise _Problem(entry.line, "models: the list is empty; add at least one model")
    if not isinstance(node, SequenceNode):
        raise _wrong_type("models", node, "a list of models")
    if not node.value:
        raise _Problem(entry.line, "models: the list is empty; add at least one model")
    out: list[ModelSpec] = []
    id_lines: dict[str, int] = {}
    for item in node.value:
        spec, id_line = _model(item, base_dir)
        if spec.id in id_lines:
            raise _Problem(
                id_line,
                f"model id {spec.id!r} given twice (lines {id_lines[spec.id]} and {id_line})",
            )
        id_lines[spec.id] = id_line
        out.append(spec)
    return tuple(out)


def _limits(node: Node) -> tuple[dict[str, Any], dict[str, int]]:
    """The limits given and the line of each."""
    if isinstance(node, ScalarNode) and node.tag == _NULL:
        return {}, {}
    out: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for entry in _entries(node, "limits", _LIMIT_KEYS):
        attr, read = _LIMIT_KEYS[entry.name]
        out[attr] = read(entry.name, entry.value)
        lines[attr] = _line(entry.value)
    return out, lines


def _check_job_cap(models: tuple[ModelSpec, ...], max_jobs: int, line: int | None) -> None:
    """The models' min_replicas must fit under limits.max_jobs: otherwise the planner could
    never reach them, and would submit up to the cap and then say so every interval."""
    floor = sum(m.min_replicas for m in models)
    if floor <= max_jobs:
        return
    where = f"line {line}" if line is not None else "the default"
    parts = ", ".join(f"{m.id} {m.min_replicas}" for m in models if m.min_replicas)
    raise _Problem(
        line or 1,
        f"the models' min_replicas add up to {floor} ({parts}), above limits.max_jobs "
        f"({max_jobs}, {where}): raise max_jobs or lower a min_replicas",
    )


def _fleet(root: Node | None, path: Path, base_dir: Path) -> FleetSpec:
    if root is None:
        raise _Problem(1, "the file is empty; it needs a 'models:' list")
    if not isinstance(root, MappingNode):
        raise _Problem(1, f"expected a mapping with a 'models:' list, got {_describe(root)}")
    fields: dict[str, Any] = {}
    limit_lines: dict[str, int] = {}
    models: tuple[ModelSpec, ...] | None = None
    for entry in _entries(root, "the top level", dict.fromkeys(_TOP_KEYS), _MISPLACED):
        if entry.name == "models":
            models = _models(entry, base_dir)
        elif entry.name == "limits":
            limits, limit_lines = _limits(entry.value)
            fields.update(limits)
        else:
            fields["interval_s"] = _read_duration("interval", entry.value, minimum_s=1.0)
    if models is None:
        raise _Problem(1, "no 'models:' list; the fleet needs at least one model")
    spec = FleetSpec(path=path, models=models, **fields)
    _check_job_cap(models, spec.max_jobs, limit_lines.get("max_jobs"))
    return spec


def _yaml_problem(exc: yaml.YAMLError) -> _Problem:
    """PyYAML's error as one line, at the line where it noticed the problem."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else 1
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    text = ", ".join(p for p in parts if p) or str(exc)
    return _Problem(line, f"invalid YAML: {text}")


def parse(text: str, path: Path, base_dir: Path | None = None) -> FleetSpec:
    """The fleet described by ``text``, read from ``path`` (used in messages and kept).

    ``base_dir`` is where relative ``sbatch`` paths are looked for first; it defaults to the
    file's directory. Raises :class:`FleetError` for the first problem in the file.
    """
    path = Path(path)
    base = Path(base_dir) if base_dir is not None else path.parent
    try:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise _yaml_problem(exc) from None
        return _fleet(root, path, base)
    except _Problem as problem:
        raise FleetError(path, problem.line, problem.message) from None


def load(path: str | Path) -> FleetSpec:
    """Read and parse the fleet file at ``path``; an unreadable file is a FleetError too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FleetError(path, 1, f"not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise FleetError(path, 1, f"cannot read the file: {exc.strerror or exc}") from None
    return parse(text, path)
