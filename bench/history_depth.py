"""History depth: `GET /api/history` latency against keyset depth on a 1M-generation database.

    uv run python -m bench.history_depth --backend sqlite|postgres|both \
        [--rows 1000000] [--heavy 200000] [--users 1000] [--requests 200] [--refill]

1. Fills a fresh database (SQLite: bench/data/history_depth.sqlite3; PostgreSQL: database
   `flowstudio_bench`, dropped and recreated) migrated with `flowstudio.migrate.upgrade_sync`:
   `--rows` generations over `--users` users, one heavy user (an API-driven catalog pipeline,
   almost only product-shot runs) with `--heavy` of them, in runs with run_steps, over a year.
   A filled database with the same parameters is reused unless `--refill`.
2. Gives the heavy user an API token and starts `flowstudio serve --no-worker` on a free
   loopback port.
3. Times `GET /api/history?limit=50` (sequential keep-alive requests after a warm-up) for the
   heavy user at depths 0, 5 %, 50 % and 95 % of `--heavy` (0 / 10k / 100k / 190k by default),
   plain, with `flow=product-shot`, with `q=<word>` (Latin, common) and with `q=<cjk>` (two
   Chinese characters, in Simplified; a fifth of the runs are written in Chinese, half of them
   in Traditional characters, which the search folds); each depth's cursor is the signed
   position of the last row of the previous page in that (filtered) order. Each response is
   checked to start at the expected row. The same pages are also timed in-process through
   `repository.history_rows` (the query and its rows, no HTTP).
4. Records EXPLAIN (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: EXPLAIN ANALYZE, plus the plan of a
   prepared statement after six executions, as the server's statement cache sees it) of the
   list query at the deepest depth, and writes bench/results/history_depth_<backend>.json.

Targets: p50 <= 5 ms at every depth, and deepest / first p50 <= 1.2.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.client
import json
import os
import random
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import sqlalchemy
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import and_, event, func, select, text

from bench.common import percentile, record
from flowstudio.auth.models import ApiToken, User
from flowstudio.auth.security import new_api_token, token_hash
from flowstudio.db import Reads, create_engine, session_factory
from flowstudio.flows import FlowRegistry
from flowstudio.flows.definitions import render_prompt
from flowstudio.generations import history_json, maintenance, repository
from flowstudio.generations.models import Generation
from flowstudio.generations.repository import HistoryFilters
from flowstudio.i18n.search import Term, index_text, search_terms
from flowstudio.migrate import upgrade_sync
from flowstudio.pagination import CursorCodec, Position
from flowstudio.runs.models import Run, RunStep

console = Console() if sys.stdout.isatty() else Console(width=140)

DATA = Path(__file__).parent / "data"
SQLITE_PATH = DATA / "history_depth.sqlite3"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DATABASE = "flowstudio_bench"
TOKEN_NAME = "history-depth-bench"
HEAVY_EMAIL = "heavy@bench.example"
LIMIT = 50
DEPTH_FRACTIONS = (0.0, 0.05, 0.5, 0.95)
TARGET_P50_MS = 5.0
TARGET_RATIO = 1.2
FORMAT_VERSION = 2  # bump when the generated data changes (2: Chinese prompts, search_text)

# -- vocabulary --------------------------------------------------------------------------------

MATERIALS = [
    "matte black ceramic",
    "brushed steel",
    "walnut wood",
    "recycled plastic",
    "frosted glass",
    "terracotta",
    "hand-blown glass",
    "copper",
    "bamboo",
    "white marble",
    "olive green enamel",
    "soft pink silicone",
    "raw concrete",
    "anodised aluminium",
    "cork",
    "speckled stoneware",
    "vegan leather",
    "translucent amber",
    "powder blue porcelain",
    "oak and brass",
]
OBJECTS = [
    "coffee mug",
    "teapot",
    "desk lamp",
    "sneaker",
    "backpack",
    "wristwatch",
    "headphones",
    "water bottle",
    "scented candle",
    "perfume bottle",
    "sunglasses",
    "flower vase",
    "wallet",
    "espresso machine",
    "table fan",
    "bluetooth speaker",
    "yoga mat",
    "chef knife",
    "cutting board",
    "wine glass",
    "tote bag",
    "notebook",
    "fountain pen",
    "skateboard",
    "instant camera",
    "hand cream tube",
    "face serum dropper",
    "bicycle helmet",
    "kettle",
    "toaster",
    "phone case",
    "mechanical keyboard",
    "planter",
    "salad bowl",
    "lunch box",
    "thermos flask",
    "hair dryer",
    "electric toothbrush",
    "dog collar",
    "board game box",
]
SURFACES = [
    "a sunlit oak kitchen counter",
    "a wet slate rock beside a mountain stream",
    "a marble bathroom shelf",
    "a weathered picnic table",
    "a glossy black studio plinth",
    "a rattan tray on a balcony",
    "a concrete ledge in a city loft",
    "a mossy forest floor",
    "a sandy beach towel",
    "a cluttered workshop bench",
    "a snowy windowsill",
    "a velvet display cushion",
    "a desert stone slab",
    "a bright kids' playroom rug",
]
DETAILS = [
    "a linen cloth and soft morning light",
    "scattered coffee beans and long shadows",
    "lush ferns and dappled sunlight",
    "neon reflections after rain",
    "warm candlelight",
    "pastel paper shapes and hard flash",
    "frost crystals and cold blue light",
    "ripe lemons and midday sun",
    "drifting steam and golden hour glow",
    "dried flowers",
]
HEADLINES = [
    "Made for slow mornings",
    "Built to last",
    "Carry less, live more",
    "Pure by design",
    "Your daily ritual",
    "Engineered for calm",
    "Small joys, every day",
    "Less noise",
    "Take it anywhere",
    "Crafted by hand",
    "New season, new colours",
    "Light as air",
]
CREATURES = [
    "red panda",
    "otter",
    "fox",
    "axolotl",
    "raccoon",
    "hedgehog",
    "owl",
    "capybara",
    "corgi",
    "tortoise",
    "lynx",
    "pangolin",
    "octopus",
    "koala",
    "barn cat",
    "snow leopard",
]
ROLES = [
    "mechanic",
    "astronaut",
    "wizard",
    "baker",
    "detective",
    "pirate captain",
    "botanist",
    "samurai",
    "librarian",
    "blacksmith",
    "courier",
    "deep-sea diver",
    "knight",
    "DJ",
]
ACCESSORIES = [
    "oversized brass goggles and a tool belt",
    "a patched leather satchel",
    "a glowing lantern",
    "a tiny wooden shield",
    "a bandolier of potion vials",
    "a striped scarf",
    "round spectacles and a pocket watch",
    "a jetpack",
    "a paper map",
]
STYLES = [
    "flat-colour cel-shaded illustration with clean outlines",
    "soft watercolour",
    "gouache storybook painting",
    "crisp vector art",
    "pixel art",
    "charcoal sketch",
    "3D clay render",
    "ink and wash",
    "retro comic book style",
    "studio ghibli inspired",
]
OUTFITS = [
    "a puffy winter parka with a fur-lined hood, mittens and snow boots",
    "a formal tuxedo with a bow tie",
    "a hiking outfit with a rain poncho",
    "a summer kimono with sandals",
    "a space suit with mission patches",
    "a chef's whites and tall hat",
    "a knitted sweater and corduroy trousers",
]
SUBJECTS = [
    "A lighthouse on a rocky coast",
    "An old tram",
    "A zeppelin",
    "A cosy reading nook",
    "A koi pond",
    "A floating island",
    "A ramen stall",
    "A vintage motorcycle",
    "A greenhouse full of orchids",
    "A snowy cabin",
    "A lone astronaut",
    "A night market",
    "A giant tortoise",
    "A windmill",
    "A treehouse village",
    "A steam locomotive",
    "A hot air balloon",
    "A bonsai tree",
    "A sailing boat",
    "A robot gardener",
]
PLACES = [
    "at dusk",
    "in heavy fog",
    "under the northern lights",
    "on a rainy street in Tokyo",
    "in a sunflower field",
    "on the surface of Mars",
    "in a misty bamboo forest",
    "at golden hour",
    "in a snowstorm",
    "by a turquoise lagoon",
    "in a neon-lit alley",
]
LIGHTS = [
    "warm light glowing in its windows",
    "dramatic rim lighting",
    "soft diffused light",
    "long cinematic shadows",
    "moonlight",
    "volumetric god rays",
    "candle glow",
]
QUICK_STYLES = [
    "painterly",
    "photorealistic",
    "isometric",
    "oil on canvas",
    "35mm film photo",
    "ukiyo-e woodblock print",
    "low-poly",
    "matte painting",
    "polaroid",
    "tilt-shift",
]
ERRORS = [
    ("provider_unavailable", "The provider did not answer in time; retries exhausted."),
    ("provider_error", "The provider returned an unusable image: cannot identify image file"),
    ("content_policy", "The provider refused the prompt (content policy)."),
    ("timeout", "The generation did not finish within 120 seconds."),
]

# Light users' flow mix; the heavy user is an API-driven product catalog pipeline.
LIGHT_MIX = (("quick", 45), ("product-shot", 35), ("character-sheet", 20))
HEAVY_MIX = (("product-shot", 975), ("quick", 20), ("character-sheet", 5))

GEN_COLUMNS = (
    "id",
    "user_id",
    "run_id",
    "step_id",
    "flow_slug",
    "batch_id",
    "batch_index",
    "source",
    "status",
    "prompt",
    "search_text",
    "params",
    "temperature",
    "seed",
    "provider",
    "model",
    "provider_request_id",
    "object_key",
    "thumbnail_key",
    "mime",
    "width",
    "height",
    "size_bytes",
    "sha256",
    "output",
    "error_code",
    "error_message",
    "attempts",
    "idempotency_key",
    "lease_owner",
    "lease_expires_at",
    "next_attempt_at",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "deleted_at",
)
USER_COLUMNS = ("id", "email", "password_hash", "is_admin", "created_at", "disabled_at")
RUN_COLUMNS = (
    "id",
    "user_id",
    "flow_slug",
    "flow_snapshot",
    "title",
    "inputs",
    "created_at",
    "updated_at",
    "deleted_at",
)
RUN_STEP_COLUMNS = ("run_id", "step_id", "adopted_generation_id", "invalidated_at", "updated_at")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = 1_000_000
DAY = 86_400 * SECOND


def ts_sqlite(us: int) -> str:
    """What flowstudio.db.UTCDateTime stores on SQLite: naive UTC text with microseconds."""
    return (
        (EPOCH + timedelta(microseconds=us))
        .replace(tzinfo=None)
        .isoformat(sep=" ", timespec="microseconds")
    )


def ts_postgres(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def hyphenated(value: int) -> str:
    return str(uuid.UUID(int=value))


class Uuid7:
    """UUIDv7 from a given time (same layout as flowstudio.ids.uuid7), increasing per ms."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._last_ms = -1
        self._counter = 0

    def at(self, us: int) -> int:
        ms = us // 1000
        if ms > self._last_ms:
            self._last_ms, self._counter = ms, self._rng.getrandbits(9)
        else:
            ms = self._last_ms
            self._counter += 1
            if self._counter > 0xFFF:
                self._last_ms = ms = ms + 1
                self._counter = 0
        return (
            (ms << 80)
            | (0x7 << 76)
            | (self._counter << 64)
            | (0b10 << 62)
            | self._rng.getrandbits(62)
        )

    def loose(self, us: int) -> int:
        """An id for a row created at `us` outside the generation stream (runs, users)."""
        return (
            (us // 1000) << 80
            | (0x7 << 76)
            | (self._rng.getrandbits(12) << 64)
            | (0b10 << 62)
            | self._rng.getrandbits(62)
        )


# -- the dataset -------------------------------------------------------------------------------


@dataclass
class RunPlan:
    id: int
    user: int
    slug: str
    inputs: dict[str, str]
    prompts: list[str]
    batches: list[tuple[int, int]]  # (step position, candidates)
    search_texts: list[str] = field(default_factory=list)
    created_us: int = 0
    updated_us: int = 0


@dataclass
class Plan:
    user_ids: list[int]
    user_created: list[int]
    heavy: int  # index into user_ids
    runs: list[RunPlan]
    batches: list[tuple[int, int, int, int]]  # (created_us, run index, step position, n)
    end_us: int
    flows: dict[str, Any] = field(default_factory=dict)


def _weighted(rng: random.Random, mix: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([m[0] for m in mix], weights=[m[1] for m in mix])[0]


def _inputs(rng: random.Random, slug: str) -> dict[str, str]:
    if slug == "product-shot":
        return {
            "product": f"a {rng.choice(MATERIALS)} {rng.choice(OBJECTS)}",
            "setting": f"{rng.choice(SURFACES)} with {rng.choice(DETAILS)}",
            "headline": rng.choice(HEADLINES),
        }
    if slug == "character-sheet":
        return {
            "character": f"a {rng.choice(['cheerful', 'grumpy', 'sleepy', 'brave', 'shy'])} "
            f"{rng.choice(CREATURES)} {rng.choice(ROLES)} with "
            f"{rng.choice(ACCESSORIES)}",
            "style": rng.choice(STYLES),
            "outfit": rng.choice(OUTFITS),
        }
    return {
        "prompt": f"{rng.choice(SUBJECTS)} {rng.choice(PLACES)}, {rng.choice(LIGHTS)}, "
        f"{rng.choice(QUICK_STYLES)}"
    }


# About a fifth of the runs are written in Chinese, half of them in Traditional characters.
CHINESE_SHARE = 0.2
MATERIALS_ZH = [
    "陶瓷",
    "玻璃",
    "黄铜",
    "胡桃木",
    "亚麻",
    "皮革",
    "竹编",
    "不锈钢",
    "大理石",
    "羊毛",
]
OBJECTS_ZH = [
    "茶壶",
    "台灯",
    "背包",
    "手表",
    "香水瓶",
    "耳机",
    "马克杯",
    "花瓶",
    "运动鞋",
    "蓝牙音箱",
    "保温杯",
    "书架",
    "钢笔",
    "墨镜",
    "陶瓷碗",
    "雨伞",
]
SURFACES_ZH = ["木桌", "大理石台面", "窗台", "草地", "沙滩", "书桌", "水泥地", "丝绸布"]
DETAILS_ZH = ["清晨的阳光", "柔和的阴影", "几片落叶", "一杯咖啡", "水滴", "薄雾", "霓虹灯光"]
HEADLINES_ZH = ["新品上市", "限时优惠", "匠心之作", "简约生活", "为你而来", "夏日特惠"]


@functools.cache
def _to_traditional() -> Any:
    import opencc

    return opencc.OpenCC("s2twp")


def _chinese_prompts(rng: random.Random, steps: int) -> list[str]:
    """A run's prompts in Chinese (half of them in Taiwan's Traditional characters)."""
    material, thing = rng.choice(MATERIALS_ZH), rng.choice(OBJECTS_ZH)
    colour = rng.choice(["红色", "白色", "黑色", "蓝色", "墨绿色", "米色"])
    templates = [
        f"一只{colour}的{material}{thing}，纯白背景，柔和的影棚灯光，产品摄影",
        f"把图中的{thing}放在{rng.choice(SURFACES_ZH)}上，{rng.choice(DETAILS_ZH)}，"
        "保持产品原样，自然光",
        f"电商海报：{thing}，标题「{rng.choice(HEADLINES_ZH)}」，简洁排版，高级感",
        f"{thing}的细节特写，{rng.choice(DETAILS_ZH)}，浅景深",
    ]
    prompts = [templates[i % len(templates)] for i in range(steps)]
    if rng.random() < 0.5:
        prompts = [_to_traditional().convert(p) for p in prompts]
    return prompts


def _user_counts(rows: int, heavy: int, users: int, rng: random.Random) -> list[int]:
    rest = rows - heavy
    weights = [rng.lognormvariate(0, 0.9) for _ in range(users - 1)]
    total = sum(weights)
    counts = [max(1, int(rest * w / total)) for w in weights]
    drift = rest - sum(counts)
    i = 0
    while drift != 0:  # settle rounding so the total is exact
        step = 1 if drift > 0 else -1
        if counts[i % len(counts)] + step >= 1:
            counts[i % len(counts)] += step
            drift -= step
        i += 1
    return counts


def build_plan(rows: int, heavy: int, users: int, seed: int) -> Plan:
    rng = random.Random(seed)
    ids = Uuid7(rng)
    registry = FlowRegistry.load()
    flows = {slug: registry.get(slug) for slug in ("quick", "product-shot", "character-sheet")}
    end_us = (int(time.time()) // 3600 * 3600 - 3600) * SECOND
    start_us = end_us - 365 * DAY
    heavy_index = users // 3
    light = _user_counts(rows, heavy, users, rng)
    counts = light[:heavy_index] + [heavy] + light[heavy_index:]

    runs: list[RunPlan] = []
    batches: list[tuple[int, int, int, int]] = []
    user_ids, user_created = [], []
    for u, count in enumerate(counts):
        is_heavy = u == heavy_index
        active_from = start_us if is_heavy else start_us + int(rng.random() * 0.85 * 365 * DAY)
        created = active_from - rng.randint(SECOND, 3 * DAY)
        user_created.append(created)
        user_ids.append(ids.loose(created))
        own: list[RunPlan] = []
        remaining = count
        while remaining > 0:
            size = min(remaining, rng.randint(20, 80) if is_heavy else rng.randint(3, 40))
            remaining -= size
            slug = _weighted(rng, HEAVY_MIX if is_heavy else LIGHT_MIX)
            flow = flows[slug]
            inputs = _inputs(rng, slug)
            prompts: list[str] = []
            upstream: dict[str, str] = {}
            for step in flow.steps:
                prompt = render_prompt(step, inputs=inputs, upstream_prompts=upstream)
                upstream[step.id] = prompt
                prompts.append(prompt)
            weights = [2.0, 1.4, 1.0, 0.8][: len(flow.steps)]
            left, plan_batches = size, []
            for pos in range(len(flow.steps)):
                if left <= 0:
                    break
                share = (
                    left
                    if pos == len(flow.steps) - 1
                    else max(1, round(size * weights[pos] / sum(weights)))
                )
                share = min(share, left)
                left -= share
                while share > 0:
                    n = min(share, rng.choice((1, 2, 4, 4)))
                    plan_batches.append((pos, n))
                    share -= n
            if rng.random() < CHINESE_SHARE:
                prompts = _chinese_prompts(rng, len(flow.steps))
            run_plan = RunPlan(0, u, slug, inputs, prompts, plan_batches)
            run_plan.search_texts = [index_text(prompt) for prompt in prompts]
            own.append(run_plan)
        total_batches = sum(len(r.batches) for r in own)
        times = sorted(rng.randint(active_from, end_us) for _ in range(total_batches))
        i = 0
        for run in own:
            first = times[i]
            run.created_us = first - rng.randint(2 * SECOND, 120 * SECOND)
            run.id = ids.loose(run.created_us)
            run_index = len(runs)
            runs.append(run)
            for pos, n in run.batches:
                batches.append((times[i], run_index, pos, n))
                i += 1
            run.updated_us = times[i - 1]
    batches.sort()
    return Plan(user_ids, user_created, heavy_index, runs, batches, end_us, flows)


def _password_hash() -> str:
    from flowstudio.auth.security import PasswordHasher

    return PasswordHasher(time_cost=1, memory_cost=1024).hash(secrets.token_urlsafe(12))


def user_rows(plan: Plan, ts: Callable[[int], Any], false: Any) -> list[tuple]:
    pw = _password_hash()
    return [
        (
            f"{uid:032x}",
            HEAVY_EMAIL if i == plan.heavy else f"user{i:04d}@bench.example",
            pw,
            false,
            ts(plan.user_created[i]),
            None,
        )
        for i, uid in enumerate(plan.user_ids)
    ]


def run_rows(plan: Plan, ts: Callable[[int], Any]) -> list[tuple]:
    snapshots = {slug: json.dumps(flow.snapshot()) for slug, flow in plan.flows.items()}
    out = []
    for run in plan.runs:
        flow = plan.flows[run.slug]
        first = next((v for v in run.inputs.values() if v), "")
        title = f"{flow.title}: {first}" if first else flow.title
        title = title if len(title) <= 200 else title[:199] + "…"
        out.append(
            (
                f"{run.id:032x}",
                f"{plan.user_ids[run.user]:032x}",
                run.slug,
                snapshots[run.slug],
                title,
                json.dumps(run.inputs),
                ts(run.created_us),
                ts(run.updated_us),
                None,
            )
        )
    return out


def generation_rows(
    plan: Plan,
    ts: Callable[[int], Any],
    seed: int,
    chunk: int,
    adopted: dict[int, dict[str, tuple[int, str, int]]],
) -> Iterator[list[tuple]]:
    """The generations in creation order, in chunks; fills `adopted` (run -> step -> row)."""
    rng = random.Random(seed + 1)
    ids = Uuid7(rng)
    rand, bits, choice = rng.random, rng.getrandbits, rng.choice
    trash_from = plan.end_us - 7 * DAY
    steps = {slug: list(flow.steps) for slug, flow in plan.flows.items()}
    rows: list[tuple] = []
    for created, run_index, pos, n in plan.batches:
        run = plan.runs[run_index]
        step = steps[run.slug][pos]
        user_hex = f"{plan.user_ids[run.user]:032x}"
        run_hex = f"{run.id:032x}"
        run_adopted = adopted.setdefault(run_index, {})
        inputs = [
            {
                "step_id": s,
                "generation_id": hyphenated(run_adopted[s][0]),
                "object_key": run_adopted[s][1],
                "mime": "image/png",
            }
            for s in step.image_inputs
            if s in run_adopted
        ]
        params = json.dumps(
            {
                "width": step.width,
                "height": step.height,
                "kind": str(step.kind),
                "options": dict(step.options),
                "inputs": inputs,
            }
        )
        created_ts = ts(created)
        batch_hex = f"{ids.at(created):032x}"
        idempotency = f"catalog-{bits(64):016x}" if run.user == plan.heavy else None
        temperature = step.temperature
        temperature_json = json.dumps(temperature)
        prompt = run.prompts[pos]
        search_text = run.search_texts[pos]
        key_prefix = f"u/{hyphenated(plan.user_ids[run.user])}/r/{hyphenated(run.id)}/{step.id}/"
        for index in range(n):
            gid = ids.at(created)
            started = created + 50_000 + int(rand() * 2 * SECOND)
            render_ms = 300 + rand() * 5000
            finished = started + int(render_ms * 1000) + 20_000
            seed_value = bits(31)
            deleted = None
            if created >= trash_from and rand() < 0.02:
                deleted = min(plan.end_us, finished + int(rand() * 3 * DAY))
            if rand() < 0.94:
                key = f"{key_prefix}{hyphenated(gid)}.png"
                output = (
                    f'{{"provider": {{"renderer": "local", "seed": {seed_value}, '
                    f'"temperature": {temperature_json}, "render_ms": {render_ms:.2f}}}, '
                    f'"timings": {{"provider_ms": {render_ms + 3:.2f}, "processing_ms": '
                    f'{rand() * 40:.2f}, "storage_ms": {rand() * 15:.2f}, "total_ms": '
                    f"{render_ms + 60:.2f}}}}}"
                )
                rows.append(
                    (
                        f"{gid:032x}",
                        user_hex,
                        run_hex,
                        step.id,
                        run.slug,
                        batch_hex,
                        index,
                        "generated",
                        "succeeded",
                        prompt,
                        search_text,
                        params,
                        temperature,
                        seed_value,
                        step.provider,
                        step.model,
                        f"local-{bits(64):016x}",
                        key,
                        key + ".thumb.webp",
                        "image/png",
                        step.width,
                        step.height,
                        150_000 + bits(21),
                        f"{bits(256):064x}",
                        output,
                        None,
                        None,
                        1,
                        idempotency,
                        None,
                        None,
                        created_ts,
                        created_ts,
                        ts(started),
                        ts(finished),
                        ts(deleted or finished),
                        None if deleted is None else ts(deleted),
                    )
                )
                if deleted is None:
                    run_adopted[step.id] = (gid, key, finished)
            else:
                code, message = choice(ERRORS)
                rows.append(
                    (
                        f"{gid:032x}",
                        user_hex,
                        run_hex,
                        step.id,
                        run.slug,
                        batch_hex,
                        index,
                        "generated",
                        "failed",
                        prompt,
                        search_text,
                        params,
                        temperature,
                        seed_value,
                        step.provider,
                        step.model,
                        f"local-{bits(64):016x}",
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,
                        "{}",
                        code,
                        message,
                        1 + (bits(2) % 3),
                        idempotency,
                        None,
                        None,
                        created_ts,
                        created_ts,
                        ts(started),
                        ts(finished),
                        ts(deleted or finished),
                        None if deleted is None else ts(deleted),
                    )
                )
            if len(rows) >= chunk:
                yield rows
                rows = []
    if rows:
        yield rows


def run_step_rows(
    plan: Plan, ts: Callable[[int], Any], adopted: dict[int, dict[str, tuple[int, str, int]]]
) -> list[tuple]:
    out = []
    for run_index, run in enumerate(plan.runs):
        chosen = adopted.get(run_index, {})
        for step in plan.flows[run.slug].steps:
            row = chosen.get(step.id)
            out.append(
                (
                    f"{run.id:032x}",
                    step.id,
                    None if row is None else f"{row[0]:032x}",
                    None,
                    ts(row[2] if row else run.created_us),
                )
            )
    return out


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=console,
    )


# -- filling: SQLite ---------------------------------------------------------------------------


def sqlite_url() -> str:
    return f"sqlite+aiosqlite:///{SQLITE_PATH}"


def _sqlite_schema(connection: sqlite3.Connection) -> list[tuple]:
    return sorted(
        connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_stat%'"
        ).fetchall(),
        key=lambda r: (r[0], r[1]),
    )


def fill_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    phases: dict[str, float] = {}
    for suffix in ("", "-wal", "-shm"):
        Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
    DATA.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    upgrade_sync(sqlite_url())
    phases["migrate"] = time.perf_counter() - started
    mark = time.perf_counter()
    plan = build_plan(args.rows, args.heavy, args.users, args.seed)
    phases["plan"] = time.perf_counter() - mark

    db = sqlite3.connect(SQLITE_PATH, isolation_level=None)
    schema = _sqlite_schema(db)
    for pragma in (
        "journal_mode=WAL",
        "synchronous=OFF",
        "cache_size=-1000000",
        "temp_store=MEMORY",
        "foreign_keys=OFF",
    ):
        db.execute(f"PRAGMA {pragma}")
    # Indexes and FTS triggers of generations go during the load and come back verbatim.
    deferred = db.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'generations' "
        "AND type IN ('index', 'trigger') AND sql IS NOT NULL"
    ).fetchall()
    for kind, name, _sql in deferred:
        db.execute(f"DROP {kind.upper()} {name}")
    indexes = [(n, s) for k, n, s in deferred if k == "index"]
    triggers = [(n, s) for k, n, s in deferred if k == "trigger"]

    def insert(table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        db.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            rows,
        )

    mark = time.perf_counter()
    adopted: dict[int, dict[str, tuple[int, str, int]]] = {}
    with _progress() as progress:
        db.execute("BEGIN")
        insert("users", USER_COLUMNS, user_rows(plan, ts_sqlite, 0))
        insert("runs", RUN_COLUMNS, run_rows(plan, ts_sqlite))
        task = progress.add_task("generations", total=args.rows)
        for chunk in generation_rows(plan, ts_sqlite, args.seed, 20_000, adopted):
            insert("generations", GEN_COLUMNS, chunk)
            progress.advance(task, len(chunk))
        insert("run_steps", RUN_STEP_COLUMNS, run_step_rows(plan, ts_sqlite, adopted))
        db.execute("COMMIT")
        phases["insert"] = time.perf_counter() - mark

        mark = time.perf_counter()
        task = progress.add_task("indexes", total=len(indexes))
        for _name, sql in indexes:
            db.execute(sql)
            progress.advance(task)
        phases["indexes"] = time.perf_counter() - mark

        # The FTS rows, built the way migrations 0002/0003 build them for existing generations.
        mark = time.perf_counter()
        task = progress.add_task("full-text index", total=2)
        db.execute("BEGIN")
        db.execute("INSERT INTO generation_search(generation_id) SELECT id FROM generations")
        progress.advance(task)
        db.execute(
            "INSERT INTO generations_fts(rowid, prompt, owner) "
            "SELECT s.rowid, g.search_text, 'u' || g.user_id "
            "FROM generations g JOIN generation_search s ON s.generation_id = g.id"
        )
        # The prompt terms, collected as migration 0004 collects them for existing prompts.
        db.execute(
            "CREATE VIRTUAL TABLE temp.prompt_terms USING fts5vocab(main, generations_fts, 'col')"
        )
        db.execute(
            "INSERT OR IGNORE INTO generations_fts_terms(term) "
            "SELECT term FROM temp.prompt_terms WHERE col = 'prompt'"
        )
        db.execute("DROP TABLE temp.prompt_terms")
        for _name, sql in triggers:
            db.execute(sql)
        db.execute("COMMIT")
        progress.advance(task)
        phases["fts"] = time.perf_counter() - mark

    mark = time.perf_counter()
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    phases["analyze"] = time.perf_counter() - mark
    if _sqlite_schema(db) != schema:
        raise SystemExit("the schema after the load differs from the migrated one")
    db.close()
    return {
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }


# -- filling: PostgreSQL -----------------------------------------------------------------------


def postgres_url() -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DATABASE}"


def _pg_dsn() -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{PG_DATABASE}"


async def _pg_schema(conn: asyncpg.Connection) -> list[tuple]:
    rows = await conn.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "UNION ALL SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
        "UNION ALL SELECT table_name, column_name, coalesce(generation_expression, '') "
        "|| data_type FROM information_schema.columns WHERE table_schema = 'public'"
    )
    return sorted(tuple(r) for r in rows)


async def _fill_postgres(args: argparse.Namespace) -> dict[str, Any]:
    phases: dict[str, float] = {}
    started = time.perf_counter()
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {PG_DATABASE}")
    finally:
        await admin.close()
    await asyncio.to_thread(upgrade_sync, postgres_url())
    phases["migrate"] = time.perf_counter() - started
    mark = time.perf_counter()
    plan = build_plan(args.rows, args.heavy, args.users, args.seed)
    phases["plan"] = time.perf_counter() - mark

    conn = await asyncpg.connect(_pg_dsn())
    try:
        schema = await _pg_schema(conn)
        await conn.execute("SET maintenance_work_mem = '1GB'")
        # Rows are consistent by construction: skip the per-row foreign key triggers.
        await conn.execute("SET session_replication_role = replica")
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'generations' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
        # The GIN index is the slowest to build: first, while btree builds can follow.
        indexes = sorted(indexes, key=lambda r: "USING gin" not in r["indexdef"])
        for row in indexes:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')

        mark = time.perf_counter()
        adopted: dict[int, dict[str, tuple[int, str, int]]] = {}
        with _progress() as progress:
            await conn.copy_records_to_table(
                "users", records=user_rows(plan, ts_postgres, False), columns=USER_COLUMNS
            )
            await conn.copy_records_to_table(
                "runs", records=run_rows(plan, ts_postgres), columns=RUN_COLUMNS
            )
            task = progress.add_task("generations", total=args.rows)
            for chunk in generation_rows(plan, ts_postgres, args.seed, 50_000, adopted):
                await conn.copy_records_to_table("generations", records=chunk, columns=GEN_COLUMNS)
                progress.advance(task, len(chunk))
            await conn.copy_records_to_table(
                "run_steps",
                records=run_step_rows(plan, ts_postgres, adopted),
                columns=RUN_STEP_COLUMNS,
            )
            phases["insert"] = time.perf_counter() - mark

            mark = time.perf_counter()
            task = progress.add_task("indexes", total=len(indexes))
            for row in indexes:
                await conn.execute(row["indexdef"])
                progress.advance(task)
            phases["indexes"] = time.perf_counter() - mark
        await conn.execute("RESET session_replication_role")
        mark = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) users, runs, run_steps, generations, api_tokens")
        phases["analyze"] = time.perf_counter() - mark
        if await _pg_schema(conn) != schema:
            raise SystemExit("the schema after the load differs from the migrated one")
    finally:
        await conn.close()
    return {
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }


def fill_postgres(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_fill_postgres(args))


# -- reuse -------------------------------------------------------------------------------------


def _meta_path(backend: str) -> Path:
    return DATA / f"history_depth_{backend}.meta.json"


def _wanted(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "rows": args.rows,
        "heavy": args.heavy,
        "users": args.users,
        "seed": args.seed,
        "format": FORMAT_VERSION,
    }


async def _count_rows(url: str) -> int | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(select(func.count()).select_from(Generation))
    except Exception:
        return None
    finally:
        await engine.dispose()


async def _pg_database_exists() -> bool:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        return bool(
            await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE)
        )
    finally:
        await admin.close()


def ensure_filled(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    url = sqlite_url() if backend == "sqlite" else postgres_url()
    meta_path = _meta_path(backend)
    if not args.refill and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        exists = SQLITE_PATH.exists() if backend == "sqlite" else asyncio.run(_pg_database_exists())
        if meta.get("params") == _wanted(args) and exists:
            count = asyncio.run(_count_rows(url))
            if count == args.rows:
                console.print(
                    f"[green]{backend}: reusing the filled database "
                    f"({count:,} generations, filled {meta['filled_at']}).[/green]"
                )
                upgrade_sync(url)  # migrations added since the fill (a no-op when none)
                return {**meta["fill"], "reused": True, "filled_at": meta["filled_at"]}
    console.print(
        f"[bold]{backend}: filling {args.rows:,} generations "
        f"({args.users:,} users, heavy user {args.heavy:,})…[/bold]"
    )
    meta_path.unlink(missing_ok=True)
    fill = fill_sqlite(args) if backend == "sqlite" else fill_postgres(args)
    filled_at = datetime.now(UTC).isoformat(timespec="seconds")
    DATA.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(
        json.dumps({"params": _wanted(args), "fill": fill, "filled_at": filled_at}, indent=2) + "\n"
    )
    console.print(f"{backend}: filled in {fill['seconds']} s {fill['phases_s']}")
    return {**fill, "reused": False, "filled_at": filled_at}


def _search_filter(
    dialect: str, terms: list[Term] | tuple[Term, ...], user_id: uuid.UUID | None = None
) -> Any:
    """A plain search condition for setup queries (counts, depth cursors); the timed requests
    use the server's own search path. PostgreSQL's lexemes are per user: without one, the
    count reads the search text itself."""
    if dialect == "postgresql" and user_id is not None:
        condition = repository._POSTGRES_SEARCH.bindparams(
            tsquery=repository._postgres_tsquery(terms, user_id)
        )
        phrases = repository._postgres_phrases(terms)
        if phrases:
            condition = and_(condition, repository._POSTGRES_PHRASES.bindparams(phrases=phrases))
        return condition
    if dialect == "postgresql":
        patterns = ["% " + " ".join(t.tokens) + ("%" if t.prefix else " %") for t in terms]
        return and_(
            *(
                text(f"(' ' || generations.search_text || ' ') LIKE :p{i}").bindparams(
                    **{f"p{i}": pattern}
                )
                for i, pattern in enumerate(patterns)
            )
        )
    match = " AND ".join(
        f'prompt : "{t.tokens[0]}"*' if t.prefix else 'prompt : "' + " ".join(t.tokens) + '"'
        for t in terms
    )
    matching = (
        text(
            "SELECT s.generation_id FROM generations_fts f "
            "JOIN generation_search s ON s.rowid = f.rowid WHERE generations_fts MATCH :fts"
        )
        .bindparams(fts=match)
        .columns(generation_id=Generation.__table__.c.id.type)
    )
    return Generation.id.in_(matching)


# -- setup: token, depth cursors ---------------------------------------------------------------


@dataclass
class Variant:
    name: str
    params: dict[str, str]
    filters: HistoryFilters


@dataclass
class Cell:
    variant: Variant
    requested: int
    depth: int
    after: Position | None
    cursor: str | None
    expected_first: uuid.UUID


@dataclass
class Setup:
    user_id: uuid.UUID
    token: str
    secret: str
    cells: list[Cell]
    counts: dict[str, int]
    dataset: dict[str, Any]


def _conditions(dialect: str, user_id: uuid.UUID, filters: HistoryFilters) -> list[Any]:
    conditions = [Generation.user_id == user_id, Generation.deleted_at.is_(None)]
    if filters.flow:
        conditions.append(Generation.flow_slug == filters.flow)
    if filters.terms:
        conditions.append(_search_filter(dialect, filters.terms, user_id))
    return conditions


async def issue_heavy_token(engine: Any, *, name: str) -> tuple[User, str]:
    """The heavy user and a fresh API token of theirs called `name` (older ones removed)."""
    token = new_api_token()
    async with session_factory(engine)() as db:
        user = await db.scalar(select(User).where(User.email == HEAVY_EMAIL))
        if user is None:
            raise SystemExit("the database has no heavy user: refill it")
        old = await db.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.name == name)
        )
        for row in old:
            await db.delete(row)
        db.add(
            ApiToken(
                user_id=user.id, name=name, token_prefix=token[:10], token_hash=token_hash(token)
            )
        )
        await db.commit()
    return user, token


async def prepare(url: str, args: argparse.Namespace, variants: list[Variant]) -> Setup:
    engine = create_engine(url)
    dialect = engine.dialect.name
    secret = secrets.token_urlsafe(32)
    codec = CursorCodec(secret.encode())
    try:
        user, token = await issue_heavy_token(engine, name=TOKEN_NAME)
        cells, counts = [], {}
        dataset: dict[str, Any] = {}
        async with session_factory(engine)() as db:
            dataset["generations"] = await db.scalar(select(func.count()).select_from(Generation))
            dataset["users"] = await db.scalar(select(func.count()).select_from(User))
            dataset["runs"] = await db.scalar(select(func.count()).select_from(Run))
            dataset["run_steps"] = await db.scalar(select(func.count()).select_from(RunStep))
            by_status = await db.execute(
                select(Generation.status, func.count()).group_by(Generation.status)
            )
            dataset["by_status"] = {s: n for s, n in by_status}
            dataset["deleted"] = await db.scalar(
                select(func.count()).where(Generation.deleted_at.is_not(None))
            )
            for q in (args.q, args.q_cjk):
                dataset[f"q={q} matches_all_users"] = await db.scalar(
                    select(func.count())
                    .select_from(Generation)
                    .where(_search_filter(dialect, search_terms(q)))
                )
            for variant in variants:
                conditions = _conditions(dialect, user.id, variant.filters)
                total = await db.scalar(select(func.count()).where(*conditions))
                counts[variant.name] = total
                for fraction in DEPTH_FRACTIONS:
                    requested = round(args.heavy * fraction)
                    depth = min(requested, max(0, total - LIMIT - 1))
                    query = (
                        select(Generation.created_at, Generation.id)
                        .where(*conditions)
                        .order_by(Generation.created_at.desc(), Generation.id.desc())
                    )
                    if depth == 0:
                        rows = (await db.execute(query.limit(1))).all()
                        after, cursor, first = None, None, rows[0][1]
                    else:
                        rows = (await db.execute(query.offset(depth - 1).limit(2))).all()
                        after = Position(rows[0][0], rows[0][1])
                        cursor = codec.encode(after, scope="history")
                        first = rows[1][1]
                    cells.append(Cell(variant, requested, depth, after, cursor, first))
    finally:
        await engine.dispose()
    return Setup(user.id, token, secret, cells, counts, dataset)


# -- the server --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`flowstudio serve --no-worker` as a subprocess on a free loopback port."""

    def __init__(self, backend: str, url: str, secret: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        data_dir = DATA / f"history_depth_server_{backend}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "serve.log"
        self.env = {
            **os.environ,
            "FLOWSTUDIO_DATABASE_URL": url,
            "FLOWSTUDIO_DATA_DIR": str(data_dir),
            "FLOWSTUDIO_SECRET_KEY": secret,
            "FLOWSTUDIO_ENVIRONMENT": "development",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flowstudio.cli",
                "serve",
                "--no-worker",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited; see {self.log_path}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise SystemExit(f"the server did not become ready; see {self.log_path}")

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


# -- measuring ---------------------------------------------------------------------------------


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p99": round(percentile(values, 99), 3),
        "mean": round(statistics.fmean(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def _timed(fn: Callable[[], Any], count: int, budget: float, minimum: int = 20) -> list[float]:
    """Up to `count` timings (ms); past `minimum` of them, only while within `budget` s."""
    samples: list[float] = []
    stop = time.perf_counter() + budget
    while len(samples) < count and (len(samples) < minimum or time.perf_counter() < stop):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def measure_http(base: str, setup: Setup, args: argparse.Namespace) -> dict[int, list[float]]:
    """Sequential requests on one keep-alive connection, with the standard library's client:
    httpx's own request building and response parsing cost about a millisecond a request,
    which is the client's time, not the server's."""
    headers = {"Authorization": f"Bearer {setup.token}"}
    address = httpx.URL(base)
    connection = http.client.HTTPConnection(address.host, address.port, timeout=120)

    def fetch(url: str) -> bytes:
        connection.request("GET", url, headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"GET {url}: {response.status} {body[:300]!r}")
        return body

    urls = []
    for cell in setup.cells:
        params = {"limit": str(LIMIT), **cell.variant.params}
        if cell.cursor:
            params["cursor"] = cell.cursor
        url = str(httpx.URL("/api/history", params=params))
        items = json.loads(fetch(url))["items"]
        if len(items) != LIMIT or uuid.UUID(items[0]["id"]) != cell.expected_first:
            raise SystemExit(
                f"{cell.variant.name} at depth {cell.depth}: the page does "
                "not start at the expected row"
            )
        urls.append(url)
    for url in urls:
        _timed(lambda url=url: fetch(url), args.warmup, 10, minimum=3)
    # Round robin over the cells, one request each per round (in a rotating order), so that
    # the machine's ups and downs fall on every depth alike instead of on whichever cell
    # happened to run then: "deepest ÷ first" compares like with like.
    results: dict[int, list[float]] = {i: [] for i in range(len(urls))}
    stop = time.perf_counter() + args.cell_seconds * len(urls)
    with _progress() as bar:
        task = bar.add_task("HTTP request rounds", total=args.requests)
        for round_number in range(args.requests):
            if round_number >= 20 and time.perf_counter() > stop:
                break
            shift = round_number % len(urls)
            for i in [*range(shift, len(urls)), *range(shift)]:
                started = time.perf_counter()
                fetch(urls[i])
                results[i].append((time.perf_counter() - started) * 1000)
            bar.advance(task)
    connection.close()
    return results


async def measure_queries(
    url: str, setup: Setup, args: argparse.Namespace
) -> dict[int, list[float]]:
    """The list query alone: repository.history_rows through db.Reads, as a request runs it."""
    engine = create_engine(url)
    reads = Reads(engine)
    values = history_json.row_values(engine.dialect.name)
    results: dict[int, list[float]] = {}
    try:
        for i, cell in enumerate(setup.cells):

            async def once(cell: Cell = cell) -> None:
                rows = await reads.run(
                    repository.history_rows,
                    user_id=setup.user_id,
                    filters=cell.variant.filters,
                    after=cell.after,
                    limit=LIMIT + 1,
                )
                assert values.uuid(rows[0][0]) == cell.expected_first

            for _ in range(5):
                await once()
            samples: list[float] = []
            stop = time.perf_counter() + args.cell_seconds / 2
            while len(samples) < min(args.requests, 100) and (
                len(samples) < 10 or time.perf_counter() < stop
            ):
                start = time.perf_counter()
                await once()
                samples.append((time.perf_counter() - start) * 1000)
            results[i] = samples
    finally:
        await reads.close()
        await engine.dispose()
    return results


# -- the SQL alone and its plan ----------------------------------------------------------------


async def capture_sql(url: str, setup: Setup, cell: Cell) -> tuple[str, tuple]:
    """The list statement and parameters exactly as history_rows sends them to the driver."""
    engine = create_engine(url)
    captured: list[tuple[str, Any]] = []

    def listen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", listen)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(
                repository.history_rows,
                user_id=setup.user_id,
                filters=cell.variant.filters,
                after=cell.after,
                limit=LIMIT + 1,
            )
    finally:
        await engine.dispose()
    statement, parameters = next(c for c in reversed(captured) if "ORDER BY" in c[0])
    return statement, tuple(parameters)


def _sample(fn: Callable[[], Any], count: int, budget: float) -> list[float]:
    for _ in range(3):
        fn()
    return _timed(fn, count, budget)


def measure_sql_sqlite(
    statements: list[tuple[str, tuple]], args: argparse.Namespace
) -> list[list[float]]:
    db = sqlite3.connect(f"file:{SQLITE_PATH}?mode=ro", uri=True)
    try:
        return [
            _sample(
                lambda s=s, p=p: db.execute(s, p).fetchall(),
                min(args.requests, 100),
                args.cell_seconds / 3,
            )
            for s, p in statements
        ]
    finally:
        db.close()


async def measure_sql_postgres(
    statements: list[tuple[str, tuple]], args: argparse.Namespace
) -> list[list[float]]:
    conn = await asyncpg.connect(_pg_dsn())
    results = []
    try:
        for statement, parameters in statements:
            prepared = await conn.prepare(statement)
            samples: list[float] = []
            stop = time.perf_counter() + args.cell_seconds / 3
            for i in range(3 + min(args.requests, 100)):
                if i >= 23 and time.perf_counter() > stop:
                    break
                start = time.perf_counter()
                await prepared.fetch(*parameters)
                if i >= 3:
                    samples.append((time.perf_counter() - start) * 1000)
            results.append(samples)
    finally:
        await conn.close()
    return results


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime):
        value = value.isoformat()
    if isinstance(value, list | tuple):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]::text[]"
    return "'" + str(value).replace("'", "''") + "'"


async def explain_postgres(statement: str, parameters: tuple) -> dict[str, Any]:
    conn = await asyncpg.connect(_pg_dsn())
    try:
        explain = "EXPLAIN (ANALYZE, BUFFERS) "
        plan = [r[0] for r in await conn.fetch(explain + statement, *parameters)]
        # The server runs the statement prepared (asyncpg's statement cache): after five
        # executions PostgreSQL may switch to a generic plan. Show the one it settles on.
        await conn.execute(f"PREPARE history_depth AS {statement}")
        execute = f"EXECUTE history_depth({', '.join(_literal(p) for p in parameters)})"
        for _ in range(6):
            await conn.execute(execute)
        prepared = [r[0] for r in await conn.fetch(explain + execute)]
        await conn.execute("DEALLOCATE history_depth")
        return {"plan": plan, "prepared_plan": prepared}
    finally:
        await conn.close()


def explain_sqlite(statement: str, parameters: tuple) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{SQLITE_PATH}?mode=ro", uri=True)
    try:
        rows = db.execute("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
    finally:
        db.close()
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _unused, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return {"plan": lines}


async def explain(backend: str, cell: Cell, statement: str, parameters: tuple) -> dict[str, Any]:
    if backend == "postgres":
        result = await explain_postgres(statement, parameters)
    else:
        result = explain_sqlite(statement, parameters)
    return {
        "variant": cell.variant.name,
        "depth": cell.depth,
        "sql": statement,
        "parameters": [str(p) for p in parameters],
        "has_count": "count(" in statement.lower(),
        **result,
    }


# -- main --------------------------------------------------------------------------------------


def variants_for(args: argparse.Namespace) -> list[Variant]:
    return [
        Variant("all", {}, HistoryFilters()),
        Variant(f"flow={args.flow}", {"flow": args.flow}, HistoryFilters(flow=args.flow)),
        *(
            Variant(f"q={q}", {"q": q}, HistoryFilters(terms=tuple(search_terms(q))))
            for q in (args.q, args.q_cjk)
        ),
    ]


def _database_version(backend: str) -> str:
    if backend == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"

    async def version() -> str:
        conn = await asyncpg.connect(_pg_dsn())
        try:
            return await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()

    return f"PostgreSQL {asyncio.run(version())}"


def maintain(backend: str) -> dict[str, Any]:
    """What a deployment's worker does to its database every gc interval and the bulk fill
    skipped: on SQLite, merge the full-text index (maintenance.compact_search_index, through
    the same repository step). A no-op once done."""
    if backend != "sqlite":
        return {}
    engine = sqlalchemy.create_engine(f"sqlite:///{SQLITE_PATH}")
    started, steps = time.perf_counter(), 0
    try:
        with engine.connect() as connection:
            before = repository.search_index_segments(connection)
            connection.commit()
            while before > 1:
                merged = repository.merge_search_index(
                    connection, pages=maintenance.SEARCH_MERGE_PAGES
                )
                connection.commit()
                if not merged:
                    break
                steps += 1
    finally:
        engine.dispose()
    seconds = round(time.perf_counter() - started, 2)
    if steps:
        console.print(f"{backend}: merged the search index ({before} segments) in {seconds} s")
    return {"search_index_segments_before": before, "merge_steps": steps, "merge_s": seconds}


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    url = sqlite_url() if backend == "sqlite" else postgres_url()
    fill = {**ensure_filled(backend, args), "maintenance": maintain(backend)}
    variants = variants_for(args)
    setup = asyncio.run(prepare(url, args, variants))
    console.print(
        f"{backend}: heavy user {setup.user_id}: "
        + ", ".join(f"{name} {count:,} rows" for name, count in setup.counts.items())
    )

    with Server(backend, url, setup.secret) as server:
        console.print(f"{backend}: serving on {server.base} (log {server.log_path})")
        http = measure_http(server.base, setup, args)
    queries = asyncio.run(measure_queries(url, setup, args))
    statements = [asyncio.run(capture_sql(url, setup, cell)) for cell in setup.cells]
    if backend == "sqlite":
        sql = measure_sql_sqlite(statements, args)
    else:
        sql = asyncio.run(measure_sql_postgres(statements, args))

    cells = []
    for i, cell in enumerate(setup.cells):
        cells.append(
            {
                "variant": cell.variant.name,
                "params": cell.variant.params,
                "requested_depth": cell.requested,
                "depth": cell.depth,
                "http_ms": summarize(http[i]),
                "query_ms": summarize(queries[i]),
                "sql_ms": summarize(sql[i]),
            }
        )
    verdicts = {}
    for variant in variants:
        mine = [c for c in cells if c["variant"] == variant.name]
        first, deepest = mine[0]["http_ms"]["p50"], mine[-1]["http_ms"]["p50"]
        worst = max(c["http_ms"]["p50"] for c in mine)
        ratio = round(deepest / first, 3)
        verdicts[variant.name] = {
            "deepest_over_first_p50": ratio,
            "worst_p50_ms": worst,
            "p50_target_met": worst <= TARGET_P50_MS,
            "ratio_target_met": ratio <= TARGET_RATIO,
            "sql_deepest_over_first_p50": round(
                mine[-1]["sql_ms"]["p50"] / mine[0]["sql_ms"]["p50"], 3
            ),
        }
    plans: dict[str, Any] = {}
    for variant in variants:
        mine = [i for i, c in enumerate(setup.cells) if c.variant is variant]
        plans[variant.name] = {
            which: asyncio.run(explain(backend, setup.cells[i], *statements[i]))
            for which, i in (("first", mine[0]), ("deepest", mine[-1]))
        }

    dataset = {
        **setup.dataset,
        "heavy_user_rows": args.heavy,
        "heavy_user_live_rows_by_variant": setup.counts,
        "q_words": [args.q, args.q_cjk],
        "flow_filter": args.flow,
        "heavy_mix": dict(HEAVY_MIX),
        "light_mix": dict(LIGHT_MIX),
        "seed": args.seed,
    }
    payload = {
        "backend": backend,
        "database": _database_version(backend),
        "method": {
            "endpoint": "GET /api/history",
            "limit": LIMIT,
            "requests_per_cell": args.requests,
            "warmup": args.warmup,
            "cell_seconds": args.cell_seconds,
            "client": "http.client, one keep-alive connection, sequential",
            "server": "flowstudio serve --no-worker (uvicorn, log level info)",
            "depth": "rows skipped: the cursor is the row at offset depth-1",
        },
        "targets": {"p50_ms": TARGET_P50_MS, "deepest_over_first": TARGET_RATIO},
        "dataset": dataset,
        "fill": fill,
        "cells": cells,
        "verdicts": verdicts,
        "explain": plans,
    }
    path = record(f"history_depth_{backend}", payload)
    report(backend, payload)
    console.print(f"recorded in {path}")
    return payload


def report(backend: str, payload: dict[str, Any]) -> None:
    table = Table(
        title=f"GET /api/history?limit={LIMIT} — {payload['database']}, heavy user "
        f"({payload['dataset']['generations']:,} generations in all)"
    )
    for column in (
        "variant",
        "depth",
        "p50 ms",
        "p99 ms",
        "mean ms",
        "vs first",
        "query p50 ms",
        "SQL p50 ms",
    ):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for variant in payload["verdicts"]:
        mine = [c for c in payload["cells"] if c["variant"] == variant]
        first = mine[0]["http_ms"]["p50"]
        for c in mine:
            depth = f"{c['depth']:,}" + ("*" if c["depth"] != c["requested_depth"] else "")
            p50 = c["http_ms"]["p50"]
            style = "green" if p50 <= TARGET_P50_MS else "red"
            table.add_row(
                variant,
                depth,
                f"[{style}]{p50:.2f}[/{style}]",
                f"{c['http_ms']['p99']:.2f}",
                f"{c['http_ms']['mean']:.2f}",
                f"{p50 / first:.2f}",
                f"{c['query_ms']['p50']:.2f}",
                f"{c['sql_ms']['p50']:.3f}",
            )
        table.add_section()
    console.print(table)
    for variant, verdict in payload["verdicts"].items():
        ok = verdict["p50_target_met"] and verdict["ratio_target_met"]
        console.print(
            f"{variant}: worst p50 {verdict['worst_p50_ms']} ms, deepest/first "
            f"{verdict['deepest_over_first_p50']} → "
            + ("[green]targets met[/green]" if ok else "[red]target missed[/red]")
        )
    for variant, pair in payload["explain"].items():
        for which in ("first", "deepest"):
            plan = pair[which]
            console.print(f"[bold]EXPLAIN {variant} at depth {plan['depth']:,}[/bold]")
            console.print("\n".join(plan["plan"]), markup=False, highlight=False)
            if plan.get("prepared_plan") and plan["prepared_plan"][:1] != plan["plan"][:1]:
                console.print("[bold]prepared, after six executions:[/bold]")
                console.print("\n".join(plan["prepared_plan"]), markup=False, highlight=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--heavy", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per cell")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--cell-seconds",
        type=float,
        default=45,
        help="time budget per (variant, depth) once 20 requests are timed",
    )
    parser.add_argument("--q", default="product", help="the search word (a common one)")
    parser.add_argument(
        "--q-cjk", default="茶壶", help="the Chinese search (two characters, in Simplified)"
    )
    parser.add_argument("--flow", default="product-shot")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--refill", action="store_true", help="refill even if one matches")
    args = parser.parse_args()
    if not 0 < args.heavy < args.rows or args.users < 2:
        parser.error("need 0 < --heavy < --rows and --users >= 2")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        run_backend(backend, args)


if __name__ == "__main__":
    main()
