"""Imports every table so the metadata is complete (Alembic and tests use this module)."""

from flowstudio.auth.models import ApiToken, LoginFailure, User, UserSession
from flowstudio.db import Base
from flowstudio.generations.models import Generation, ObjectDeletion, UserQueue
from flowstudio.runs.models import Run, RunStep

metadata = Base.metadata

__all__ = [
    "ApiToken",
    "Base",
    "Generation",
    "LoginFailure",
    "ObjectDeletion",
    "Run",
    "RunStep",
    "User",
    "UserQueue",
    "UserSession",
    "metadata",
]
