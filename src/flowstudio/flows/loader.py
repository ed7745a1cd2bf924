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
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from .definitions import (
    DEFAULT_MODELS,
    DEFAULT_PROVIDER,
    DEFAULT_SIZE,
    DEFAULT_TEMPERATURE,
    INPUT_NAME_RE,
    MAX_RUN_INPUT_LENGTH,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    PROVIDER_RE,
    SLUG_RE,
    STEP_ID_RE,
    FlowDefinition,
    FlowError,
    FlowInput,
    FlowStep,
    TemplateError,
    check_plain_data,
    default_input_label,
    default_step_title,
    flow_problems,
    parse_size,
    parse_template,
)

__all__ = [
    "FlowDefinitionError",
    "load_flow_file",
    "parse_flow",
    "top_level_key_line",
]

_TOP_KEYS = ("slug", "title", "description", "inputs", "steps")
_INPUT_KEYS = ("name", "label", "default", "required", "multiline")
_STEP_KEYS = (
    "id",
    "title",
    "kind",
    "prompt",
    "provider",
    "model",
    "temperature",
    "size",
    "seed",
    "inputs",
    "options",
)
_STEP_KINDS = ("generate", "edit")


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
    return _Checker(source, _LineMap(text)).flow(data)


def top_level_key_line(text: str, key: str) -> int | None:
    """The line on which top-level ``key`` (e.g. ``"slug"``) is set, if it can be found."""
    return _LineMap(text).top.get(key)


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


@dataclass
class _Block:
    line: int
    keys: dict[str, int] = field(default_factory=dict)


class _LineMap:
    """Where things are in the raw text: an approximate, best-effort index used only
    to point error messages at the right line."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.top: dict[str, int] = {}
        self.blocks: dict[str, list[_Block]] = {"steps": [], "inputs": []}
        current: dict[str, int] | None = self.top
        state: str | None = None
        for number, line in enumerate(self.lines, start=1):
            if state is None:
                if m := _ARRAY_HEADER_RE.match(line):
                    parts = _header_parts(m.group(1))
                    self.top.setdefault(parts[0], number)
                    if len(parts) == 1 and parts[0] in self.blocks:
                        block = _Block(number)
                        self.blocks[parts[0]].append(block)
                        current = block.keys
                    else:
                        current = None
                elif m := _TABLE_HEADER_RE.match(line):
                    parts = _header_parts(m.group(1))
                    self.top.setdefault(parts[0], number)
                    current = None
                    if len(parts) >= 2 and parts[0] in self.blocks and self.blocks[parts[0]]:
                        # e.g. [steps.options] belongs to the latest [[steps]] entry
                        self.blocks[parts[0]][-1].keys.setdefault(parts[1], number)
                elif current is not None and (m := _KEY_RE.match(line)):
                    current.setdefault(m.group(1).strip("\"'"), number)
            state = _string_state(line, state)

    def entry_line(
        self,
        section: str,
        index: int,
        count: int,
        key: str | None = None,
        ident_key: str | None = None,
        ident: str | None = None,
    ) -> int | None:
        """Best line for ``key`` of entry ``index`` in array ``section`` (``count`` entries
        in the parsed data). Falls back to the entry's identifying key, its header, or a
        text search for ``ident_key = "ident"``."""
        blocks = self.blocks[section]
        if len(blocks) == count and index < count:
            block = blocks[index]
            if key is not None and key in block.keys:
                return block.keys[key]
            if ident_key is not None and ident_key in block.keys:
                return block.keys[ident_key]
            return block.line
        if ident_key and ident:
            pattern = re.compile(
                rf"""(?:^|[{{,\s]){re.escape(ident_key)}\s*=\s*["']{re.escape(ident)}["']"""
            )
            for number, line in enumerate(self.lines, start=1):
                if pattern.search(line):
                    return number
        return self.top.get(section)


# --------------------------------------------------------------------------- checks


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, time):
        return "a time"
    return type(value).__name__


def _suggest(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


class _Checker:
    def __init__(self, source: str, lines: _LineMap) -> None:
        self.source = source
        self.lines = lines

    def fail(self, line: int | None, reason: str) -> NoReturn:
        raise FlowDefinitionError(self.source, line, reason)

    # -- flow ---------------------------------------------------------------------

    def flow(self, data: dict[str, Any]) -> FlowDefinition:
        top = self.lines.top
        for key in data:
            if key not in _TOP_KEYS:
                self.fail(top.get(key), f'unknown key "{key}"{_suggest(key, _TOP_KEYS)}')

        slug = self._top_string(data, "slug", required=True)
        if not SLUG_RE.fullmatch(slug):
            self.fail(
                top.get("slug"),
                f'invalid slug "{slug}": use 1-64 lowercase letters, digits and "-", '
                "starting with a letter or digit",
            )
        title = self._top_string(data, "title", required=True)
        description = self._top_string(data, "description", required=False)

        raw_inputs = self._top_tables(data, "inputs", "[[inputs]]")
        raw_steps = self._top_tables(data, "steps", "[[steps]]")
        if not raw_steps:
            self.fail(top.get("steps", 1), "a flow needs at least one [[steps]] table")

        inputs = [self._input(t, i, len(raw_inputs)) for i, t in enumerate(raw_inputs)]
        step_ids = [t.get("id") for t in raw_steps]
        steps = [self._step(t, i, len(raw_steps)) for i, t in enumerate(raw_steps)]

        for problem in flow_problems(inputs, steps):
            if problem.section == "step" and problem.index is not None:
                line = self.lines.entry_line(
                    "steps",
                    problem.index,
                    len(raw_steps),
                    problem.key,
                    "id",
                    str(step_ids[problem.index]),
                )
            elif problem.section == "input" and problem.index is not None:
                line = self.lines.entry_line(
                    "inputs",
                    problem.index,
                    len(raw_inputs),
                    problem.key,
                    "name",
                    inputs[problem.index].name,
                )
            else:
                line = top.get(problem.key or "", 1)
            self.fail(line, problem.message)

        try:
            return FlowDefinition(
                slug=slug,
                title=title,
                description=description,
                inputs=tuple(inputs),
                steps=tuple(steps),
                source=self.source,
            )
        except ValidationError as exc:  # pragma: no cover - the checks above cover this
            self.fail(None, _first_validation_message(exc))

    def _top_string(self, data: Mapping[str, Any], key: str, *, required: bool) -> str:
        if key not in data:
            if required:
                self.fail(1, f'missing required key "{key}"')
            return ""
        value = data[key]
        if not isinstance(value, str):
            self.fail(self.lines.top.get(key), f'"{key}" must be a string, not {_type_name(value)}')
        value = value.strip()
        if required and not value:
            self.fail(self.lines.top.get(key), f'"{key}" must not be empty')
        return value

    def _top_tables(self, data: Mapping[str, Any], key: str, header: str) -> list[dict[str, Any]]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(
                self.lines.top.get(key),
                f'"{key}" must be an array of tables (write each entry as {header})',
            )
        return value

    # -- inputs -------------------------------------------------------------------

    def _input(self, table: dict[str, Any], index: int, count: int) -> FlowInput:
        raw_name = table.get("name")
        name = raw_name if isinstance(raw_name, str) else None
        where = f'input "{name}"' if name else f"input #{index + 1}"

        def line(key: str | None = None) -> int | None:
            return self.lines.entry_line("inputs", index, count, key, "name", name)

        for key in table:
            if key not in _INPUT_KEYS:
                self.fail(line(key), f'{where}: unknown key "{key}"{_suggest(key, _INPUT_KEYS)}')
        if "name" not in table:
            self.fail(line(), f'{where}: missing required key "name"')
        if not isinstance(raw_name, str):
            self.fail(line("name"), f'{where}: "name" must be a string, not {_type_name(raw_name)}')
        if not INPUT_NAME_RE.fullmatch(raw_name):
            self.fail(
                line("name"),
                f'invalid input name "{raw_name}": use 1-64 lowercase letters, digits and "_", '
                "starting with a letter",
            )
        label = table.get("label")
        if label is not None:
            if not isinstance(label, str):
                self.fail(
                    line("label"), f'{where}: "label" must be a string, not {_type_name(label)}'
                )
            label = label.strip()
            if not label:
                self.fail(line("label"), f'{where}: "label" must not be empty')
        default = table.get("default")
        if default is not None:
            if not isinstance(default, str):
                self.fail(
                    line("default"),
                    f'{where}: "default" must be a string, not {_type_name(default)}',
                )
            default = default.strip()
            if len(default) > MAX_RUN_INPUT_LENGTH:
                self.fail(
                    line("default"),
                    f'{where}: "default" must be at most {MAX_RUN_INPUT_LENGTH} characters',
                )
        flags: dict[str, bool] = {}
        for key, fallback in (("required", True), ("multiline", False)):
            value = table.get(key, fallback)
            if not isinstance(value, bool):
                self.fail(
                    line(key), f'{where}: "{key}" must be true or false, not {_type_name(value)}'
                )
            flags[key] = value
        return FlowInput(
            name=raw_name,
            label=label or default_input_label(raw_name),
            default=default,
            required=flags["required"],
            multiline=flags["multiline"],
        )

    # -- steps --------------------------------------------------------------------

    def _step(self, table: dict[str, Any], index: int, count: int) -> FlowStep:
        raw_id = table.get("id")
        step_id = raw_id if isinstance(raw_id, str) else None
        where = f'step "{step_id}"' if step_id else f"step #{index + 1}"

        def line(key: str | None = None) -> int | None:
            return self.lines.entry_line("steps", index, count, key, "id", step_id)

        def fail_type(key: str, expected: str) -> NoReturn:
            self.fail(
                line(key), f'{where}: "{key}" must be {expected}, not {_type_name(table[key])}'
            )

        for key in table:
            if key not in _STEP_KEYS:
                self.fail(line(key), f'{where}: unknown key "{key}"{_suggest(key, _STEP_KEYS)}')

        if "id" not in table:
            self.fail(line(), f'{where}: missing required key "id"')
        if not isinstance(raw_id, str):
            fail_type("id", "a string")
        if not STEP_ID_RE.fullmatch(raw_id):
            self.fail(
                line("id"),
                f'invalid step id "{raw_id}": use 1-64 lowercase letters, digits, "-" and "_", '
                "starting with a letter or digit",
            )

        title = table.get("title")
        if title is not None:
            if not isinstance(title, str):
                fail_type("title", "a string")
            title = title.strip()
            if not title:
                self.fail(line("title"), f'{where}: "title" must not be empty')

        inputs = table.get("inputs", [])
        if not isinstance(inputs, list) or not all(isinstance(v, str) for v in inputs):
            if isinstance(inputs, list):
                self.fail(
                    line("inputs"), f'{where}: "inputs" must be an array of step ids (strings)'
                )
            fail_type("inputs", "an array of step ids")

        kind = table.get("kind", "edit" if inputs else "generate")
        if not isinstance(kind, str):
            fail_type("kind", "a string")
        if kind not in _STEP_KINDS:
            self.fail(line("kind"), f'{where}: "kind" must be "generate" or "edit", not "{kind}"')

        if "prompt" not in table:
            self.fail(line(), f'{where}: missing required key "prompt"')
        prompt = table["prompt"]
        if not isinstance(prompt, str):
            fail_type("prompt", "a string")
        prompt = prompt.strip()
        if not prompt:
            self.fail(line("prompt"), f'{where}: "prompt" must not be empty')
        try:
            parse_template(prompt)
        except TemplateError as exc:
            self.fail(line("prompt"), f"{where}: prompt: {exc}")

        provider = table.get("provider", DEFAULT_PROVIDER)
        if not isinstance(provider, str):
            fail_type("provider", "a string")
        if not PROVIDER_RE.fullmatch(provider):
            self.fail(line("provider"), f'{where}: invalid provider name "{provider}"')

        model = table.get("model")
        if model is None:
            model = DEFAULT_MODELS.get(provider)
            if model is None:
                self.fail(
                    line("provider"),
                    f'{where}: "model" is required for provider "{provider}" '
                    "(it has no default model)",
                )
        elif not isinstance(model, str):
            fail_type("model", "a string")
        elif not model.strip():
            self.fail(line("model"), f'{where}: "model" must not be empty')
        model = model.strip()

        temperature = table.get("temperature", DEFAULT_TEMPERATURE)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            fail_type("temperature", "a number")
        if not (MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE):  # also rejects nan
            self.fail(
                line("temperature"),
                f'{where}: "temperature" must be between {MIN_TEMPERATURE:g} and '
                f"{MAX_TEMPERATURE:g}, got {temperature}",
            )

        size = table.get("size", DEFAULT_SIZE)
        if not isinstance(size, str):
            fail_type("size", 'a string like "1024x1024"')
        try:
            width, height = parse_size(size.strip())
        except ValueError as exc:
            self.fail(line("size"), f"{where}: {exc}")

        seed = table.get("seed")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                fail_type("seed", "an integer")
            if seed < 0:
                self.fail(line("seed"), f'{where}: "seed" must be >= 0, got {seed}')

        options = table.get("options", {})
        if not isinstance(options, dict):
            fail_type("options", "a table")
        try:
            check_plain_data(options, "options")
        except ValueError as exc:
            self.fail(line("options"), f"{where}: {exc}")

        try:
            return FlowStep(
                id=raw_id,
                title=title or default_step_title(raw_id),
                kind=kind,
                prompt=prompt,
                provider=provider,
                model=model,
                temperature=float(temperature),
                width=width,
                height=height,
                seed=seed,
                inputs=tuple(inputs),
                options=options,
            )
        except ValidationError as exc:  # pragma: no cover - the checks above cover this
            self.fail(line(), f"{where}: {_first_validation_message(exc)}")


def _first_validation_message(exc: ValidationError) -> str:
    error = exc.errors()[0]
    loc = ".".join(str(p) for p in error.get("loc", ()))
    msg = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg
