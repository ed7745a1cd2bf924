"""Load flow definitions from TOML files.

File format
===========

One flow per file (``*.toml``, UTF-8)::

    slug = "product-shot"       # required, ^[a-z0-9][a-z0-9-]{0,63}$, unique across files
    title = "Product shot"      # required, shown in the UI
    description = "..."         # optional

    [[inputs]]                  # zero or more run inputs, filled in when a run starts
    name = "product"            # required, ^[a-z][a-z0-9_]{0,63}$, unique within the flow
    label = "Product"           # optional, defaults to the name ("product" -> "Product")
    default = "a ceramic mug"   # optional string, at most 2000 characters
    required = true             # optional, default true
    multiline = false           # optional UI hint, default false

    [[steps]]                   # one or more steps, run in file order
    id = "object"               # required, ^[a-z0-9][a-z0-9_-]{0,63}$, unique within the flow
    title = "Object"            # optional, defaults to the id ("hero-shot" -> "Hero shot")
    kind = "generate"           # "generate" | "edit"; default "edit" if inputs is
                                # non-empty, else "generate"
    prompt = "Studio photo of {product}"   # required, a prompt template (see below)
    provider = "local"          # optional, default "local"
    model = "local-sketch"      # optional for providers with a default model
                                # (local: "local-sketch"), required otherwise
    temperature = 0.7           # optional, 0..2, default 1.0
    size = "1024x1024"          # optional "WIDTHxHEIGHT", each 64..4096, default 1024x1024
    seed = 42                   # optional integer >= 0
    inputs = []                 # optional ids of EARLIER steps this step depends on
    options = {}                # optional table passed through to the provider as is
                                # (plain JSON-like values only: no dates, inf or nan)

Step inputs
-----------
``inputs`` may only name steps that come earlier in the file, so every flow is an
acyclic graph by construction. For an ``edit`` step (which needs at least one input)
the adopted images of those steps are handed to the provider, in the listed order.
A ``generate`` step may also list inputs: they are then dependencies only — no image is
sent, but their prompts may be quoted and adopting a different result for them marks
the step as stale.

Prompt templates
----------------
* ``{name}`` — the value of run input ``name`` (must be declared under ``[[inputs]]``;
  an optional input left empty renders as an empty string).
* ``{steps.<step_id>.prompt}`` — the prompt of the adopted generation of step
  ``<step_id>``, which must be listed in this step's ``inputs``. (Restricting it to
  inputs keeps the dependency graph complete: whatever a prompt quotes is something
  the step depends on.)
* ``{{`` and ``}}`` — literal braces.

Anything else in braces, or an unbalanced brace, is an error. Leading and trailing
whitespace of prompts, titles and labels is removed.

Errors
------
Every problem — TOML syntax, unknown keys (typo protection), wrong types, invalid
values, bad references — raises :class:`FlowDefinitionError`, whose message names the
file and the best matching line, e.g.
``flows/my-flow.toml:12: step "scene": inputs references unknown step "objekt"``.
The rules themselves are those of the models in :mod:`.definitions`: this module parses
the TOML, validates it with them and points their first error at its line.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .definitions import FlowDefinition, FlowError, FlowInput, FlowStep, describe_type

__all__ = [
    "FlowDefinitionError",
    "load_flow_file",
    "parse_flow",
    "top_level_key_line",
]

_Loc = tuple[str | int, ...]


class _Entries(NamedTuple):
    """An array of tables of a flow file."""

    noun: str  # what messages call one entry
    ident_key: str  # the key that names an entry
    keys: tuple[str, ...]  # the keys an entry may set, for "did you mean" hints


_ENTRIES = {
    "inputs": _Entries("input", "name", tuple(FlowInput.model_fields)),
    # a flow file may give a step's width and height as size = "WxH"
    "steps": _Entries("step", "id", (*FlowStep.model_fields, "size")),
}
_TOP_LEVEL_KEYS = tuple(key for key in FlowDefinition.model_fields if key != "source")
# Errors whose message already says which input or step it is about.
_NAMES_ITS_ENTRY = frozenset({"inconsistent_flow", "invalid_input_name", "invalid_step_id"})


class FlowDefinitionError(FlowError):
    """A flow file that cannot be loaded: ``str()`` reads ``path:line: reason``."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, reason: str) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.reason}"
        return f"{self.path}:{self.line}: {self.reason}"


# --------------------------------------------------------------------------- public API


def load_flow_file(path: str | os.PathLike[str]) -> FlowDefinition:
    """Read and validate one flow file; ``source`` is set to the path as given."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FlowDefinitionError(path, None, f"cannot read file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FlowDefinitionError(path, line, "file is not valid UTF-8") from exc
    return parse_flow(text, source=str(path))


def parse_flow(text: str, *, source: str) -> FlowDefinition:
    """Parse and validate the text of a flow file. ``source`` names the file in error
    messages and becomes :attr:`FlowDefinition.source`."""
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, reason = _describe_toml_error(exc, text)
        raise FlowDefinitionError(source, line, f"invalid TOML: {reason}") from None
    if "source" in data:  # the loader records where a flow came from, not the file
        line = _SourceLines(text).line(("source",), data)
        raise FlowDefinitionError(source, line, 'unknown key "source"')
    try:
        return FlowDefinition.model_validate({**data, "source": source})
    except ValidationError as exc:
        line, reason = _describe_validation_error(exc, data, _SourceLines(text))
        raise FlowDefinitionError(source, line, reason) from None


def top_level_key_line(text: str, key: str) -> int | None:
    """The line on which top-level ``key`` (e.g. ``"slug"``) is set, if it can be found."""
    return _SourceLines(text).at.get((key,))


# --------------------------------------------------------------------------- TOML errors

_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END_RE = re.compile(r"\s*\(at end of document\)\s*$")


def _describe_toml_error(exc: tomllib.TOMLDecodeError, text: str) -> tuple[int | None, str]:
    message = str(exc.msg) if hasattr(exc, "msg") and isinstance(exc.msg, str) else str(exc)
    full = str(exc)
    line: int | None = getattr(exc, "lineno", None)
    column: int | None = getattr(exc, "colno", None)
    if m := _TOML_POS_RE.search(full):
        line, column = int(m.group(1)), int(m.group(2))
        message = full[: m.start()]
    elif m := _TOML_END_RE.search(full):
        line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
        message = full[: m.start()] + " (at end of file)"
        column = None
    if column is not None:
        message = f"{message} (column {column})"
    return line, message


# --------------------------------------------------------------------------- validation errors

_EXPECTED_TYPES = {
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "an integer",
    "float_type": "a number",
    "dict_type": "a table",
}


def _describe_validation_error(
    exc: ValidationError, data: dict[str, Any], lines: _SourceLines
) -> tuple[int | None, str]:
    """The line and reason of the error to report: the first one, unless a key is unknown."""
    errors = exc.errors(include_url=False)
    # A misspelt key is the likeliest cause of any other error, e.g. a missing one.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc: _Loc = (*error["loc"], *error.get("ctx", {}).get("loc", ()))
    if error["type"] == "model_type":  # an entry of [[inputs]] or [[steps]] is no table
        loc = loc[:1]
    reason = _reason(error, loc)
    if len(loc) >= 2 and loc[0] in _ENTRIES and error["type"] not in _NAMES_ITS_ENTRY:
        noun = _ENTRIES[str(loc[0])].noun
        ident = _entry_ident(data, loc)
        reason = f'{noun} "{ident}": {reason}' if ident else f"{noun} #{int(loc[1]) + 1}: {reason}"
    return lines.line(loc, data), reason


def _reason(error: ErrorDetails, loc: _Loc) -> str:
    """pydantic's own errors in a flow file's terms; the models' custom errors as they are."""
    key = next((str(part) for part in reversed(loc) if isinstance(part, str)), "")
    value, ctx = error["input"], error.get("ctx", {})
    match error["type"]:
        case "missing":
            return f'missing required key "{key}"'
        case "extra_forbidden":
            return f'unknown key "{key}"{_did_you_mean(key, loc)}'
        case "tuple_type" | "model_type":  # only the [[inputs]] and [[steps]] arrays
            return f'"{key}" must be an array of tables (write each entry as [[{key}]])'
        case "literal_error":
            expected = ctx["expected"].replace("'", '"')
            shown = f'"{value}"' if isinstance(value, str) else describe_type(value)
            return f'"{key}" must be {expected}, not {shown}'
        case "string_too_short":
            return f'"{key}" must not be empty'
        case "string_too_long":
            return f'"{key}" must be at most {ctx["max_length"]} characters'
        case "greater_than_equal":
            return f'"{key}" must be >= {ctx["ge"]}, got {value}'
        case "less_than_equal":
            return f'"{key}" must be <= {ctx["le"]}, got {value}'
        case kind if kind in _EXPECTED_TYPES:
            return f'"{key}" must be {_EXPECTED_TYPES[kind]}, not {describe_type(value)}'
    return error["msg"]


def _did_you_mean(key: str, loc: _Loc) -> str:
    known = _ENTRIES[str(loc[0])].keys if len(loc) > 1 else _TOP_LEVEL_KEYS
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _entry_ident(data: dict[str, Any], loc: _Loc) -> str | None:
    """The name or id of the [[inputs]] or [[steps]] entry at ``loc``, if it has one."""
    section, index = str(loc[0]), int(loc[1])
    entry = data[section][index]
    ident = entry.get(_ENTRIES[section].ident_key) if isinstance(entry, dict) else None
    return ident if isinstance(ident, str) and ident else None


# --------------------------------------------------------------------------- line lookup

_ARRAY_HEADER_RE = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]")
_TABLE_HEADER_RE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
_KEY_RE = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*[.=]""")


def _header_parts(raw: str) -> list[str]:
    return [p.strip().strip("\"'") for p in raw.split(".")]


def _string_state(line: str, state: str | None) -> str | None:
    """Track whether a multi-line string is still open after ``line``."""
    i, n = 0, len(line)
    while i < n:
        if state is not None:
            j = line.find(state, i)
            if j < 0:
                return state
            i, state = j + 3, None
            continue
        ch = line[i]
        if ch == "#":
            return None
        if line.startswith('"""', i) or line.startswith("'''", i):
            state = line[i : i + 3]
            i += 3
        elif ch == '"':
            i += 1
            while i < n and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
        elif ch == "'":
            j = line.find("'", i + 1)
            i = n if j < 0 else j + 1
        else:
            i += 1
    return state


class _SourceLines:
    """Where keys are set in the raw text (tomllib reports no positions): a best-effort
    index from locations such as ``("slug",)``, ``("steps", 2)`` (the entry's header)
    and ``("steps", 2, "prompt")`` to line numbers, used only to point error messages
    at the right line."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.at: dict[_Loc, int] = {}
        self.headers = dict.fromkeys(_ENTRIES, 0)
        table: _Loc | None = ()
        state: str | None = None
        for number, line in enumerate(self.lines, start=1):
            if state is None:
                if m := _ARRAY_HEADER_RE.match(line):
                    parts = _header_parts(m.group(1))
                    self.at.setdefault((parts[0],), number)
                    table = None
                    if len(parts) == 1 and parts[0] in self.headers:
                        table = (parts[0], self.headers[parts[0]])
                        self.headers[parts[0]] += 1
                        self.at[table] = number
                elif m := _TABLE_HEADER_RE.match(line):
                    parts = _header_parts(m.group(1))
                    self.at.setdefault((parts[0],), number)
                    table = None
                    if len(parts) >= 2 and self.headers.get(parts[0]):
                        # e.g. [steps.options] belongs to the latest [[steps]] entry
                        entry = (parts[0], self.headers[parts[0]] - 1)
                        self.at.setdefault((*entry, parts[1]), number)
                elif table is not None and (m := _KEY_RE.match(line)):
                    self.at.setdefault((*table, m.group(1).strip("\"'")), number)
            state = _string_state(line, state)

    def line(self, loc: _Loc, data: dict[str, Any]) -> int | None:
        """Best line for ``loc``. Within an [[inputs]] or [[steps]] entry that lacks the
        key, that is the entry's name or id, else its header."""
        if len(loc) < 2 or loc[0] not in _ENTRIES:
            return self.at.get(loc[:1], 1)
        section, index = str(loc[0]), int(loc[1])
        ident_key = _ENTRIES[section].ident_key
        if self.headers[section] == len(data[section]):
            candidates = (loc[:3], (section, index, ident_key), (section, index))
            return next(self.at[c] for c in candidates if c in self.at)
        # Not one header per entry (e.g. steps = [{ id = "a", ... }]): look for the id.
        ident = _entry_ident(data, loc)
        if ident:
            pattern = re.compile(
                rf"""(?:^|[{{,\s]){re.escape(ident_key)}\s*=\s*["']{re.escape(ident)}["']"""
            )
            for number, text in enumerate(self.lines, start=1):
                if pattern.search(text):
                    return number
        return self.at.get((section,))
