"""The command line: start-up refuses invalid flow files with file, line and reason."""

from __future__ import annotations

from typer.testing import CliRunner

from flowstudio.cli import app as cli


def test_serve_refuses_an_invalid_flow_file(tmp_path, monkeypatch):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "bad.toml").write_text(
        'slug = "bad"\ntitle = "Bad"\n[[steps]]\nid = "a"\nprompt = "{nope}"\n'
    )
    monkeypatch.setenv("FLOWSTUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLOWSTUDIO_FLOWS_DIR", str(flows))
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2
    assert "bad.toml:5" in result.output and "nope" in result.output


def test_serve_help_documents_settings():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for name in (
        "FLOWSTUDIO_DATABASE_URL",
        "FLOWSTUDIO_STORAGE_URL",
        "FLOWSTUDIO_DATA_DIR",
        "FLOWSTUDIO_SECRET_KEY",
        "FLOWSTUDIO_REGISTRATION",
        "FLOWSTUDIO_TRASH_DAYS",
    ):
        assert name in result.output
