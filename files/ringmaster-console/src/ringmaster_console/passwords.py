"""``ringmaster-console-hash``: the password hash for the console's configuration.

Reads the password from standard input (never from the command line, where ``ps`` shows it)
and prints Werkzeug's scrypt hash of it, which the console checks logins against.
"""

from __future__ import annotations

import getpass
import sys

from werkzeug.security import check_password_hash, generate_password_hash

METHOD = "scrypt"
MIN_LENGTH = 12


def make_hash(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"the password must be at least {MIN_LENGTH} characters")
    return generate_password_hash(password, method=METHOD)


def matches(password_hash: str, password: str) -> bool:
    try:
        return check_password_hash(password_hash, password)
    except ValueError:  # a malformed hash never matches
        return False


def main(argv: list[str] | None = None) -> int:
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
    try:
        print(make_hash(password.rstrip("\n")))
    except ValueError as exc:
        print(f"ringmaster-console-hash: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
