"""The unprivileged account PostgreSQL runs as when we are root (it refuses to run as root).

`postgres` if the machine has it, else `nobody`; PG_OS_USER names another one.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from deploy.postgres.install import PostgresRuntimeError


@dataclass(frozen=True)
class Account:
    """The unprivileged account the server runs as when we are root."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_root(cls, name: str | None = None) -> Account:
        if name is None:
            name = "postgres" if _account_exists("postgres") else "nobody"
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise PostgresRuntimeError(f"no account {name!r} to run PostgreSQL as") from None
        if entry.pw_uid == 0:
            raise PostgresRuntimeError(f"PostgreSQL refuses to run as root: PG_OS_USER={name}")
        return cls(name, entry.pw_uid, entry.pw_gid)

    def command(self) -> list[str]:
        """The prefix that runs a command as this account (setpriv execs: the pid stays)."""
        if shutil.which("setpriv") is None:
            raise PostgresRuntimeError(
                "setpriv not found (util-linux): it runs PostgreSQL as an unprivileged account "
                "when started as root"
            )
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]

    def can_enter(self, path: Path) -> bool:
        """True if the account may traverse `path` (owner, primary group or other x bit)."""
        st = path.stat()
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid == self.gid:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)

    def own(self, path: Path, recursive: bool = False) -> None:
        """Give `path` (and with `recursive` everything under it) to this account."""
        paths = [path, *(path.rglob("*") if recursive else [])]
        for each in paths:
            os.chown(each, self.uid, self.gid, follow_symlinks=False)


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
