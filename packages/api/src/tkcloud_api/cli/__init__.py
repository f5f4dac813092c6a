"""`tkcloud`: run the service and manage it. Every command that reports takes `--json`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tkcloud_api.cli import export, people, service, tenancy
from tkcloud_api.cli.common import Handler
from tkcloud_api.settings import SettingsError, load_settings
from tkcloud_domain.errors import DomainError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        settings = load_settings()
        handler: Handler = args.handler
        return handler(args, settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except DomainError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
        else:
            print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tkcloud", description="telemetry-kit cloud")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    service.register(sub)
    org = tenancy.register(sub)
    people.register(sub, org)
    export.register(sub)
    return parser
