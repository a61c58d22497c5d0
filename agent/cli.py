"""``pagecast [run] [--config PATH]``, ``pagecast check-config``; bad config → exit 2."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

import yaml
from loguru import logger

from agent import __version__
from agent.app import end_process, run_agent
from agent.cast.discovery import discover_devices, format_devices
from agent.config import ConfigError, Settings, load_settings, resolve_config_path
from agent.errors import PagecastError
from agent.logs import setup_logging

EXIT_FAILURE = 1
EXIT_CONFIG = 2

Handler = Callable[[Settings, argparse.Namespace], int]


def _run(settings: Settings, args: argparse.Namespace) -> int:
    setup_logging(settings.log)
    try:
        asyncio.run(run_agent(settings))
    except (OSError, PagecastError) as exc:
        # What a user can fix (a port in use, a missing program): one line, not a traceback.
        logger.error("pagecast cannot run: {}", exc)
        return EXIT_FAILURE
    end_process(0)


def _check_config(settings: Settings, args: argparse.Namespace) -> int:
    path, _ = resolve_config_path(args.config)
    source = str(path) if path.exists() else f"{path} (not found: defaults and environment)"
    print(f"# pagecast {__version__}: resolved config from {source}; secrets masked")
    print(yaml.safe_dump(settings.public_dict(), sort_keys=False, allow_unicode=True), end="")
    return 0


def _discover(settings: Settings, args: argparse.Namespace) -> int:
    cast = settings.cast
    found = discover_devices(cast.known_hosts, cast.discovery_timeout, mdns=cast.mdns)
    print(format_devices(asyncio.run(found)))
    return 0


# Subcommands: name → (help, handler).
SUBCOMMANDS: dict[str, tuple[str, Handler]] = {
    "run": ("run the agent (the default)", _run),
    "check-config": ("print the resolved config with secrets masked", _check_config),
    "discover": ("list Cast devices (mDNS and cast.known_hosts) and exit", _discover),
}


def _parser() -> argparse.ArgumentParser:
    config = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's own default must not overwrite ``pagecast --config X run``.
    config.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="YAML config file (default: $PAGECAST_CONFIG, else ./config.yaml)",
    )
    parser = argparse.ArgumentParser(
        prog="pagecast",
        description="Put a live web page on a Google Cast screen when an MQTT message asks.",
        parents=[config],
    )
    parser.add_argument("--version", action="version", version=f"pagecast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, _) in SUBCOMMANDS.items():
        commands.add_parser(name, help=help_text, parents=[config])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.config = getattr(args, "config", None)
    command = args.command or "run"
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"pagecast: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _, handler = SUBCOMMANDS[command]
    return handler(settings, args)
