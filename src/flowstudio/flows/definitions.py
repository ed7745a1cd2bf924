"""Flow definition models, prompt templates and run-input validation.

The models are frozen pydantic v2 models and the single home of every rule a flow must
follow: a definition rebuilt from a stored snapshot is checked exactly like one loaded
from TOML. They take the flow-file spelling as input too (``size = "WxH"``, omitted
titles, labels, kinds and models), and their errors are worded for the people who write
flow files: the loader in :mod:`flowstudio.flows.loader` only adds the file name, the
line and, inside a step or input, which one it is.

Errors raised by model-level validators carry ``loc`` in their context: the path, within
the model that raised them, of the key they are about.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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
    "describe_type",
    "flow_problems",
    "parse_size",
    "parse_template",
    "render_prompt",
]

# --------------------------------------------------------------------------- constants

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
STEP_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
INPUT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
PROVIDER_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
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

_Text = Annotated[str, StringConstraints(strip_whitespace=True)]
_NonEmptyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


# Most specific first: a bool is also an int, and a datetime also a date.
_TYPE_NAMES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    ((list, tuple), "an array"),
    (Mapping, "a table"),
    (datetime, "a date-time"),
    (date, "a date"),
    (time, "a time"),
)


def describe_type(value: Any) -> str:
    """How an error message names the type of a TOML or JSON value: ``"an integer"``."""
    names = (name for types, name in _TYPE_NAMES if isinstance(value, types))
    return next(names, type(value).__name__)


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


def _located_error(
    error_type: str, loc: tuple[str | int, ...], message: str
) -> PydanticCustomError:
    """An error about the key at ``loc``, relative to the model whose validator raises it."""
    # pydantic fills in the context in order: the message goes last so that braces it
    # quotes from a prompt are never taken for a placeholder.
    return PydanticCustomError(error_type, "{message}", {"loc": loc, "message": message})


def _matching(regex: re.Pattern[str], error_type: str, message: str) -> AfterValidator:
    """Reject a string ``regex`` does not match, with ``message`` (``{value}`` is the string)."""

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise PydanticCustomError(error_type, message.format(value=value))
        return value

    return AfterValidator(check)


class FlowInput(BaseModel):
    """A run input the user fills in when starting a run."""

    model_config = _FROZEN

    name: Annotated[
        str,
        _matching(
            INPUT_NAME_RE,
            "invalid_input_name",
            'invalid input name "{value}": use 1-64 lowercase letters, digits and "_", '
            "starting with a letter",
        ),
    ]
    label: _NonEmptyText
    default: (
        Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_RUN_INPUT_LENGTH)]
        | None
    ) = None
    required: StrictBool = True
    multiline: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _fill_label(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("label") is None:
            name = data.get("name")
            if isinstance(name, str):
                data = {**data, "label": default_input_label(name)}
        return data


def _step_ids(value: Any) -> Any:
    if not isinstance(value, (list, tuple)):
        raise PydanticCustomError(
            "step_ids_type", f'"inputs" must be an array of step ids, not {describe_type(value)}'
        )
    if not all(isinstance(item, str) for item in value):
        raise PydanticCustomError(
            "step_ids_type", '"inputs" must be an array of step ids (strings)'
        )
    return value


def _temperature_in_range(value: float) -> float:
    if not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:  # also rejects nan
        written = int(value) if value.is_integer() else value  # as in the file: 3, not 3.0
        raise PydanticCustomError(
            "temperature_range",
            f'"temperature" must be between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g}, '
            f"got {written}",
        )
    return value


def _dimensions(size: Any) -> dict[str, int]:
    """``width`` and ``height`` from a flow file's ``size = "WIDTHxHEIGHT"``."""
    if not isinstance(size, str):
        raise _located_error(
            "size_type",
            ("size",),
            f'"size" must be a string like "1024x1024", not {describe_type(size)}',
        )
    try:
        width, height = parse_size(size.strip())
    except ValueError as exc:
        raise _located_error("invalid_size", ("size",), str(exc)) from None
    return {"width": width, "height": height}


class FlowStep(BaseModel):
    """One step of a flow.

    ``inputs`` are the ids of earlier steps this step depends on. For ``edit`` steps
    their adopted images are sent to the provider in that order
    (:attr:`image_inputs`); for ``generate`` steps they are dependencies only (their
    prompts may be quoted with ``{steps.<id>.prompt}``). A step that does not name its
    ``kind`` is an edit if it lists inputs and a generation otherwise.

    The dimensions may also be given as in flow files, ``size="WIDTHxHEIGHT"``.
    """

    model_config = _FROZEN

    id: Annotated[
        str,
        _matching(
            STEP_ID_RE,
            "invalid_step_id",
            'invalid step id "{value}": use 1-64 lowercase letters, digits, "-" and "_", '
            "starting with a letter or digit",
        ),
    ]
    title: _NonEmptyText
    kind: StepKind = "generate"
    prompt: _NonEmptyText
    provider: Annotated[
        str, _matching(PROVIDER_RE, "invalid_provider", 'invalid provider name "{value}"')
    ] = DEFAULT_PROVIDER
    # Left empty only when neither the step nor its provider names a model: see _has_model.
    model: _NonEmptyText = ""
    temperature: Annotated[StrictFloat, AfterValidator(_temperature_in_range)] = DEFAULT_TEMPERATURE
    width: Annotated[StrictInt, Field(ge=MIN_DIMENSION, le=MAX_DIMENSION)] = 1024
    height: Annotated[StrictInt, Field(ge=MIN_DIMENSION, le=MAX_DIMENSION)] = 1024
    seed: Annotated[StrictInt, Field(ge=0)] | None = None
    inputs: Annotated[tuple[str, ...], BeforeValidator(_step_ids)] = ()
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if "size" in data:
            if "width" in data or "height" in data:
                raise _located_error(
                    "size_twice", ("size",), 'set either "size" or "width" and "height"'
                )
            data.update(_dimensions(data.pop("size")))
        step_id = data.get("id")
        if data.get("title") is None and isinstance(step_id, str):
            data["title"] = default_step_title(step_id)
        # An edit needs an input image, so a step that lists inputs most likely edits them.
        data.setdefault("kind", "edit" if data.get("inputs") else "generate")
        provider = data.get("provider", DEFAULT_PROVIDER)
        if data.get("model") is None and isinstance(provider, str) and provider in DEFAULT_MODELS:
            data["model"] = DEFAULT_MODELS[provider]
        return data

    @field_validator("prompt")
    @classmethod
    def _prompt_syntax(cls, value: str) -> str:
        try:
            parse_template(value)
        except TemplateError as exc:
            raise PydanticCustomError("prompt_template", f"prompt: {exc}") from None
        return value

    @field_validator("options")
    @classmethod
    def _options_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            check_plain_data(value, "options")
        except ValueError as exc:
            raise PydanticCustomError("options_not_json", str(exc)) from None
        return value

    @model_validator(mode="after")
    def _has_model(self) -> FlowStep:
        # Checked after the fields, so that a misspelt "model" key is reported as such.
        if not self.model:
            raise _located_error(
                "model_required",
                ("provider",),
                f'"model" is required for provider "{self.provider}" (it has no default model)',
            )
        return self

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
    """A flow-level consistency problem. ``loc`` is the path of the offending key in the
    flow's data, e.g. ``("steps", 2, "inputs")``."""

    loc: tuple[str | int, ...]
    message: str


def flow_problems(inputs: Sequence[FlowInput], steps: Sequence[FlowStep]) -> Iterator[FlowProblem]:
    """Cross-entry checks: unique names/ids, step references, placeholders."""
    seen_names: set[str] = set()
    for index, flow_input in enumerate(inputs):
        if flow_input.name in seen_names:
            yield FlowProblem(
                ("inputs", index, "name"), f'input "{flow_input.name}" is defined twice'
            )
        seen_names.add(flow_input.name)

    all_ids = {step.id for step in steps}
    earlier: set[str] = set()
    for index, step in enumerate(steps):
        where = f'step "{step.id}"'
        if step.id in earlier:
            yield FlowProblem(("steps", index, "id"), f"{where}: step id is used twice")
        seen_refs: set[str] = set()
        for ref in step.inputs:
            if ref == step.id:
                message = f"{where}: a step cannot be its own input"
            elif ref in seen_refs:
                message = f'{where}: inputs lists step "{ref}" twice'
            elif ref in earlier:
                message = ""
            elif ref in all_ids:
                message = (
                    f'{where}: inputs references step "{ref}", which comes later in the flow '
                    "(steps may only use earlier steps)"
                )
            else:
                message = f'{where}: inputs references unknown step "{ref}"'
            if message:
                yield FlowProblem(("steps", index, "inputs"), message)
            seen_refs.add(ref)
        if step.kind == "edit" and not step.inputs:
            yield FlowProblem(
                ("steps", index, "kind"), f"{where}: edit steps need at least one step in inputs"
            )
        for placeholder in step.placeholders():
            if isinstance(placeholder, InputPlaceholder):
                if placeholder.name not in seen_names:
                    known = ", ".join(i.name for i in inputs) or "none"
                    yield FlowProblem(
                        ("steps", index, "prompt"),
                        f'{where}: prompt uses unknown placeholder "{placeholder.text}" '
                        f"(run inputs: {known})",
                    )
            elif placeholder.step_id not in step.inputs:
                yield FlowProblem(
                    ("steps", index, "prompt"),
                    f'{where}: prompt uses "{placeholder.text}" but step '
                    f'"{placeholder.step_id}" is not in this step\'s inputs',
                )
        earlier.add(step.id)


def _has_steps(steps: tuple[FlowStep, ...]) -> tuple[FlowStep, ...]:
    if not steps:
        raise PydanticCustomError("no_steps", "a flow needs at least one [[steps]] table")
    return steps


class FlowDefinition(BaseModel):
    """A named sequence of steps plus the run inputs it asks for.

    ``source`` says where the definition came from (a file path, or
    ``bundled:<file>`` for flows shipped with FlowStudio).
    """

    model_config = _FROZEN

    slug: Annotated[
        _NonEmptyText,
        _matching(
            SLUG_RE,
            "invalid_slug",
            'invalid slug "{value}": use 1-64 lowercase letters, digits and "-", '
            "starting with a letter or digit",
        ),
    ]
    title: _NonEmptyText
    description: _Text = ""
    inputs: tuple[FlowInput, ...] = ()
    steps: Annotated[
        tuple[FlowStep, ...], AfterValidator(_has_steps), Field(validate_default=True)
    ] = ()
    source: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> FlowDefinition:
        # Only the first problem: the loader reports one, with its line, and later
        # problems often follow from it.
        problem = next(flow_problems(self.inputs, self.steps), None)
        if problem is not None:
            raise _located_error("inconsistent_flow", problem.loc, problem.message)
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
