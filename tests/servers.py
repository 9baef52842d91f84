"""Real servers for integration tests, started by the tests themselves on 127.0.0.1.

Tests that need a server Debian provides (Dovecot now, PostgreSQL later) call
`server_missing` when it is not installed: on a developer's laptop the test is skipped with the
reason, and under ``REPLYTRACK_REQUIRE_SERVERS=1`` (set by ``.ci/run``) it fails, so CI always
runs them.

`Dovecot` runs ``dovecot -F`` with a throwaway configuration: IMAP only, plain-text login on
loopback, a static passdb (any user name, one password) and a Maildir per user under a
temporary directory. Each test uses its own user name, so one server serves a whole session.
As root (CI), the mail belongs to ``nobody``: Dovecot refuses to keep mail as uid 0. As another
user (a laptop), every Dovecot process runs as that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["REQUIRE_SERVERS", "Dovecot", "server_missing"]

#: Set by ``.ci/run``: a missing server fails the test instead of skipping it.
REQUIRE_SERVERS = os.environ.get("REPLYTRACK_REQUIRE_SERVERS", "") not in ("", "0")

DOVECOT_BINARY = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM_BINARY = shutil.which("doveadm") or "/usr/bin/doveadm"


def server_missing(reason: str) -> NoReturn:
    """Skip the test because a server is missing, or fail under REPLYTRACK_REQUIRE_SERVERS."""
    if REQUIRE_SERVERS:
        pytest.fail(f"{reason} (REPLYTRACK_REQUIRE_SERVERS is set, so this is a failure)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


_CONFIG = """\
# A throwaway Dovecot for replytrack's tests; written by tests/servers.py.
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
instance_name = replytrack-test-{port}
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_uid = {mail_uid}
mail_gid = {mail_gid}
mailbox_list_index = yes
imap_idle_notify_interval = 1 secs
protocol imap {{
  mail_max_userip_connections = 100
}}
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={base}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
  process_min_avail = 0
}}
service anvil {{
  chroot =
}}
service auth {{
  unix_listener auth-userdb {{
    mode = 0666
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


class Dovecot:
    """One Dovecot IMAP server on 127.0.0.1, started and stopped by pid.

    Args:
        password: the password of every user (static passdb).

    Raises:
        pytest.skip.Exception / pytest.fail.Exception: through `server_missing` when Dovecot is
            not installed or does not start.
    """

    host = "127.0.0.1"

    def __init__(self, password: str = "test-password") -> None:  # noqa: S107 (a test server)
        if not os.path.exists(DOVECOT_BINARY):
            server_missing(
                "Dovecot is not installed (Debian: apt-get install dovecot-imapd); "
                "the IMAP integration tests need a real server"
            )
        self.password = password
        self.port = free_port()
        # Not under pytest's tmp_path: as root that is mode 0700, and the mail's owner
        # (nobody) must be able to reach it.
        self.base = Path(tempfile.mkdtemp(prefix="replytrack-dovecot-"))
        self.base.chmod(0o755)
        self._process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self.mail_uid, self.mail_gid = nobody.pw_uid, nobody.pw_gid
            internal_user, internal_group, login_user = "dovecot", "dovecot", "dovenull"
        else:
            me = pwd.getpwuid(os.geteuid())
            self.mail_uid, self.mail_gid = me.pw_uid, me.pw_gid
            internal_user = login_user = me.pw_name
            internal_group = str(me.pw_gid)
        for sub in ("run", "state", "mail"):
            (self.base / sub).mkdir()
        if os.geteuid() == 0:
            os.chown(self.base / "mail", self.mail_uid, self.mail_gid)
        self.config = self.base / "dovecot.conf"
        self.config.write_text(
            _CONFIG.format(
                base=self.base,
                port=self.port,
                password=password,
                internal_user=internal_user,
                internal_group=internal_group,
                login_user=login_user,
                mail_uid=self.mail_uid,
                mail_gid=self.mail_gid,
            )
        )
        self.start()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The master process's pid while the server runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the server and wait until it accepts connections (at most 10 s)."""
        if self._process is not None:
            return
        self._process = subprocess.Popen(
            [DOVECOT_BINARY, "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = (
                    self._process.stderr.read().decode(errors="replace")
                    if self._process.stderr
                    else ""
                )
                self._process = None
                server_missing(f"Dovecot did not start: {err.strip()} {self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2) as conn,
            ):
                if conn.recv(100).startswith(b"* OK"):
                    return
            time.sleep(0.05)
        self.stop()
        server_missing(f"Dovecot did not accept connections within 10 s: {self.log_tail()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM to the master, which ends its children); wait for it."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            process.stderr.close()
        # The children may outlive the master by a moment; wait until the port is free.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), 0.2):
                    pass
            except OSError:
                return
            time.sleep(0.05)

    def restart(self) -> None:
        """Stop and start again on the same port, with the same mail."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- helpers for tests --------------------------------------------------------------------

    def maildir(self, user: str) -> Path:
        """The Maildir of `user` (it exists once the user has logged in)."""
        return self.base / "mail" / user / "Maildir"

    def kick(self, user: str) -> None:
        """Drop every IMAP connection of `user`, as a server-side disconnect does."""
        subprocess.run(
            [DOVEADM_BINARY, "-c", str(self.config), "kick", user],
            check=True,
            capture_output=True,
            timeout=10,
        )

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = (self.base / "dovecot.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
