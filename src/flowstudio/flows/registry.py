"""The set of flows a FlowStudio instance offers: bundled flows plus user directories."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path

from .definitions import FlowDefinition, FlowError
from .loader import FlowDefinitionError, load_flow_file, parse_flow, top_level_key_line

__all__ = [
    "BUNDLED_SOURCE_PREFIX",
    "FlowDirectoryError",
    "FlowRegistry",
    "UnknownFlow",
    "load_bundled_flows",
    "load_flow_dir",
]

BUNDLED_SOURCE_PREFIX = "bundled:"


class UnknownFlow(KeyError):
    """A flow slug that is not in the registry."""

    def __init__(self, slug: str) -> None:
        super().__init__(slug)
        self.slug = slug

    def __str__(self) -> str:
        return f'unknown flow "{self.slug}"'


class FlowDirectoryError(FlowError):
    """A configured flow directory that does not exist or is not a directory."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"flow directory {path}: {reason}")


def load_bundled_flows() -> list[FlowDefinition]:
    """The flows shipped inside the package, ordered by file name."""
    folder = resources.files(__package__).joinpath("bundled")
    flows = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml") and entry.is_file():
            text = entry.read_bytes().decode("utf-8")
            flows.append(parse_flow(text, source=BUNDLED_SOURCE_PREFIX + entry.name))
    return flows


def load_flow_dir(directory: Path) -> list[FlowDefinition]:
    """Every ``*.toml`` file directly inside ``directory``, ordered by file name."""
    directory = Path(directory)
    if not directory.exists():
        raise FlowDirectoryError(directory, "does not exist")
    if not directory.is_dir():
        raise FlowDirectoryError(directory, "is not a directory")
    files = sorted(p for p in directory.glob("*.toml") if p.is_file())
    return [load_flow_file(path) for path in files]


class FlowRegistry:
    """An immutable slug -> :class:`FlowDefinition` lookup."""

    def __init__(self, flows: Iterable[FlowDefinition] = ()) -> None:
        self._flows: dict[str, FlowDefinition] = {}
        for flow in flows:
            existing = self._flows.get(flow.slug)
            if existing is not None:
                raise _duplicate_slug_error(flow, existing)
            self._flows[flow.slug] = flow

    @classmethod
    def load(cls, *, extra_dirs: Sequence[Path] = ()) -> FlowRegistry:
        """Bundled flows plus every ``*.toml`` file in ``extra_dirs``.

        Raises :class:`FlowDirectoryError` for a missing directory and
        :class:`FlowDefinitionError` for an invalid file or a slug defined twice.
        """
        flows = load_bundled_flows()
        for directory in extra_dirs:
            flows.extend(load_flow_dir(Path(directory)))
        return cls(flows)

    def get(self, slug: str) -> FlowDefinition:
        try:
            return self._flows[slug]
        except KeyError:
            raise UnknownFlow(slug) from None

    def all(self) -> list[FlowDefinition]:
        """All flows, sorted by title (then slug)."""
        return sorted(self._flows.values(), key=lambda f: (f.title.casefold(), f.slug))

    def slugs(self) -> list[str]:
        return [flow.slug for flow in self.all()]

    def __contains__(self, slug: object) -> bool:
        return slug in self._flows

    def __len__(self) -> int:
        return len(self._flows)

    def __iter__(self) -> Iterator[FlowDefinition]:
        return iter(self.all())

    def __repr__(self) -> str:
        return f"FlowRegistry({sorted(self._flows)!r})"


def _duplicate_slug_error(flow: FlowDefinition, existing: FlowDefinition) -> FlowDefinitionError:
    line = None
    if not flow.source.startswith(BUNDLED_SOURCE_PREFIX):
        try:
            line = top_level_key_line(Path(flow.source).read_text("utf-8"), "slug")
        except (OSError, UnicodeDecodeError):
            line = None
    return FlowDefinitionError(
        flow.source or "<flow>",
        line,
        f'slug "{flow.slug}" is already defined in {existing.source or "another flow"}',
    )
