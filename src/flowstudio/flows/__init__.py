"""Flow definitions: TOML loading and validation, the registry, prompt rendering and
the step dependency graph. The file format is documented in :mod:`.loader`."""

from .definitions import (
    DEFAULT_MODELS,
    DEFAULT_PROVIDER,
    MAX_RUN_INPUT_LENGTH,
    FlowDefinition,
    FlowError,
    FlowInput,
    FlowStep,
    InputPlaceholder,
    PromptRenderError,
    RunInputError,
    StepKind,
    StepPromptPlaceholder,
    TemplateError,
    UnknownStep,
    parse_template,
    render_prompt,
)
from .loader import FlowDefinitionError, load_flow_file, parse_flow
from .registry import (
    FlowDirectoryError,
    FlowRegistry,
    UnknownFlow,
    load_bundled_flows,
    load_flow_dir,
)

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_PROVIDER",
    "MAX_RUN_INPUT_LENGTH",
    "FlowDefinition",
    "FlowDefinitionError",
    "FlowDirectoryError",
    "FlowError",
    "FlowInput",
    "FlowRegistry",
    "FlowStep",
    "InputPlaceholder",
    "PromptRenderError",
    "RunInputError",
    "StepKind",
    "StepPromptPlaceholder",
    "TemplateError",
    "UnknownFlow",
    "UnknownStep",
    "load_bundled_flows",
    "load_flow_dir",
    "load_flow_file",
    "parse_flow",
    "parse_template",
    "render_prompt",
]
