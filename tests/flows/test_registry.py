"""The flow registry: bundled flows, extra directories, duplicates."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowstudio.flows import (
    FlowDefinitionError,
    FlowDirectoryError,
    FlowRegistry,
    UnknownFlow,
    load_bundled_flows,
)

BUNDLED = {"quick", "product-shot", "character-sheet", "product-shot-openai"}
# Flows that show how to use a real provider; every other bundled flow runs on `local`.
REAL_PROVIDER_FLOWS = {"product-shot-openai"}


def flow_toml(slug: str, title: str | None = None) -> str:
    return (
        f'# a user flow\nslug = "{slug}"\ntitle = "{title or slug.title()}"\n\n'
        '[[steps]]\nid = "only"\nprompt = "a picture"\n'
    )


class TestBundled:
    def test_all_bundled_flows_load(self) -> None:
        flows = load_bundled_flows()
        assert {f.slug for f in flows} == BUNDLED
        for flow in flows:
            assert flow.source == f"bundled:{flow.slug}.toml"
            assert flow.title and flow.description
            if flow.slug in REAL_PROVIDER_FLOWS:
                assert all(step.provider != "local" for step in flow.steps)
                continue
            for step in flow.steps:
                assert step.provider == "local"
                assert step.model in ("local-sketch", "local-poster")

    def test_quick(self) -> None:
        flow = FlowRegistry.load().get("quick")
        (prompt,) = flow.inputs
        assert (prompt.name, prompt.multiline, prompt.required) == ("prompt", True, True)
        (step,) = flow.steps
        assert step.kind == "generate" and step.prompt == "{prompt}"

    def test_product_shot(self) -> None:
        flow = FlowRegistry.load().get("product-shot")
        assert [i.name for i in flow.inputs] == ["product", "setting", "headline"]
        assert [(s.id, s.kind) for s in flow.steps] == [
            ("object", "generate"),
            ("scene", "edit"),
            ("poster", "edit"),
        ]
        assert flow.step("poster").inputs == ("scene", "object")
        assert flow.step("poster").model == "local-poster"

    def test_character_sheet_is_a_diamond(self) -> None:
        flow = FlowRegistry.load().get("character-sheet")
        assert flow.step("pose").inputs == ("character",)
        assert flow.step("outfit").inputs == ("character",)
        assert flow.step("sheet").inputs == ("pose", "outfit")


class TestRegistry:
    def test_lookup(self) -> None:
        registry = FlowRegistry.load()
        assert len(registry) == len(BUNDLED)
        assert "quick" in registry
        assert "nope" not in registry
        assert registry.get("quick").slug == "quick"
        with pytest.raises(UnknownFlow) as info:
            registry.get("nope")
        assert isinstance(info.value, KeyError)
        assert str(info.value) == 'unknown flow "nope"'

    def test_all_sorted_by_title(self, tmp_path: Path) -> None:
        (tmp_path / "a.toml").write_text(flow_toml("zz-first", "aardvark"))
        registry = FlowRegistry.load(extra_dirs=[tmp_path])
        titles = [f.title for f in registry.all()]
        assert titles == sorted(titles, key=str.casefold)
        assert titles[0] == "aardvark"

    def test_extra_dir_adds_flows(self, tmp_path: Path) -> None:
        (tmp_path / "mine.toml").write_text(flow_toml("mine"))
        (tmp_path / "theirs.toml").write_text(flow_toml("theirs"))
        (tmp_path / "notes.txt").write_text("not a flow")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "nested.toml").write_text(flow_toml("nested"))
        registry = FlowRegistry.load(extra_dirs=[tmp_path])
        assert len(registry) == len(BUNDLED) + 2
        assert registry.get("mine").source == str(tmp_path / "mine.toml")
        assert "nested" not in registry

    def test_several_extra_dirs(self, tmp_path: Path) -> None:
        one, two = tmp_path / "one", tmp_path / "two"
        one.mkdir()
        two.mkdir()
        (one / "a.toml").write_text(flow_toml("a"))
        (two / "b.toml").write_text(flow_toml("b"))
        assert {"a", "b"} <= set(FlowRegistry.load(extra_dirs=[one, two]).slugs())

    def test_duplicate_slug_across_files(self, tmp_path: Path) -> None:
        (tmp_path / "a.toml").write_text(flow_toml("same"))
        (tmp_path / "b.toml").write_text(flow_toml("same"))
        with pytest.raises(FlowDefinitionError) as info:
            FlowRegistry.load(extra_dirs=[tmp_path])
        message = str(info.value)
        assert message.startswith(f"{tmp_path / 'b.toml'}:2: ")
        assert str(tmp_path / "a.toml") in message
        assert 'slug "same" is already defined' in message

    def test_duplicate_of_bundled_slug(self, tmp_path: Path) -> None:
        (tmp_path / "quick.toml").write_text(flow_toml("quick"))
        with pytest.raises(FlowDefinitionError, match="already defined in bundled:quick.toml"):
            FlowRegistry.load(extra_dirs=[tmp_path])

    def test_missing_dir(self, tmp_path: Path) -> None:
        missing = tmp_path / "does-not-exist"
        with pytest.raises(FlowDirectoryError) as info:
            FlowRegistry.load(extra_dirs=[missing])
        assert str(info.value) == f"flow directory {missing}: does not exist"

    def test_file_instead_of_dir(self, tmp_path: Path) -> None:
        path = tmp_path / "flow.toml"
        path.write_text(flow_toml("x"))
        with pytest.raises(FlowDirectoryError, match="is not a directory"):
            FlowRegistry.load(extra_dirs=[path])

    def test_invalid_file_in_extra_dir(self, tmp_path: Path) -> None:
        (tmp_path / "broken.toml").write_text('slug = "x"\ntitle = "X"\n[[steps]]\nid = "a"\n')
        with pytest.raises(FlowDefinitionError) as info:
            FlowRegistry.load(extra_dirs=[tmp_path])
        assert info.value.path == str(tmp_path / "broken.toml")
        assert info.value.line == 4

    def test_empty_extra_dir(self, tmp_path: Path) -> None:
        assert len(FlowRegistry.load(extra_dirs=[tmp_path])) == len(BUNDLED)
