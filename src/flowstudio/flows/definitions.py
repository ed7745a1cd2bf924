"""Flow definition models, prompt templates and run-input validation.

The models are frozen pydantic v2 models. They enforce their own invariants (so a
definition rebuilt from a stored snapshot is as trustworthy as one loaded from TOML);
the TOML loader in :mod:`flowstudio.flows.loader` performs the same checks first so that
it can report them with a file name and line number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_PROVIDER",
    "DEFAULT_SIZE",
    "DEFAULT_TEMPERATURE",
    "MAX_DIMENSION",
    "MAX_RUN_INPUT_LENGTH",
    "MAX_TEMPERATURE",
    "MIN_DIMENSION",
    "MIN_TEMPERATURE",
    "SNAPSHOT_FORMAT",
    "FlowDefinition",
    "FlowError",
    "FlowInput",
    "FlowProblem",
    "FlowStep",
    "InputPlaceholder",
    "PromptRenderError",
    "RunInputError",
    "StepPromptPlaceholder",
    "StepKind",
    "TemplateError",
    "UnknownStep",
    "default_input_label",
    "default_step_title",
    "flow_problems",
    "parse_size",
    "parse_template",
    "render_prompt",
]

# --------------------------------------------------------------------------- constants

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
STEP_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
INPUT_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
PROVIDER_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"

SLUG_RE = re.compile(SLUG_PATTERN)
STEP_ID_RE = re.compile(STEP_ID_PATTERN)
INPUT_NAME_RE = re.compile(INPUT_NAME_PATTERN)
PROVIDER_RE = re.compile(PROVIDER_PATTERN)
SIZE_RE = re.compile(r"^([0-9]{1,5})x([0-9]{1,5})$")

DEFAULT_PROVIDER = "local"
#: Model used when a step names a provider but no model. Providers missing from this
#: table have no default: steps using them must set ``model`` explicitly.
DEFAULT_MODELS: Mapping[str, str] = {"local": "local-sketch"}
DEFAULT_TEMPERATURE = 1.0
MIN_TEMPERATURE = 0.0
MAX_TEMPERATURE = 2.0
DEFAULT_SIZE = "1024x1024"
MIN_DIMENSION = 64
MAX_DIMENSION = 4096
MAX_RUN_INPUT_LENGTH = 2000
SNAPSHOT_FORMAT = 1

StepKind = Literal["generate", "edit"]


# --------------------------------------------------------------------------- errors


class FlowError(Exception):
    """Base class for problems with flow definition files and directories."""


class UnknownStep(KeyError):
    """A step id that the flow does not define."""

    def __init__(self, slug: str, step_id: str) -> None:
        super().__init__(step_id)
        self.slug = slug
        self.step_id = step_id

    def __str__(self) -> str:
        return f'flow "{self.slug}" has no step "{self.step_id}"'


class TemplateError(ValueError):
    """A prompt template that cannot be parsed (unbalanced or malformed braces)."""


class PromptRenderError(ValueError):
    """A prompt cannot be rendered because an upstream prompt was not supplied."""


class RunInputError(ValueError):
    """Run input values that do not fit the flow's declared inputs.

    ``field``/``reason`` describe the first problem; ``errors`` lists all of them as
    ``{"field": ..., "message": ...}`` dicts (``field`` is the run input name).
    """

    def __init__(
        self,
        field: str,
        reason: str,
        errors: Sequence[Mapping[str, str]] | None = None,
    ) -> None:
        self.field = field
        self.reason = reason
        self.errors: list[dict[str, str]] = (
            [{"field": e["field"], "message": e["message"]} for e in errors]
            if errors
            else [{"field": field, "message": reason}]
        )
        super().__init__(str(self))

    def __str__(self) -> str:
        return "; ".join(f'input "{e["field"]}": {e["message"]}' for e in self.errors)


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True)
class InputPlaceholder:
    """``{name}``: the value of run input ``name``."""

    name: str

    @property
    def text(self) -> str:
        return "{" + self.name + "}"


@dataclass(frozen=True, slots=True)
class StepPromptPlaceholder:
    """``{steps.<step_id>.prompt}``: the prompt of the adopted generation of a step."""

    step_id: str

    @property
    def text(self) -> str:
        return "{steps." + self.step_id + ".prompt}"


TemplatePart = str | InputPlaceholder | StepPromptPlaceholder

_STEP_PROMPT_RE = re.compile(r"^steps\.([a-z0-9][a-z0-9_-]{0,63})\.prompt$")


@lru_cache(maxsize=512)
def _parse_template_cached(template: str) -> tuple[TemplatePart, ...]:
    parts: list[TemplatePart] = []
    literal: list[str] = []
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if ch == "{":
            if template.startswith("{{", i):
                literal.append("{")
                i += 2
                continue
            end = template.find("}", i + 1)
            if end < 0:
                raise TemplateError(
                    f"unclosed '{{' at character {i + 1} (write '{{{{' for a literal brace)"
                )
            body = template[i + 1 : end]
            if "{" in body:
                raise TemplateError(
                    f"unclosed '{{' at character {i + 1} (write '{{{{' for a literal brace)"
                )
            if INPUT_NAME_RE.fullmatch(body):
                placeholder: TemplatePart = InputPlaceholder(body)
            elif m := _STEP_PROMPT_RE.fullmatch(body):
                placeholder = StepPromptPlaceholder(m.group(1))
            else:
                raise TemplateError(
                    f'invalid placeholder "{{{body}}}": use {{input_name}} or '
                    "{steps.<step_id>.prompt}, and '{{' / '}}' for literal braces"
                )
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(placeholder)
            i = end + 1
        elif ch == "}":
            if template.startswith("}}", i):
                literal.append("}")
                i += 2
                continue
            raise TemplateError(
                f"single '}}' at character {i + 1} (write '}}}}' for a literal brace)"
            )
        else:
            literal.append(ch)
            i += 1
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def parse_template(template: str) -> tuple[TemplatePart, ...]:
    """Split a prompt template into literal strings and placeholders.

    Raises :class:`TemplateError` for malformed braces or placeholders. Whether the
    placeholders refer to things that exist is checked at flow level
    (:func:`flow_problems`).
    """
    return _parse_template_cached(template)


def render_prompt(
    step: FlowStep,
    *,
    inputs: Mapping[str, str],
    upstream_prompts: Mapping[str, str],
) -> str:
    """Fill in a step's prompt template.

    ``inputs`` are the run input values (as returned by
    :meth:`FlowDefinition.validate_run_inputs`); a missing one renders as an empty
    string. ``upstream_prompts`` maps step ids to the prompt of their adopted
    generation; a referenced step missing from it raises :class:`PromptRenderError`.
    Values are inserted verbatim: braces inside them are never interpreted.
    """
    out: list[str] = []
    for part in parse_template(step.prompt):
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, InputPlaceholder):
            value = inputs.get(part.name)
            out.append("" if value is None else str(value))
        else:
            value = upstream_prompts.get(part.step_id)
            if value is None:
                raise PromptRenderError(
                    f'step "{step.id}": no adopted prompt for upstream step "{part.step_id}"'
                )
            out.append(str(value))
    return "".join(out)


def parse_size(size: str) -> tuple[int, int]:
    """Parse ``"WxH"`` into ``(width, height)``; raises ``ValueError`` with a reason."""
    m = SIZE_RE.fullmatch(size)
    if not m:
        raise ValueError(f'size must look like "1024x1024" (WIDTHxHEIGHT), got "{size}"')
    width, height = int(m.group(1)), int(m.group(2))
    for label, value in (("width", width), ("height", height)):
        if not MIN_DIMENSION <= value <= MAX_DIMENSION:
            raise ValueError(
                f"size {label} must be between {MIN_DIMENSION} and {MAX_DIMENSION}, got {value}"
            )
    return width, height


# --------------------------------------------------------------------------- models


def default_step_title(step_id: str) -> str:
    """The title used for a step that does not set one: ``"hero-shot"`` -> ``"Hero shot"``."""
    words = re.sub(r"[-_]+", " ", step_id).strip()
    return words[:1].upper() + words[1:] if words else step_id


def default_input_label(name: str) -> str:
    """The label used for a run input that does not set one."""
    return default_step_title(name)


_FROZEN = ConfigDict(frozen=True, extra="forbid")


def check_plain_data(value: Any, where: str) -> None:
    """Raise ``ValueError`` unless ``value`` is plain JSON data (no dates, NaN, ...)."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: non-finite numbers are not allowed")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain_data(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings")
            check_plain_data(item, f"{where}.{key}")
        return
    raise ValueError(f"{where}: {type(value).__name__} values are not allowed")


class FlowInput(BaseModel):
    """A run input the user fills in when starting a run."""

    model_config = _FROZEN

    name: Annotated[str, Field(pattern=INPUT_NAME_PATTERN)]
    label: Annotated[str, Field(min_length=1)]
    default: Annotated[str, Field(max_length=MAX_RUN_INPUT_LENGTH)] | None = None
    required: bool = True
    multiline: bool = False

    @model_validator(mode="before")
    @classmethod
    def _fill_label(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("label") is None:
            name = data.get("name")
            if isinstance(name, str):
                data = {**data, "label": default_input_label(name)}
        return data


class FlowStep(BaseModel):
    """One step of a flow.

    ``inputs`` are the ids of earlier steps this step depends on. For ``edit`` steps
    their adopted images are sent to the provider in that order
    (:attr:`image_inputs`); for ``generate`` steps they are dependencies only (their
    prompts may be quoted with ``{steps.<id>.prompt}``).
    """

    model_config = _FROZEN

    id: Annotated[str, Field(pattern=STEP_ID_PATTERN)]
    title: Annotated[str, Field(min_length=1)]
    kind: StepKind = "generate"
    prompt: Annotated[str, Field(min_length=1)]
    provider: Annotated[str, Field(pattern=PROVIDER_PATTERN)] = DEFAULT_PROVIDER
    model: Annotated[str, Field(min_length=1)]
    temperature: Annotated[
        float, Field(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, allow_inf_nan=False)
    ] = DEFAULT_TEMPERATURE
    width: Annotated[int, Field(ge=MIN_DIMENSION, le=MAX_DIMENSION)] = 1024
    height: Annotated[int, Field(ge=MIN_DIMENSION, le=MAX_DIMENSION)] = 1024
    seed: Annotated[int, Field(ge=0)] | None = None
    inputs: tuple[str, ...] = ()
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        # ``title`` defaults to a prettified id and ``model`` to the provider's default.
        if isinstance(data, Mapping):
            data = dict(data)
            step_id = data.get("id")
            if data.get("title") is None and isinstance(step_id, str):
                data["title"] = default_step_title(step_id)
            provider = data.get("provider", DEFAULT_PROVIDER)
            if data.get("model") is None and provider in DEFAULT_MODELS:
                data["model"] = DEFAULT_MODELS[provider]
        return data

    @field_validator("prompt")
    @classmethod
    def _prompt_syntax(cls, value: str) -> str:
        parse_template(value)  # TemplateError is a ValueError
        return value

    @field_validator("options")
    @classmethod
    def _options_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_plain_data(value, "options")
        return value

    @property
    def size(self) -> str:
        """``"WIDTHxHEIGHT"``, as written in flow files."""
        return f"{self.width}x{self.height}"

    @property
    def image_inputs(self) -> tuple[str, ...]:
        """Step ids whose adopted images are sent to the provider (edit steps only)."""
        return self.inputs if self.kind == "edit" else ()

    def placeholders(self) -> tuple[InputPlaceholder | StepPromptPlaceholder, ...]:
        """The placeholders in the prompt template, in order of appearance."""
        return tuple(p for p in parse_template(self.prompt) if not isinstance(p, str))


@dataclass(frozen=True, slots=True)
class FlowProblem:
    """A flow-level consistency problem, located for error reporting.

    ``section`` is ``"step"`` or ``"input"`` (with ``index`` into that list) or ``None``
    for the flow itself; ``key`` is the offending key within that entry, if any.
    """

    section: Literal["step", "input"] | None
    index: int | None
    key: str | None
    message: str


def flow_problems(inputs: Sequence[FlowInput], steps: Sequence[FlowStep]) -> Iterator[FlowProblem]:
    """Cross-entry checks: unique names/ids, step references, placeholders."""
    seen_names: set[str] = set()
    for index, flow_input in enumerate(inputs):
        if flow_input.name in seen_names:
            yield FlowProblem("input", index, "name", f'input "{flow_input.name}" is defined twice')
        seen_names.add(flow_input.name)

    if not steps:
        yield FlowProblem(None, None, "steps", "a flow needs at least one step")
    all_ids = {step.id for step in steps}
    earlier: set[str] = set()
    for index, step in enumerate(steps):
        where = f'step "{step.id}"'
        if step.id in earlier:
            yield FlowProblem("step", index, "id", f"{where}: step id is used twice")
        seen_refs: set[str] = set()
        for ref in step.inputs:
            if ref == step.id:
                yield FlowProblem(
                    "step", index, "inputs", f"{where}: a step cannot be its own input"
                )
            elif ref in seen_refs:
                yield FlowProblem(
                    "step", index, "inputs", f'{where}: inputs lists step "{ref}" twice'
                )
            elif ref in earlier:
                pass
            elif ref in all_ids:
                yield FlowProblem(
                    "step",
                    index,
                    "inputs",
                    f'{where}: inputs references step "{ref}", which comes later in the flow '
                    "(steps may only use earlier steps)",
                )
            else:
                yield FlowProblem(
                    "step", index, "inputs", f'{where}: inputs references unknown step "{ref}"'
                )
            seen_refs.add(ref)
        if step.kind == "edit" and not step.inputs:
            yield FlowProblem(
                "step",
                index,
                "kind",
                f"{where}: edit steps need at least one step in inputs",
            )
        for placeholder in step.placeholders():
            if isinstance(placeholder, InputPlaceholder):
                if placeholder.name not in seen_names:
                    known = ", ".join(i.name for i in inputs) or "none"
                    yield FlowProblem(
                        "step",
                        index,
                        "prompt",
                        f'{where}: prompt uses unknown placeholder "{placeholder.text}" '
                        f"(run inputs: {known})",
                    )
            elif placeholder.step_id not in step.inputs:
                yield FlowProblem(
                    "step",
                    index,
                    "prompt",
                    f'{where}: prompt uses "{placeholder.text}" but step '
                    f'"{placeholder.step_id}" is not in this step\'s inputs',
                )
        earlier.add(step.id)


class FlowDefinition(BaseModel):
    """A named sequence of steps plus the run inputs it asks for.

    ``source`` says where the definition came from (a file path, or
    ``bundled:<file>`` for flows shipped with FlowStudio).
    """

    model_config = _FROZEN

    slug: Annotated[str, Field(pattern=SLUG_PATTERN)]
    title: Annotated[str, Field(min_length=1)]
    description: str = ""
    inputs: tuple[FlowInput, ...] = ()
    steps: Annotated[tuple[FlowStep, ...], Field(min_length=1)]
    source: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> FlowDefinition:
        problems = [p.message for p in flow_problems(self.inputs, self.steps)]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- steps and the dependency graph ------------------------------------------

    def step(self, step_id: str) -> FlowStep:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise UnknownStep(self.slug, step_id)

    def step_ids(self) -> list[str]:
        return [step.id for step in self.steps]

    def upstream_of(self, step_id: str) -> list[str]:
        """The steps ``step_id`` takes directly as input, in declared order."""
        return list(self.step(step_id).inputs)

    def downstream_of(self, step_id: str) -> list[str]:
        """Every step that depends on ``step_id``, directly or transitively, in flow
        order and excluding ``step_id`` itself: the steps whose results go stale when a
        different generation of ``step_id`` is adopted."""
        self.step(step_id)
        affected = {step_id}
        result: list[str] = []
        # Inputs always point to earlier steps, so one pass in flow order suffices.
        for step in self.steps:
            if step.id != step_id and affected.intersection(step.inputs):
                affected.add(step.id)
                result.append(step.id)
        return result

    # -- snapshots ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable dict from which :meth:`from_snapshot` rebuilds an equal
        definition (stored with a run so later edits to the file do not affect it)."""
        data = self.model_dump(mode="json")
        data["format"] = SNAPSHOT_FORMAT
        return data

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> FlowDefinition:
        payload = dict(data)
        fmt = payload.pop("format", SNAPSHOT_FORMAT)
        if fmt != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported flow snapshot format {fmt!r}")
        return cls.model_validate(payload)

    # -- run inputs -----------------------------------------------------------------

    def validate_run_inputs(self, values: Mapping[str, Any]) -> dict[str, str]:
        """Check and normalise the values a user supplied when starting a run.

        Returns a value for every declared input, in declaration order. Values are
        trimmed; a missing (or ``None``) value takes the input's default, or ``""`` for
        an optional input without one. A required input that ends up blank is an error,
        as are unknown names, non-string values, NUL characters and values longer than
        :data:`MAX_RUN_INPUT_LENGTH`. All problems are reported together in
        :class:`RunInputError`.
        """
        errors: list[dict[str, str]] = []
        declared = {i.name for i in self.inputs}
        for name in values:
            if name not in declared:
                errors.append({"field": str(name), "message": "unknown input"})
        result: dict[str, str] = {}
        for flow_input in self.inputs:
            raw = values.get(flow_input.name)
            if raw is None:
                raw = flow_input.default if flow_input.default is not None else ""
            elif not isinstance(raw, str):
                errors.append(
                    {
                        "field": flow_input.name,
                        "message": f"must be a string, not {type(raw).__name__}",
                    }
                )
                continue
            value = raw.strip()
            if "\x00" in value:
                errors.append(
                    {"field": flow_input.name, "message": "must not contain NUL characters"}
                )
            elif len(value) > MAX_RUN_INPUT_LENGTH:
                errors.append(
                    {
                        "field": flow_input.name,
                        "message": f"must be at most {MAX_RUN_INPUT_LENGTH} characters "
                        f"(got {len(value)})",
                    }
                )
            elif flow_input.required and not value:
                errors.append({"field": flow_input.name, "message": "is required"})
            else:
                result[flow_input.name] = value
        if errors:
            raise RunInputError(errors[0]["field"], errors[0]["message"], errors)
        return result
