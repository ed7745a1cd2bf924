#!/usr/bin/env bash
# Collects the pages' messages (templates, ES modules, bundled flows) into the catalogues in
# src/flowstudio/i18n/catalogues/: new messages arrive untranslated, gone ones are dropped.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" --dev
exec uv run --frozen python -m flowstudio.i18n.extract "$@"
