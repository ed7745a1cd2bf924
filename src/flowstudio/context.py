"""What one running FlowStudio process holds: settings, database, storage, providers, flows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from flowstudio.auth.service import AuthService
from flowstudio.config import Settings
from flowstudio.db import Reads
from flowstudio.generations.events import EventBus
from flowstudio.pagination import CursorCodec
from flowstudio.storage import ObjectStore

if TYPE_CHECKING:
    from flowstudio.flows import FlowRegistry
    from flowstudio.providers import ProviderRegistry


@dataclass
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # The same engine for requests that only read (GET): no write lock on SQLite.
    read_sessions: async_sessionmaker[AsyncSession]
    # Whole read-only units of Core statements in one go (history pages).
    reads: Reads
    store: ObjectStore
    auth: AuthService
    flows: FlowRegistry
    providers: ProviderRegistry
    bus: EventBus
    cursors: CursorCodec
