"""The `sms-pipeline` command.

Each command group lives in its own module under `sms_pipeline.cli` with a
`register(subparsers)` function that adds its sub-commands and sets `func` on them;
`func(args) -> int` is the exit code.

An operational error (bad configuration, a database or broker that cannot be reached,
tables missing, a folder that cannot be written) ends the command with one line on
stderr and exit code 2; `--debug` adds the traceback. The settings and the data folder
are checked before any command runs (after `--help` too), so no command meets them
half-way. A parser may set `uses_data=False` when the command does not announce the data
folder itself, `needs_data_dir=False` when it keeps nothing there, and `reads_only=True`
when it only reads the data: it then refuses to run where no embedded database exists.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from sms_pipeline.settings import SettingsError

# One module per command group; the order is the order of `--help`.
COMMAND_MODULES: tuple[str, ...] = (
    "up",
    "db",
    "runtime",
    "simulator",
    "messages",
    "monitoring",
    "maintenance",
    "demo",
    "api",
    "inbound",
    "privacy",
    "accounts",
    "gateways",
)
EXIT_OPERATIONAL = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sms-pipeline",
        description="The SMS channel: Celery pipeline over the IP2SMS gateway. "
        "Start with `sms-pipeline up`, then `sms-pipeline send` in another shell.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an operational error (also accepted after the command)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"sms_pipeline.cli.{name}")
        module.register(subparsers)
    return parser


def _split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """`--debug` anywhere before `--`, removed from the arguments."""
    args = list(argv)
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    if debug:
        args = [a for i, a in enumerate(args) if not (a == "--debug" and i < end)]
    return args, debug


def _missing_tables(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def operational_message(exc: BaseException) -> str | None:
    """One line for an error the user can fix outside the code, or None for a bug."""
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, SettingsError):
        return str(exc)
    if isinstance(exc, DBAPIError):
        from sms_pipeline.settings import get_settings, mask_url

        try:
            where = mask_url(get_settings().database_url)
        except SettingsError:
            where = "SMS_DATABASE_URL"
        if _missing_tables(exc):
            return f"the database {where} has no sms-pipeline tables: run `sms-pipeline db upgrade`"
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0:1]
        detail = first[0] if first else type(exc).__name__
        return f"database {where}: {detail}"
    if isinstance(exc, BrokerError):
        from sms_pipeline.settings import get_settings, mask_url

        return f"cannot reach the broker at {mask_url(get_settings().broker_url)}: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return None


def require_existing_database() -> None:
    """For commands that only read: refuse to create an empty embedded database (a command
    run from another folder would otherwise report on nothing, and leave a database there)."""
    from sms_pipeline.settings import get_settings, source_of

    settings = get_settings()
    if not settings.is_embedded_database or settings.embedded_database_file.exists():
        return
    where = source_of("SMS_DATA_DIR")
    told = (
        f"SMS_DATA_DIR from {where}"
        if where != "the default"
        else "SMS_DATA_DIR not set: .sms_pipeline in the working folder"
    )
    raise SettingsError(
        f"no database in the data folder {settings.sms_data_dir} ({told}): "
        "run this where `sms-pipeline up` ran, or set SMS_DATA_DIR (or SMS_DATABASE_URL) "
        "to where the data is"
    )


def announce_data_dir(args: argparse.Namespace) -> None:
    """Say where the data is, on stderr (stdout stays the command's answer)."""
    if not getattr(args, "uses_data", True):
        return
    from sms_pipeline.settings import get_settings

    settings = get_settings()
    if settings.uses_data_dir:
        print(f"sms-pipeline: data folder {settings.sms_data_dir}", file=sys.stderr)


def check_configuration(args: argparse.Namespace | None) -> None:
    """Read the settings and, when this command keeps data there, check SMS_DATA_DIR: a
    bad value raises SettingsError (one line) before any command starts. `args` None is
    `--help`: the data folder is probed, not created."""
    from sms_pipeline.settings import check_data_dir, get_settings

    settings = get_settings()
    reads_only = bool(getattr(args, "reads_only", False))
    if args is not None and not reads_only and not getattr(args, "needs_data_dir", True):
        return
    if settings.uses_data_dir:
        # A command that only reads creates nothing: the folder is probed, like for --help.
        check_data_dir(settings, create=args is not None and not reads_only)
    if reads_only:
        require_existing_database()


def _refuse(exc: BaseException, debug: bool) -> int:
    message = operational_message(exc)
    if message is None:
        raise exc
    if debug:
        traceback.print_exception(exc)
    print(f"sms-pipeline: {message}", file=sys.stderr)
    return EXIT_OPERATIONAL


def main(argv: Sequence[str] | None = None) -> int:
    arguments, debug = _split_debug(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as done:
        if done.code not in (0, None):
            raise
        # `--help` was shown: a configuration that every command would refuse is said too.
        try:
            check_configuration(None)
        except SettingsError as exc:
            return _refuse(exc, debug)
        raise
    debug = debug or args.debug
    try:
        check_configuration(args)
    except SettingsError as exc:
        return _refuse(exc, debug)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # kombu greets every serverless transport with "No hostname was supplied".
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    # Embedded mode migrates on first use; the CLI says what matters itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        announce_data_dir(args)
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _refuse(exc, debug)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
