"""Loading flow files: the happy path and every validation error, with its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flowstudio.flows import FlowDefinitionError, FlowStep, load_flow_file, parse_flow

MARK = "# <-"


def write(tmp_path: Path, text: str, name: str = "my-flow.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def marked_line(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    marked = [n for n, line in enumerate(lines, start=1) if MARK in line]
    assert len(marked) == 1, "test TOML must mark exactly one line"
    return marked[0]


def load_error(tmp_path: Path, text: str) -> tuple[FlowDefinitionError, Path]:
    path = write(tmp_path, text)
    with pytest.raises(FlowDefinitionError) as info:
        load_flow_file(path)
    return info.value, path


def assert_error(tmp_path: Path, text: str, fragment: str) -> FlowDefinitionError:
    """Loading ``text`` fails on the line marked ``# <-`` with ``fragment`` in the reason."""
    err, path = load_error(tmp_path, text)
    assert fragment in err.reason, str(err)
    assert err.path == str(path)
    assert err.line == marked_line(path), str(err)
    assert str(err) == f"{path}:{err.line}: {err.reason}"
    return err


GOOD = """
slug = "product-shot"
title = "Product shot"
description = "Object, then a scene around it."

[[inputs]]
name = "product"
label = "Product"
default = "a ceramic coffee mug"

[[inputs]]
name = "setting"
required = false
multiline = true

[[steps]]
id = "object"
title = "Object"
kind = "generate"
prompt = "Studio photo of {product}, white background"
temperature = 0.7
size = "1024x768"
seed = 42
options = { quality = "high", tags = ["a", "b"], nested = { n = 1.5 } }

[[steps]]
id = "scene"
inputs = ["object"]
prompt = '''
Put the {product} on {setting}; keep: {steps.object.prompt} {{literal}}
'''
"""


class TestValidFile:
    def test_fields_and_defaults(self, tmp_path: Path) -> None:
        flow = load_flow_file(write(tmp_path, GOOD))
        assert flow.slug == "product-shot"
        assert flow.title == "Product shot"
        assert flow.description == "Object, then a scene around it."
        assert flow.source == str(tmp_path / "my-flow.toml")

        product, setting = flow.inputs
        assert (product.name, product.label, product.default) == (
            "product",
            "Product",
            "a ceramic coffee mug",
        )
        assert product.required is True and product.multiline is False
        assert (setting.label, setting.default, setting.required, setting.multiline) == (
            "Setting",
            None,
            False,
            True,
        )

        obj, scene = flow.steps
        assert obj == FlowStep(
            id="object",
            title="Object",
            kind="generate",
            prompt="Studio photo of {product}, white background",
            provider="local",
            model="local-sketch",
            temperature=0.7,
            width=1024,
            height=768,
            seed=42,
            inputs=(),
            options={"quality": "high", "tags": ["a", "b"], "nested": {"n": 1.5}},
        )
        assert obj.size == "1024x768"
        # kind defaults to "edit" when inputs are given; title derives from the id
        assert scene.kind == "edit"
        assert scene.title == "Scene"
        assert scene.inputs == ("object",)
        assert scene.image_inputs == ("object",)
        assert scene.temperature == 1.0
        assert (scene.width, scene.height, scene.seed, scene.options) == (1024, 1024, None, {})
        # multi-line prompts are trimmed
        assert scene.prompt == (
            "Put the {product} on {setting}; keep: {steps.object.prompt} {{literal}}"
        )

    def test_generate_step_with_inputs_is_a_dependency_only(self, tmp_path: Path) -> None:
        flow = load_flow_file(
            write(
                tmp_path,
                """
                slug = "chain"
                title = "Chain"
                [[steps]]
                id = "a"
                prompt = "a cat"
                [[steps]]
                id = "b"
                kind = "generate"
                inputs = ["a"]
                prompt = "a dog next to {steps.a.prompt}"
                """,
            )
        )
        b = flow.step("b")
        assert b.kind == "generate"
        assert b.inputs == ("a",)
        assert b.image_inputs == ()
        assert flow.downstream_of("a") == ["b"]

    def test_other_provider_with_explicit_model(self, tmp_path: Path) -> None:
        flow = load_flow_file(
            write(
                tmp_path,
                """
                slug = "x"
                title = "X"
                [[steps]]
                id = "a"
                prompt = "p"
                provider = "openai"
                model = "gpt-image-1"
                temperature = 2
                """,
            )
        )
        step = flow.step("a")
        assert (step.provider, step.model, step.temperature) == ("openai", "gpt-image-1", 2.0)
        assert isinstance(step.temperature, float)

    def test_parse_flow_uses_source_in_errors(self) -> None:
        with pytest.raises(FlowDefinitionError) as info:
            parse_flow('slug = "x"\ntitle = "X"\n', source="somewhere/x.toml")
        assert str(info.value).startswith("somewhere/x.toml:")
        assert "[[steps]]" in info.value.reason

    def test_utf8_bom_is_accepted(self, tmp_path: Path) -> None:
        path = tmp_path / "bom.toml"
        path.write_bytes(
            b'\xef\xbb\xbfslug = "x"\ntitle = "X"\n[[steps]]\nid = "a"\nprompt = "p"\n'
        )
        assert load_flow_file(path).slug == "x"


class TestSyntaxErrors:
    def test_syntax_error_has_file_and_line(self, tmp_path: Path) -> None:
        err = assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "unterminated  # <-
            """,
            "invalid TOML",
        )
        assert "column" in err.reason

    def test_syntax_error_later_in_file(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"

            [[steps]]
            id = "a"
            prompt = "p"
            temperature = = 1  # <-
            """,
            "invalid TOML",
        )

    def test_duplicate_key_is_a_syntax_error(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            prompt = "q"  # <-
            """,
            "invalid TOML",
        )

    def test_invalid_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.toml"
        path.write_bytes(b'slug = "x"\ntitle = "\xff"\n')
        with pytest.raises(FlowDefinitionError) as info:
            load_flow_file(path)
        assert info.value.line == 2
        assert "UTF-8" in info.value.reason

    def test_unreadable_path(self, tmp_path: Path) -> None:
        with pytest.raises(FlowDefinitionError) as info:
            load_flow_file(tmp_path / "missing.toml")
        assert "cannot read" in str(info.value)


class TestUnknownKeys:
    def test_top_level(self, tmp_path: Path) -> None:
        err = assert_error(
            tmp_path,
            """
            slug = "x"
            titel = "X"  # <-
            [[steps]]
            id = "a"
            prompt = "p"
            """,
            'unknown key "titel"',
        )
        assert 'did you mean "title"' in err.reason

    def test_top_level_table(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            [meta]  # <-
            author = "me"
            """,
            'unknown key "meta"',
        )

    def test_in_step(self, tmp_path: Path) -> None:
        err = assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            [[steps]]
            id = "b"
            promt = "p"  # <-
            """,
            'step "b": unknown key "promt"',
        )
        assert 'did you mean "prompt"' in err.reason

    def test_in_step_subtable(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            [steps.optionz]  # <-
            quality = "hd"
            """,
            'step "a": unknown key "optionz"',
        )

    def test_in_input(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[inputs]]
            name = "a"
            defualt = "v"  # <-
            [[steps]]
            id = "a"
            prompt = "{a}"
            """,
            'input "a": unknown key "defualt"',
        )


class TestTopLevelErrors:
    def test_bad_slug(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            title = "X"
            slug = "My Flow"  # <-
            [[steps]]
            id = "a"
            prompt = "p"
            """,
            'invalid slug "My Flow"',
        )

    def test_slug_wrong_type(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            title = "X"
            slug = 12  # <-
            [[steps]]
            id = "a"
            prompt = "p"
            """,
            '"slug" must be a string, not an integer',
        )

    def test_missing_title(self, tmp_path: Path) -> None:
        err, _ = load_error(
            tmp_path,
            """
            slug = "x"
            [[steps]]
            id = "a"
            prompt = "p"
            """,
        )
        assert err.reason == 'missing required key "title"'

    def test_no_steps(self, tmp_path: Path) -> None:
        err, _ = load_error(tmp_path, 'slug = "x"\ntitle = "X"\n')
        assert "at least one [[steps]]" in err.reason

    def test_steps_must_be_array_of_tables(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [steps]  # <-
            id = "a"
            prompt = "p"
            """,
            '"steps" must be an array of tables',
        )


class TestInputErrors:
    def test_bad_name(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[inputs]]
            name = "Product"  # <-
            [[steps]]
            id = "a"
            prompt = "p"
            """,
            'invalid input name "Product"',
        )

    def test_duplicate_name(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[inputs]]
            name = "a"
            [[inputs]]
            label = "Again"
            name = "a"  # <-
            [[steps]]
            id = "a"
            prompt = "{a}"
            """,
            'input "a" is defined twice',
        )

    def test_required_must_be_bool(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[inputs]]
            name = "a"
            required = "yes"  # <-
            [[steps]]
            id = "a"
            prompt = "{a}"
            """,
            '"required" must be true or false, not a string',
        )

    def test_default_too_long(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            f"""
            slug = "x"
            title = "X"
            [[inputs]]
            name = "a"
            default = "{"y" * 2001}"  # <-
            [[steps]]
            id = "a"
            prompt = "{{a}}"
            """,
            "at most 2000 characters",
        )


class TestStepErrors:
    def test_bad_step_id(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            prompt = "p"
            id = "Scene 1"  # <-
            """,
            'invalid step id "Scene 1"',
        )

    def test_missing_id_points_at_the_step(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            [[steps]]  # <-
            prompt = "q"
            """,
            'step #2: missing required key "id"',
        )

    def test_missing_prompt_points_at_the_step_id(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            title = "A"
            id = "a"  # <-
            """,
            'step "a": missing required key "prompt"',
        )

    def test_duplicate_step_id(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            [[steps]]
            id = "b"
            prompt = "p"
            [[steps]]
            title = "Another A"
            id = "a"  # <-
            prompt = "p"
            """,
            'step "a": step id is used twice',
        )

    def test_unknown_input_step(self, tmp_path: Path) -> None:
        err = assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "object"
            prompt = "p"

            [[steps]]
            id = "scene"
            kind = "edit"
            inputs = ["objekt"]  # <-
            prompt = "p"
            """,
            "",
        )
        assert err.reason == 'step "scene": inputs references unknown step "objekt"'

    def test_later_input_step(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            inputs = ["b"]  # <-
            prompt = "p"
            [[steps]]
            id = "b"
            prompt = "p"
            """,
            'step "a": inputs references step "b", which comes later',
        )

    def test_self_input(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            inputs = ["a"]  # <-
            """,
            "cannot be its own input",
        )

    def test_duplicate_input(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            [[steps]]
            id = "b"
            prompt = "p"
            inputs = ["a", "a"]  # <-
            """,
            'inputs lists step "a" twice',
        )

    def test_inputs_must_be_strings(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            inputs = [1]  # <-
            """,
            '"inputs" must be an array of step ids',
        )

    def test_edit_without_inputs(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            kind = "edit"  # <-
            """,
            'step "a": edit steps need at least one step in inputs',
        )

    def test_unknown_kind(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            kind = "upscale"  # <-
            """,
            '"kind" must be "generate" or "edit"',
        )

    def test_unknown_placeholder(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[inputs]]
            name = "product"
            [[steps]]
            id = "a"
            prompt = "p"
            [[steps]]
            id = "b"
            inputs = ["a"]
            prompt = "photo of {prodcut}"  # <-
            """,
            'step "b": prompt uses unknown placeholder "{prodcut}" (run inputs: product)',
        )

    def test_placeholder_of_step_not_in_inputs(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            [[steps]]
            id = "b"
            prompt = "p"
            [[steps]]
            id = "c"
            inputs = ["b"]
            prompt = "like {steps.a.prompt}"  # <-
            """,
            'step "c": prompt uses "{steps.a.prompt}" but step "a" is not in this step\'s inputs',
        )

    @pytest.mark.parametrize(
        "prompt",
        ["{steps.a.image}", "{0}", "{}", "{ product }", "{product!r}", "{Product}"],
    )
    def test_malformed_placeholder(self, tmp_path: Path, prompt: str) -> None:
        assert_error(
            tmp_path,
            f"""
            slug = "x"
            title = "X"
            [[inputs]]
            name = "product"
            [[steps]]
            id = "a"
            prompt = '{prompt}'  # <-
            """,
            "invalid placeholder",
        )

    @pytest.mark.parametrize("prompt", ["open { brace", "close } brace", "{product"])
    def test_unbalanced_braces(self, tmp_path: Path, prompt: str) -> None:
        assert_error(
            tmp_path,
            f"""
            slug = "x"
            title = "X"
            [[inputs]]
            name = "product"
            [[steps]]
            id = "a"
            prompt = "{prompt}"  # <-
            """,
            "literal brace",
        )

    def test_error_in_multiline_prompt_points_at_prompt_key(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            '''
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = """  # <-
            id = "not-a-key"
            uses {nope}
            """
            ''',
            'step "a": prompt uses unknown placeholder "{nope}"',
        )

    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            ('"1024"', "WIDTHxHEIGHT"),
            ('"1024x"', "WIDTHxHEIGHT"),
            ('"32x1024"', "size width must be between 64 and 4096, got 32"),
            ('"1024x5000"', "size height must be between 64 and 4096, got 5000"),
            ("1024", '"size" must be a string'),
        ],
    )
    def test_invalid_size(self, tmp_path: Path, value: str, fragment: str) -> None:
        assert_error(
            tmp_path,
            f"""
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            size = {value}  # <-
            """,
            fragment,
        )

    @pytest.mark.parametrize("value", ["-0.1", "2.5", "nan", "inf"])
    def test_temperature_out_of_range(self, tmp_path: Path, value: str) -> None:
        assert_error(
            tmp_path,
            f"""
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            temperature = {value}  # <-
            """,
            '"temperature" must be between 0 and 2',
        )

    @pytest.mark.parametrize(
        ("key", "value", "fragment"),
        [
            ("temperature", '"hot"', '"temperature" must be a number, not a string'),
            ("temperature", "true", '"temperature" must be a number, not a boolean'),
            ("seed", "1.5", '"seed" must be an integer, not a float'),
            ("seed", "-1", '"seed" must be >= 0'),
            ("title", "3", '"title" must be a string, not an integer'),
            ("prompt", '["a"]', '"prompt" must be a string, not an array'),
            ("provider", '"Open AI"', 'invalid provider name "Open AI"'),
            ("model", '""', '"model" must not be empty'),
            ("options", '"fast"', '"options" must be a table, not a string'),
            ("options", "{ when = 2024-01-01 }", "options.when: date values are not allowed"),
            ("options", "{ x = nan }", "options.x: non-finite numbers are not allowed"),
        ],
    )
    def test_wrong_types_and_values(
        self, tmp_path: Path, key: str, value: str, fragment: str
    ) -> None:
        lines = ['id = "a"', 'prompt = "p"']
        lines = [line for line in lines if not line.startswith(f"{key} ")]
        body = "\n".join(lines)
        assert_error(
            tmp_path,
            f'slug = "x"\ntitle = "X"\n[[steps]]\n{body}\n{key} = {value}  # <-\n',
            f'step "a": {fragment}',
        )

    def test_provider_without_default_model(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            provider = "acme"  # <-
            """,
            '"model" is required for provider "acme"',
        )

    def test_inline_array_of_steps_falls_back_to_id_search(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            steps = [
              { id = "a", prompt = "p" },
              { id = "b", prompt = "p", kind = "edit" },  # <-
            ]
            """,
            'step "b": edit steps need at least one step in inputs',
        )

    def test_error_points_at_the_right_one_of_similar_steps(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            size = "512x512"
            [steps.options]
            size = "ignored"
            [[steps]]
            id = "b"
            prompt = "p"
            size = "512x512"
            [[steps]]
            id = "c"
            prompt = "p"
            size = "512x10"  # <-
            """,
            'step "c": size height',
        )


class TestErrorsFromTheModels:
    """The models' validators decide what is wrong; the loader only locates and words it."""

    def test_misspelt_key_is_reported_before_the_error_it_causes(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            provider = "acme"
            modle = "m-1"  # <-
            """,
            'step "a": unknown key "modle" (did you mean "model"?)',
        )

    def test_source_is_not_a_file_key(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            source = "elsewhere"  # <-
            [[steps]]
            id = "a"
            prompt = "p"
            """,
            'unknown key "source"',
        )

    def test_empty_slug(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "  "  # <-
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            """,
            '"slug" must not be empty',
        )

    def test_quoted_braces_survive_in_messages(self, tmp_path: Path) -> None:
        err = assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "{loc} {message}"  # <-
            """,
            "",
        )
        assert err.reason == 'step "a": prompt uses unknown placeholder "{loc}" (run inputs: none)'

    def test_size_and_width_together(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            width = 512
            size = "512x512"  # <-
            """,
            'step "a": set either "size" or "width" and "height"',
        )

    def test_whole_number_temperature_is_quoted_as_written(self, tmp_path: Path) -> None:
        assert_error(
            tmp_path,
            """
            slug = "x"
            title = "X"
            [[steps]]
            id = "a"
            prompt = "p"
            temperature = 3  # <-
            """,
            '"temperature" must be between 0 and 2, got 3',
        )
