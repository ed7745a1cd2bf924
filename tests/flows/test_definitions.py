"""Flow models: the dependency graph, snapshots, prompt rendering and run inputs."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from flowstudio.flows import (
    FlowDefinition,
    FlowInput,
    FlowRegistry,
    FlowStep,
    PromptRenderError,
    RunInputError,
    UnknownStep,
    parse_flow,
    parse_template,
    render_prompt,
)
from flowstudio.flows.definitions import InputPlaceholder, StepPromptPlaceholder


@pytest.fixture(scope="module")
def registry() -> FlowRegistry:
    return FlowRegistry.load()


def make_flow(**overrides: object) -> FlowDefinition:
    data: dict[str, object] = {
        "slug": "demo",
        "title": "Demo",
        "inputs": (
            FlowInput(name="subject", label="Subject", default="a fox"),
            FlowInput(name="mood", label="Mood", required=False),
            FlowInput(name="notes", label="Notes", required=True),
        ),
        "steps": (FlowStep(id="a", prompt="{subject} {mood} {notes}"),),
    }
    data.update(overrides)
    return FlowDefinition.model_validate(data)


class TestGraph:
    def test_product_shot(self, registry: FlowRegistry) -> None:
        flow = registry.get("product-shot")
        assert flow.step_ids() == ["object", "scene", "poster"]
        assert flow.downstream_of("object") == ["scene", "poster"]
        assert flow.downstream_of("scene") == ["poster"]
        assert flow.downstream_of("poster") == []
        assert flow.upstream_of("object") == []
        assert flow.upstream_of("scene") == ["object"]

    def test_diamond(self, registry: FlowRegistry) -> None:
        flow = registry.get("character-sheet")
        assert flow.step_ids() == ["character", "pose", "outfit", "sheet"]
        assert flow.downstream_of("character") == ["pose", "outfit", "sheet"]
        assert flow.downstream_of("pose") == ["sheet"]
        assert flow.downstream_of("outfit") == ["sheet"]
        assert flow.downstream_of("sheet") == []
        assert flow.upstream_of("sheet") == ["pose", "outfit"]

    def test_transitive_and_unrelated_steps(self) -> None:
        flow = parse_flow(
            """
slug = "g"
title = "G"
[[steps]]
id = "a"
prompt = "p"
[[steps]]
id = "b"
prompt = "p"
[[steps]]
id = "c"
inputs = ["a"]
prompt = "p"
[[steps]]
id = "d"
inputs = ["b"]
prompt = "p"
[[steps]]
id = "e"
inputs = ["c"]
prompt = "p"
""",
            source="g.toml",
        )
        assert flow.downstream_of("a") == ["c", "e"]
        assert flow.downstream_of("b") == ["d"]

    def test_unknown_step(self, registry: FlowRegistry) -> None:
        flow = registry.get("quick")
        with pytest.raises(UnknownStep) as info:
            flow.step("nope")
        assert isinstance(info.value, KeyError)
        assert str(info.value) == 'flow "quick" has no step "nope"'
        with pytest.raises(UnknownStep):
            flow.downstream_of("nope")
        with pytest.raises(UnknownStep):
            flow.upstream_of("nope")


class TestSnapshot:
    @pytest.mark.parametrize("slug", ["quick", "product-shot", "character-sheet"])
    def test_round_trip_bundled(self, registry: FlowRegistry, slug: str) -> None:
        flow = registry.get(slug)
        snapshot = flow.snapshot()
        through_json = json.loads(json.dumps(snapshot, allow_nan=False))
        assert through_json == snapshot
        rebuilt = FlowDefinition.from_snapshot(through_json)
        assert rebuilt == flow
        assert rebuilt.snapshot() == snapshot

    def test_round_trip_with_everything_set(self) -> None:
        flow = parse_flow(
            """
slug = "full"
title = "Full"
description = "d"
[[inputs]]
name = "x"
label = "X"
default = "dx"
required = false
multiline = true
[[steps]]
id = "a"
prompt = "{x} {{y}}"
provider = "other"
model = "m-1"
temperature = 0.25
size = "640x480"
seed = 7
options = { list = [1, 2.5, "s", true, { deep = [] }], empty = {} }
[[steps]]
id = "b"
inputs = ["a"]
prompt = "{steps.a.prompt}"
""",
            source="flows/full.toml",
        )
        snapshot = flow.snapshot()
        assert snapshot["source"] == "flows/full.toml"
        rebuilt = FlowDefinition.from_snapshot(json.loads(json.dumps(snapshot)))
        assert rebuilt == flow
        assert rebuilt.step("a").seed == 7
        assert rebuilt.step("a").options["list"][4] == {"deep": []}

    def test_snapshot_is_validated(self, registry: FlowRegistry) -> None:
        snapshot = registry.get("product-shot").snapshot()
        snapshot["steps"][1]["inputs"] = ["missing"]
        with pytest.raises(ValidationError, match='unknown step "missing"'):
            FlowDefinition.from_snapshot(snapshot)

    def test_unsupported_format(self, registry: FlowRegistry) -> None:
        snapshot = registry.get("quick").snapshot()
        snapshot["format"] = 99
        with pytest.raises(ValueError, match="format"):
            FlowDefinition.from_snapshot(snapshot)

    def test_models_are_frozen(self, registry: FlowRegistry) -> None:
        flow = registry.get("quick")
        with pytest.raises(ValidationError):
            flow.title = "changed"  # type: ignore[misc]
        with pytest.raises(ValidationError):
            flow.steps[0].prompt = "changed"  # type: ignore[misc]


class TestRenderPrompt:
    def step(self, prompt: str, inputs: tuple[str, ...] = ()) -> FlowStep:
        return FlowStep(id="s", prompt=prompt, inputs=inputs)

    def test_inputs_and_upstream_prompts(self) -> None:
        step = self.step("Put the {product} on {setting}; keep: {steps.object.prompt}", ("object",))
        rendered = render_prompt(
            step,
            inputs={"product": "mug", "setting": "a table"},
            upstream_prompts={"object": "Studio photo of mug"},
        )
        assert rendered == "Put the mug on a table; keep: Studio photo of mug"

    def test_escaped_braces(self) -> None:
        step = self.step("{{literal}} {x} }}{{ {{{x}}}")
        assert render_prompt(step, inputs={"x": "v"}, upstream_prompts={}) == ("{literal} v }{ {v}")

    def test_values_with_braces_are_inserted_verbatim(self) -> None:
        step = self.step("A {x} and {steps.a.prompt}", ("a",))
        rendered = render_prompt(
            step,
            inputs={"x": "{steps.a.prompt} {0} {{ } {"},
            upstream_prompts={"a": "{x} {__class__}"},
        )
        assert rendered == "A {steps.a.prompt} {0} {{ } { and {x} {__class__}"

    def test_missing_input_renders_empty(self) -> None:
        step = self.step("a {x}b")
        assert render_prompt(step, inputs={}, upstream_prompts={}) == "a b"

    def test_missing_upstream_prompt_raises(self) -> None:
        step = self.step("{steps.a.prompt}", ("a",))
        with pytest.raises(PromptRenderError, match='upstream step "a"'):
            render_prompt(step, inputs={}, upstream_prompts={})

    def test_bundled_prompts_render_with_defaults(self, registry: FlowRegistry) -> None:
        for flow in registry.all():
            values = flow.validate_run_inputs({})
            upstream: dict[str, str] = {}
            for step in flow.steps:
                rendered = render_prompt(step, inputs=values, upstream_prompts=upstream)
                assert rendered.strip()
                assert "{" not in rendered and "}" not in rendered
                upstream[step.id] = rendered

    def test_parse_template(self) -> None:
        assert parse_template("a {x} {{b}} {steps.s-1.prompt}") == (
            "a ",
            InputPlaceholder("x"),
            " {b} ",
            StepPromptPlaceholder("s-1"),
        )

    def test_model_rejects_bad_template(self) -> None:
        with pytest.raises(ValidationError):
            FlowStep(id="s", prompt="{oops")


class TestRunInputs:
    def test_defaults_and_trimming(self) -> None:
        flow = make_flow()
        assert flow.validate_run_inputs({"notes": "  hi  "}) == {
            "subject": "a fox",
            "mood": "",
            "notes": "hi",
        }

    def test_values_override_defaults_and_none_means_missing(self) -> None:
        flow = make_flow()
        values = flow.validate_run_inputs({"subject": "an owl", "mood": None, "notes": "n"})
        assert values == {"subject": "an owl", "mood": "", "notes": "n"}

    def test_required(self) -> None:
        flow = make_flow()
        with pytest.raises(RunInputError) as info:
            flow.validate_run_inputs({"subject": "   "})
        assert info.value.errors == [
            {"field": "subject", "message": "is required"},
            {"field": "notes", "message": "is required"},
        ]
        assert info.value.field == "subject"
        assert isinstance(info.value, ValueError)

    def test_unknown_and_non_string(self) -> None:
        flow = make_flow()
        with pytest.raises(RunInputError) as info:
            flow.validate_run_inputs({"subjekt": "x", "notes": 3})
        assert info.value.errors == [
            {"field": "subjekt", "message": "unknown input"},
            {"field": "notes", "message": "must be a string, not int"},
        ]
        assert 'input "subjekt": unknown input' in str(info.value)

    def test_too_long(self) -> None:
        flow = make_flow()
        assert flow.validate_run_inputs({"notes": "x" * 2000 + "   "})["notes"] == "x" * 2000
        with pytest.raises(RunInputError) as info:
            flow.validate_run_inputs({"notes": "x" * 2001})
        assert info.value.errors == [
            {"field": "notes", "message": "must be at most 2000 characters (got 2001)"}
        ]

    def test_nul_characters(self) -> None:
        with pytest.raises(RunInputError, match="NUL"):
            make_flow().validate_run_inputs({"notes": "a\x00b"})

    def test_braces_are_fine(self) -> None:
        values = make_flow().validate_run_inputs({"notes": "{steps.a.prompt} {{"})
        assert values["notes"] == "{steps.a.prompt} {{"

    def test_single_error_constructor(self) -> None:
        err = RunInputError("x", "is required")
        assert err.errors == [{"field": "x", "message": "is required"}]
        assert str(err) == 'input "x": is required'


class TestModelDefaults:
    def test_step_defaults(self) -> None:
        step = FlowStep(id="hero_shot-2", prompt="p")
        assert step.title == "Hero shot 2"
        assert (step.kind, step.provider, step.model) == ("generate", "local", "local-sketch")
        assert (step.temperature, step.size, step.seed, step.inputs) == (1.0, "1024x1024", None, ())

    def test_step_without_default_model(self) -> None:
        with pytest.raises(ValidationError):
            FlowStep(id="a", prompt="p", provider="acme")

    def test_input_label_default(self) -> None:
        assert FlowInput(name="main_subject").label == "Main subject"

    def test_kind_defaults_to_edit_when_inputs_are_listed(self) -> None:
        assert FlowStep(id="b", prompt="p", inputs=("a",)).kind == "edit"
        assert FlowStep(id="b", prompt="p", inputs=("a",), kind="generate").kind == "generate"

    def test_size_as_in_flow_files(self) -> None:
        step = FlowStep(id="a", prompt="p", size="640x480")
        assert (step.width, step.height) == (640, 480)


class TestModelErrors:
    """The models word their errors for flow files; the loader adds only file and line."""

    def test_custom_rule_messages(self) -> None:
        with pytest.raises(ValidationError) as info:
            FlowStep(id="a", prompt="p", temperature=2.5)
        (error,) = info.value.errors()
        assert error["type"] == "temperature_range"
        assert error["msg"] == '"temperature" must be between 0 and 2, got 2.5'

    def test_no_lax_coercion(self) -> None:
        with pytest.raises(ValidationError):
            FlowInput(name="a", required="yes")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            FlowStep(id="a", prompt="p", seed="4")  # type: ignore[arg-type]

    def test_flow_problems_are_located(self, registry: FlowRegistry) -> None:
        snapshot = registry.get("product-shot").snapshot()
        snapshot["steps"][1]["inputs"] = ["missing"]
        with pytest.raises(ValidationError) as info:
            FlowDefinition.from_snapshot(snapshot)
        (error,) = info.value.errors()
        assert error["type"] == "inconsistent_flow"
        assert error["ctx"]["loc"] == ("steps", 1, "inputs")

    def test_provider_without_default_model_points_at_the_provider(self) -> None:
        with pytest.raises(ValidationError) as info:
            FlowStep(id="a", prompt="p", provider="acme")
        (error,) = info.value.errors()
        assert error["ctx"]["loc"] == ("provider",)
        assert error["msg"].startswith('"model" is required for provider "acme"')
