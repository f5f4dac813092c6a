"""What every command shares: running a use case inside the container, printing results."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from tkcloud_api.container import Container, build_container, settle
from tkcloud_api.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def run(settings: Settings, work: Callable[[Container], Awaitable[Any]]) -> Any:
    """Migrate if configured to, open the container's resources, run `work`, close them."""
    container = build_container(settings)
    if settings.auto_migrate:
        container.migrate()

    async def main() -> Any:
        await settle(container.init_resources())
        try:
            return await work(container)
        finally:
            await settle(container.shutdown_resources())

    return asyncio.run(main())


async def service(container: Container, name: str) -> Any:
    """A use case from the container by provider name."""
    return await settle(getattr(container, name)())


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    print(json.dumps(data, indent=2, default=str) if args.json else text)
    return 0


def command(
    parent: Any, name: str, handler: Handler, help_text: str, *, json_flag: bool = True
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = parent.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(handler=handler)
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def group(parent: Any, name: str, help_text: str) -> Any:
    return parent.add_parser(name, help=help_text).add_subparsers(metavar="COMMAND")
