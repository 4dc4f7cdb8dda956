"""`sms-pipeline export|erase --phone N` (one person's data) and `sms-pipeline audit list`.

Every export and erasure writes an audit row naming the person by keyed hash only, and
the operating-system user who ran it. docs/privacy.md describes what is kept and where.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sms_pipeline.services.masking import mask_phone


def _export(args: argparse.Namespace) -> int:
    from sms_pipeline.db import session_scope
    from sms_pipeline.errors import InvalidMessage
    from sms_pipeline.services import privacy

    try:
        with session_scope() as session:
            data = privacy.export_subject(session, args.phone, privacy.os_actor())
    except InvalidMessage as exc:
        print(f"sms-pipeline export: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True))
    return 0


def _erase(args: argparse.Namespace) -> int:
    from sms_pipeline.db import session_scope
    from sms_pipeline.errors import InvalidMessage
    from sms_pipeline.services import privacy

    try:
        number = privacy.normalise_subject(args.phone)
    except InvalidMessage as exc:
        print(f"sms-pipeline erase: {exc}", file=sys.stderr)
        return 2
    if not args.yes:
        if not sys.stdin.isatty():
            print("sms-pipeline erase: add --yes to erase without a prompt", file=sys.stderr)
            return 2
        answer = input(f"Erase every row holding {mask_phone(number)}? Type 'erase': ")
        if answer.strip() != "erase":
            print("nothing erased")
            return 1
    with session_scope() as session:
        removed = privacy.erase_subject(session, number, privacy.os_actor())
    print(f"erased {mask_phone(number)}:")
    for table, count in removed.items():
        print(f"  {table:<18} {count}")
    if removed.get("opt_outs"):
        print("  (the opt-out is kept as a keyed hash, so STOP still holds)")
    print(
        "verification.verifications belongs to the verification service: "
        "its rows for this number are that service's to purge."
    )
    return 0


def _audit_list(args: argparse.Namespace) -> int:
    from sms_pipeline.db import session_scope
    from sms_pipeline.services import privacy

    with session_scope() as session:
        rows = privacy.audit_rows(session, limit=args.limit)
        lines = [
            (
                f"{row.at:%Y-%m-%d %H:%M:%S}  {row.actor:<24} {row.action:<10} "
                f"{row.account or '*':<16} {(row.subject_hash or '-')[:16]:<16}  "
                f"{row.detail or ''}"
            )
            for row in rows
        ]
    print(f"{'WHEN (UTC)':<19}  {'WHO':<24} {'ACTION':<10} {'ACCOUNT':<16} {'SUBJECT':<16}  DETAIL")
    for line in lines:
        print(line)
    return 0


def register(subparsers: Any) -> None:
    export = subparsers.add_parser(
        "export", help="print every row about one phone number as JSON (audited)"
    )
    export.add_argument("--phone", required=True, help="E.164 number, e.g. +380931234567")
    export.set_defaults(func=_export)

    erase = subparsers.add_parser(
        "erase", help="remove every row holding one phone number (audited; opt-out kept hashed)"
    )
    erase.add_argument("--phone", required=True, help="E.164 number, e.g. +380931234567")
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    erase.set_defaults(func=_erase)

    audit = subparsers.add_parser("audit", help="the data-protection audit log")
    sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    lst = sub.add_parser("list", help="latest audit rows (people by keyed hash only)")
    lst.add_argument("--limit", type=int, default=100, help="newest rows to show (default 100)")
    lst.set_defaults(func=_audit_list)
