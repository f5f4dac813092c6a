"""The composition root: the only module that imports adapters and wires them to the ports.

Both the Litestar app and the `tkcloud` CLI build this container. With no Redis configured the
in-process adapters are used (embedded mode, one process); with no database configured, SQLite.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import redis.asyncio as redis_asyncio
from dependency_injector import containers, providers
from sqlalchemy.ext.asyncio import AsyncEngine

from tkcloud_adapters.crypto import FernetSecretBox, generate_key
from tkcloud_adapters.health import InProcessHealthProbe, RedisHealthProbe, SqlHealthProbe
from tkcloud_adapters.mail.smtp import SmtpMailer
from tkcloud_adapters.memory.limits import (
    InProcessNonceStore,
    InProcessQuotaCounter,
    InProcessRateLimiter,
)
from tkcloud_adapters.oauth.github import GitHubOAuthProvider
from tkcloud_adapters.redis.client import create_redis
from tkcloud_adapters.redis.nonces import RedisNonceStore
from tkcloud_adapters.redis.quota import RedisQuotaCounter
from tkcloud_adapters.redis.rate_limiter import RedisRateLimiter
from tkcloud_adapters.sql.analytics import SqlAnalyticsReader
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.event_store import SqlEventStore
from tkcloud_adapters.sql.explorer import ArrowParquetEncoder, SqlEventReader
from tkcloud_adapters.sql.ingest_directory import SqlIngestDirectory
from tkcloud_adapters.sql.migrate import upgrade
from tkcloud_adapters.sql.outbox import SqlOutbox
from tkcloud_adapters.sql.retention import SqlEventPurger
from tkcloud_adapters.sql.rollup_analytics import RollupAnalyticsReader
from tkcloud_adapters.sql.rollups import SqlRollups
from tkcloud_adapters.sql.sharing import SqlMonthlyUsers
from tkcloud_adapters.sql.tenancy import SqlTenancyUnitOfWork
from tkcloud_adapters.stripe.gateway import StripePaymentGateway
from tkcloud_adapters.system import RandomIdGenerator, SystemClock
from tkcloud_api.settings import Settings, SettingsError
from tkcloud_application.analytics.explorer import EventExplorer
from tkcloud_application.analytics.queries import AppAnalytics
from tkcloud_application.analytics.rollups import Rollups
from tkcloud_application.billing.quota_alerts import QuotaAlerts
from tkcloud_application.billing.subscriptions import Subscriptions
from tkcloud_application.dashboard.api_keys import ApiKeys
from tkcloud_application.dashboard.apps import AppManagement
from tkcloud_application.dashboard.invitations import Invitations
from tkcloud_application.dashboard.organisations import Organisations
from tkcloud_application.identity.access import Access
from tkcloud_application.identity.authentication import Authentication
from tkcloud_application.ingestion.app_cache import CachedIngestDirectory
from tkcloud_application.ingestion.ingest_batch import IngestBatch
from tkcloud_application.ports.billing import PaymentGateway
from tkcloud_application.sharing.links import Sharing
from tkcloud_application.tenancy.operations import TenancyOperations
from tkcloud_application.tenancy.retention import RetentionJob
from tkcloud_domain.plans import Plan


async def _engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _redis(url: str) -> AsyncIterator[redis_asyncio.Redis | None]:
    if not url:
        yield None
        return
    client = create_redis(url)
    try:
        yield client
    finally:
        await client.aclose()


def resolve_secret_key(settings: Settings) -> str:
    """The configured key; in embedded mode a key kept in the data folder (created once)."""
    if settings.secret_key:
        return settings.secret_key
    if not settings.embedded_database:
        raise SettingsError(
            "TKCLOUD_SECRET_KEY: required with Postgres, so every server decrypts signing "
            "secrets alike (make one with `tkcloud keygen`)"
        )
    path = Path(settings.data_dir) / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_key())
    return path.read_text().strip()


def _cache_backend(settings: Settings) -> str:
    return "redis" if settings.redis_url else "memory"


def _mail_backend(settings: Settings) -> str:
    return "smtp" if settings.smtp_url else "outbox"


async def _stripe(settings: Settings) -> AsyncIterator[PaymentGateway | None]:
    if not settings.stripe_secret_key:
        yield None  # billing endpoints answer ERR_NOT_CONFIGURED; operators set plans
        return
    gateway = StripePaymentGateway(
        settings.stripe_secret_key,
        settings.stripe_webhook_secret,
        {Plan.PRO: settings.stripe_price_pro, Plan.BUSINESS: settings.stripe_price_business},
        api_base=settings.stripe_api_base or None,
    )
    try:
        yield gateway
    finally:
        await gateway.aclose()


def _github(settings: Settings) -> GitHubOAuthProvider | None:
    if not settings.github_client_id:
        return None  # sign-in with GitHub answers ERR_NOT_CONFIGURED
    return GitHubOAuthProvider(
        settings.github_client_id,
        settings.github_client_secret,
        oauth_url=settings.github_url,
        api_url=settings.github_api_url,
    )


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)
    cache_backend = providers.Callable(_cache_backend, settings)

    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(RandomIdGenerator)
    secret_box = providers.Singleton(
        FernetSecretBox, key=providers.Callable(resolve_secret_key, settings)
    )

    # Synchronous (alembic); call it before the event loop starts or from a thread.
    migrate = providers.Callable(upgrade, settings.provided.resolved_database_url)
    generate_key = providers.Object(generate_key)

    engine = providers.Resource(_engine, url=settings.provided.resolved_database_url)
    redis = providers.Resource(_redis, url=settings.provided.redis_url)
    redis_prefix = settings.provided.redis_prefix

    nonces = providers.Selector(
        cache_backend,
        redis=providers.Singleton(RedisNonceStore, redis, redis_prefix),
        memory=providers.Singleton(InProcessNonceStore, clock),
    )
    rate_limiter = providers.Selector(
        cache_backend,
        redis=providers.Singleton(RedisRateLimiter, redis, redis_prefix),
        memory=providers.Singleton(InProcessRateLimiter),
    )
    quota = providers.Selector(
        cache_backend,
        redis=providers.Singleton(RedisQuotaCounter, redis, redis_prefix),
        memory=providers.Singleton(InProcessQuotaCounter),
    )

    event_store = providers.Singleton(SqlEventStore, engine)
    ingest_directory = providers.Singleton(
        CachedIngestDirectory,
        inner=providers.Singleton(SqlIngestDirectory, engine, secret_box, clock),
        clock=clock,
        ttl_seconds=settings.provided.app_cache_seconds,
    )
    # A plain factory of units of work (a provider would hand out awaitables: the engine is an
    # async resource).
    tenancy_uow = providers.Callable(partial, SqlTenancyUnitOfWork, engine)

    health_probes = providers.List(
        providers.Singleton(SqlHealthProbe, engine),
        providers.Selector(
            cache_backend,
            redis=providers.Singleton(RedisHealthProbe, redis),
            memory=providers.Singleton(InProcessHealthProbe),
        ),
    )

    # --- mail ----------------------------------------------------------------------------------
    outbox = providers.Singleton(SqlOutbox, engine, ids, clock)
    mailer = providers.Selector(
        providers.Callable(_mail_backend, settings),
        smtp=providers.Singleton(
            SmtpMailer, settings.provided.smtp_url, settings.provided.mail_from
        ),
        outbox=outbox,
    )
    quota_alerts = providers.Singleton(
        QuotaAlerts,
        uow=tenancy_uow,
        mailer=mailer,
        dashboard_url=settings.provided.resolved_dashboard_url,
    )
    ingest_batch = providers.Singleton(
        IngestBatch,
        directory=ingest_directory,
        nonces=nonces,
        rate_limiter=rate_limiter,
        quota=quota,
        events=event_store,
        clock=clock,
        alerts=quota_alerts,
    )
    tenancy = providers.Singleton(
        TenancyOperations,
        uow=tenancy_uow,
        usage=event_store,
        ids=ids,
        secret_box=secret_box,
        clock=clock,
        region=settings.provided.region,
        rotation_grace=providers.Callable(
            lambda hours: timedelta(hours=hours), settings.provided.rotation_grace_hours
        ),
        on_change=ingest_directory.provided.invalidate,
    )

    # --- people and programs -------------------------------------------------------------------
    oauth = providers.Singleton(_github, settings)
    access = providers.Singleton(Access, uow=tenancy_uow)
    authentication = providers.Singleton(
        Authentication,
        uow=tenancy_uow,
        ids=ids,
        clock=clock,
        rate_limiter=rate_limiter,
        mailer=mailer,
        oauth=oauth,
        public_url=settings.provided.resolved_public_url,
        dashboard_url=settings.provided.resolved_dashboard_url,
        session_ttl=providers.Callable(
            lambda days: timedelta(days=days), settings.provided.session_days
        ),
    )
    organisations = providers.Singleton(
        Organisations, uow=tenancy_uow, access=access, tenancy=tenancy, clock=clock, ids=ids
    )
    invitations = providers.Singleton(
        Invitations,
        uow=tenancy_uow,
        access=access,
        ids=ids,
        clock=clock,
        mailer=mailer,
        dashboard_url=settings.provided.resolved_dashboard_url,
    )
    api_keys = providers.Singleton(ApiKeys, uow=tenancy_uow, access=access, ids=ids, clock=clock)
    app_management = providers.Singleton(
        AppManagement, access=access, tenancy=tenancy, events=event_store, clock=clock
    )

    # --- analytics -------------------------------------------------------------------------------
    rollup_store = providers.Singleton(SqlRollups, engine)
    rollups = providers.Singleton(Rollups, uow=tenancy_uow, maintainer=rollup_store)
    analytics = providers.Singleton(
        AppAnalytics,
        access=access,
        reader=providers.Singleton(
            RollupAnalyticsReader,
            engine,
            rollups=rollup_store,
            raw=providers.Singleton(SqlAnalyticsReader, engine),
        ),
        clock=clock,
    )

    explorer = providers.Singleton(
        EventExplorer,
        access=access,
        reader=providers.Singleton(SqlEventReader, engine),
        parquet=providers.Singleton(ArrowParquetEncoder),
        uow=tenancy_uow,
        clock=clock,
    )
    sharing = providers.Singleton(
        Sharing,
        uow=tenancy_uow,
        access=access,
        ids=ids,
        clock=clock,
        usage=event_store,
        users=providers.Singleton(SqlMonthlyUsers, engine),
    )

    retention = providers.Singleton(
        RetentionJob,
        uow=tenancy_uow,
        store=providers.Singleton(SqlEventPurger, engine),
        clock=clock,
    )

    # --- billing ---------------------------------------------------------------------------------
    payment_gateway = providers.Resource(_stripe, settings)
    subscriptions = providers.Singleton(
        Subscriptions,
        uow=tenancy_uow,
        access=access,
        gateway=payment_gateway,
        mailer=mailer,
        clock=clock,
        dashboard_url=settings.provided.resolved_dashboard_url,
        on_plan_change=ingest_directory.provided.invalidate,
    )


def build_container(settings: Settings) -> Container:
    return Container(settings=settings)


async def settle(value: Any) -> Any:
    """What a provider gave: providers that depend on an async resource hand out awaitables."""
    return await value if inspect.isawaitable(value) else value
