"""Real servers for integration tests, started by the tests themselves on 127.0.0.1.

Tests that need a server Debian provides (Dovecot, PostgreSQL) call
`server_missing` when it is not installed: on a developer's laptop the test is skipped with the
reason, and under ``REPLYTRACK_REQUIRE_SERVERS=1`` (set by ``.ci/run``) it fails, so CI always
runs them.

`Dovecot` runs ``dovecot -F`` with a throwaway configuration: IMAP only, plain-text login on
loopback, a static passdb (any user name, one password; ``XOAUTH2`` and ``OAUTHBEARER`` take
the same password as their token) and a Maildir per user under a temporary directory. Each
test uses its own user name, so one server serves a whole session. As root (CI), the mail
belongs to ``nobody``: Dovecot refuses to keep mail as uid 0. As another user (a laptop), every
Dovecot process runs as that user.

When the ``openssl`` command is there, the server also speaks TLS: a self-signed certificate
for ``127.0.0.1`` and ``localhost`` is made at start (`Dovecot.cafile` verifies it), STARTTLS is
offered on the plain port and implicit TLS listens on `Dovecot.ssl_port`. Without ``openssl``,
``ssl_port`` is ``None`` and TLS tests call `Dovecot.require_tls`.

Dovecot runs in a process group of its own, so that `Dovecot.stop` ends every process it
started, the per-connection ``imap`` processes included: a restart drops the connections, as a
real server restart does.

`PostgreSQL` runs ``postgres`` on a cluster ``initdb`` made in a temporary directory (or in a
kept directory, for benchmarks): 127.0.0.1 only, trust authentication for ``user=postgres``,
the Unix socket in the temporary directory, fsync off unless asked to be durable. Its binaries
are found through ``pg_config --bindir`` or ``/usr/lib/postgresql/*/bin`` (the newest), or
``$REPLYTRACK_POSTGRES_BINDIR``. As root (CI) the cluster belongs to the ``postgres`` user
(PostgreSQL refuses to run as root); as another user, to that user. It stops by a fast
shutdown (SIGINT to the postmaster, by its pid).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["REQUIRE_SERVERS", "Dovecot", "PostgreSQL", "server_missing"]

#: Set by ``.ci/run``: a missing server fails the test instead of skipping it.
REQUIRE_SERVERS = os.environ.get("REPLYTRACK_REQUIRE_SERVERS", "") not in ("", "0")

DOVECOT_BINARY = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM_BINARY = shutil.which("doveadm") or "/usr/bin/doveadm"
OPENSSL_BINARY = shutil.which("openssl")


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
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
# A wrong password answers at once: tests of failed logins need not wait 2 s each.
auth_failure_delay = 0
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_uid = {mail_uid}
mail_gid = {mail_gid}
mailbox_list_index = yes
imap_idle_notify_interval = 1 secs
namespace inbox {{
  inbox = yes
  separator = .
  # RFC 6154 special-use folders, found by their LIST attribute (as Gmail's \\All is).
  mailbox "All Mail" {{
    special_use = \\All
  }}
  mailbox Sent {{
    special_use = \\Sent
  }}
}}
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
    address = 127.0.0.1
    port = {ssl_port}
  }}
  chroot =
  process_min_avail = 0
}}
service anvil {{
  chroot =
  # Dovecot delays every login from an address after a failed one (auth penalty, up to 15 s
  # and kept for an hour): tests of failed logins would slow the tests after them. Auth
  # cannot open a socket of mode 0, and then runs without the penalty.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
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


def _end_group(group: int) -> None:
    """SIGTERM what is left of process group `group`, then SIGKILL; wait (bounded) for the end."""
    for sig, patience in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)


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
        #: The certificate that verifies the server (``None`` without ``openssl``).
        self.cafile: Path | None = self._make_certificate()
        #: The implicit-TLS (IMAPS) port, or ``None`` without TLS.
        self.ssl_port: int | None = free_port() if self.cafile is not None else None
        if self.cafile is not None:
            key = self.base / "tls" / "key.pem"
            ssl_config = f"ssl = yes\nssl_cert = <{self.cafile}\nssl_key = <{key}"
        else:
            ssl_config = "ssl = no"
        self.config = self.base / "dovecot.conf"
        self.config.write_text(
            _CONFIG.format(
                base=self.base,
                port=self.port,
                ssl_port=self.ssl_port or 0,
                ssl=ssl_config,
                password=password,
                internal_user=internal_user,
                internal_group=internal_group,
                login_user=login_user,
                mail_uid=self.mail_uid,
                mail_gid=self.mail_gid,
            )
        )
        self.start()

    def _make_certificate(self) -> Path | None:
        if OPENSSL_BINARY is None:
            return None
        tls = self.base / "tls"
        tls.mkdir()
        cert, key = tls / "cert.pem", tls / "key.pem"
        result = subprocess.run(
            [
                OPENSSL_BINARY,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return cert if result.returncode == 0 else None

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
            start_new_session=True,  # a process group of its own: stop() ends all of it
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = (
                    self._process.stderr.read().decode(errors="replace")
                    if self._process.stderr
                    else ""
                )
                if self._process.stderr is not None:
                    self._process.stderr.close()
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
        """Stop the server and every process it started; wait until they are gone.

        SIGTERM goes to the whole process group at once: sent to the master alone, it takes
        over a second to shut down and leaves the per-connection ``imap`` processes (and its
        log and stats processes) running on their own for longer, serving their clients.
        """
        process, self._process = self._process, None
        if process is None:
            return
        group = process.pid  # start_new_session: the master leads its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            process.stderr.close()
        _end_group(group)
        # Wait until the port is free again (a restart reuses it).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), 0.2):
                    pass
            except OSError:
                return
            time.sleep(0.05)

    def restart(self) -> None:
        """Stop and start again on the same ports, with the same mail; connections drop."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- helpers for tests --------------------------------------------------------------------

    def require_tls(self) -> None:
        """Skip (fail in CI) when the server could not be given a certificate."""
        if self.cafile is None:
            server_missing("the openssl command is missing: Dovecot runs without TLS")

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies this server's self-signed certificate."""
        self.require_tls()
        return ssl.create_default_context(cafile=str(self.cafile))

    def maildir(self, user: str) -> Path:
        """The Maildir of `user` (it exists once the user has logged in)."""
        return self.base / "mail" / user / "Maildir"

    def folder_path(self, user: str, folder: str = "INBOX") -> Path:
        """The Maildir++ directory of `folder` (``INBOX`` is the Maildir itself)."""
        root = self.maildir(user)
        return root if folder == "INBOX" else root / f".{folder}"

    def write_messages(
        self,
        user: str,
        messages: Iterable[bytes],
        *,
        folder: str = "INBOX",
        received: dt.datetime | None = None,
        step: dt.timedelta = dt.timedelta(seconds=1),
    ) -> int:
        """Deliver `messages` by writing files into the folder's ``new/``, as an MDA does.

        Much faster than APPENDing thousands of messages. The folder must exist (log in once
        and create it over IMAP first). Each file is written in ``tmp/`` and renamed into
        ``new/``, owned by the mail user (Dovecot will not read mail it does not own), with
        its mtime, which Dovecot reports as INTERNALDATE, at `received` plus `step` per
        message. File names sort in delivery order, which is the order Dovecot numbers them.

        Returns:
            How many messages were written.
        """
        base = self.folder_path(user, folder)
        tmp, new = base / "tmp", base / "new"
        start = received or dt.datetime.now(dt.timezone.utc)
        count = 0
        for count, data in enumerate(messages, 1):
            when = (start + step * (count - 1)).timestamp()
            name = f"{int(when)}.M{count:07d}P{os.getpid()}.replytrack,S={len(data)}"
            path = tmp / name
            path.write_bytes(data)
            os.utime(path, (when, when))
            if os.geteuid() == 0:
                os.chown(path, self.mail_uid, self.mail_gid)
            path.rename(new / name)
        return count

    def kick(self, user: str) -> None:
        """Drop every IMAP connection of `user`, as a server-side disconnect does.

        Returns once the processes that served them have exited: ``doveadm kick`` only signals
        them, and a command sent meanwhile could still be answered on the old connection.
        """
        who = subprocess.run(
            [DOVEADM_BINARY, "-c", str(self.config), "who", user],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        )
        # "user1    1 imap  (12050) (127.0.0.1)": the pids in parentheses, digits only.
        groups = re.findall(r"\(([\d ]+)\)", who.stdout)
        pids = [int(pid) for group in groups for pid in group.split()]
        subprocess.run(
            [DOVEADM_BINARY, "-c", str(self.config), "kick", user],
            check=True,
            capture_output=True,
            timeout=10,
        )
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _alive(pid)]
            time.sleep(0.02)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = (self.base / "dovecot.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

#: Where to look for PostgreSQL's server binaries instead of ``pg_config --bindir`` and
#: ``/usr/lib/postgresql/*/bin`` (a directory; one without ``initdb`` counts as "not installed").
POSTGRES_BINDIR_VARIABLE = "REPLYTRACK_POSTGRES_BINDIR"


def postgres_bindir() -> Path | None:
    """The directory holding ``initdb``, ``postgres`` and ``pg_ctl``, or ``None``.

    ``$REPLYTRACK_POSTGRES_BINDIR`` when set; else ``pg_config --bindir`` when ``pg_config``
    is on the PATH and its directory has ``initdb`` (Debian's ``pg_config`` may come from
    ``libpq-dev`` without a server); else the newest ``/usr/lib/postgresql/<major>/bin``.
    """

    def complete(path: Path) -> bool:
        return all((path / name).is_file() for name in ("initdb", "postgres"))

    forced = os.environ.get(POSTGRES_BINDIR_VARIABLE)
    if forced:
        return Path(forced) if complete(Path(forced)) else None
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            found = Path(done.stdout.strip())
            if complete(found):
                return found
    versions = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        with contextlib.suppress(ValueError):
            versions.append((float(candidate.parent.name), candidate))
    for _, candidate in sorted(versions, reverse=True):
        if complete(candidate):
            return candidate
    return None


_PG_HBA = """\
# A throwaway PostgreSQL for replytrack's tests; written by tests/servers.py.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
"""


class PostgreSQL:
    """One PostgreSQL server on 127.0.0.1, in a throwaway cluster, started and stopped by pid.

    ``initdb`` makes a cluster under a temporary directory (or in `data_dir`, kept between
    runs); the server listens on 127.0.0.1 only, on a free port, with its Unix socket in the
    temporary directory, and trusts every local connection (``user=postgres``, no password).
    As root (CI), ``initdb`` and ``postgres`` run as the ``postgres`` user (``nobody`` when
    there is none): PostgreSQL refuses to run as root. As another user (a laptop), they run as
    that user.

    Args:
        durable: keep PostgreSQL's durable defaults (``fsync``, ``synchronous_commit``,
            ``full_page_writes`` on). The default turns them off: tests need speed, not a
            cluster that survives a power cut. Benchmarks pass True.
        data_dir: a cluster directory to use (made by ``initdb`` when it does not exist yet)
            and keep: `close` leaves it. ``None``: a temporary cluster, removed by `close`.
        settings: more ``-c name=value`` server settings.

    Raises:
        pytest.skip.Exception / pytest.fail.Exception: through `server_missing` when
            PostgreSQL is not installed or does not start.
    """

    host = "127.0.0.1"
    user = "postgres"

    def __init__(
        self,
        *,
        durable: bool = False,
        data_dir: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            server_missing(
                "PostgreSQL is not installed (Debian: apt-get install postgresql); "
                "the PostgreSQL store's tests need a real server"
            )
        self.bindir = bindir
        self.port = free_port()
        self.durable = durable
        self.base = Path(tempfile.mkdtemp(prefix="replytrack-postgres-"))
        self.base.chmod(0o755)  # the server's user must reach its socket directory
        self.keep_data = data_dir is not None
        self.data = Path(data_dir) if data_dir is not None else self.base / "data"
        self.run_dir = self.base / "run"
        self.run_dir.mkdir()
        self.log = self.base / "postgres.log"
        self._process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                account = pwd.getpwnam("nobody")
            self._uid, self._gid = account.pw_uid, account.pw_gid
            os.chown(self.run_dir, self._uid, self._gid)
            self.log.touch()
            os.chown(self.log, self._uid, self._gid)
        else:
            self._uid, self._gid = os.geteuid(), os.getegid()
        self.settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.run_dir),
            "max_connections": "200",
            **(
                {}
                if durable
                else {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
            ),
            **(settings or {}),
        }
        try:
            if not (self.data / "PG_VERSION").exists():
                self._initdb()
            self.start()
        except BaseException:
            self.close()
            raise

    # -- processes ----------------------------------------------------------------------------

    def _as_server_user(self) -> dict[str, object]:
        """Popen arguments that run a command as the cluster's owner (as root: not root)."""
        if os.geteuid() != 0:
            return {}
        return {"user": self._uid, "group": self._gid, "extra_groups": []}

    def _initdb(self) -> None:
        if self.data.exists() and any(self.data.iterdir()):
            server_missing(f"{self.data} exists and is not a PostgreSQL cluster")
        self.data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.data, self._uid, self._gid)
            # The parents of a kept cluster (a benchmark's --data-dir) must be traversable.
            for parent in self.data.parents:
                if parent == Path(tempfile.gettempdir()) or parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o711)
        self.data.chmod(0o700)
        command = [
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            self.user,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            *([] if self.durable else ["--no-sync"]),
        ]
        done = subprocess.run(
            command,
            capture_output=True,
            timeout=120,
            check=False,
            cwd=self.base,
            **self._as_server_user(),  # type: ignore[call-overload]
        )
        if done.returncode != 0:
            server_missing(
                f"initdb failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
            )
        # Trust on loopback and the Unix socket only, whatever initdb wrote.
        (self.data / "pg_hba.conf").write_text(_PG_HBA)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while the server runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the server and wait until it accepts connections (at most 30 s)."""
        if self._process is not None:
            return
        command = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                start_new_session=True,  # a process group of its own: stop() ends all of it
                **self._as_server_user(),  # type: ignore[call-overload]
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                server_missing(f"PostgreSQL did not start: {self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        server_missing(f"PostgreSQL did not accept connections within 30 s: {self.log_tail()}")

    def _ready(self) -> bool:
        import psycopg  # noqa: PLC0415 (the postgres extra; Dovecot's tests do without it)

        try:
            with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """Stop the server (fast shutdown: SIGINT to the postmaster) and wait until it is gone.

        Clients are disconnected and open transactions roll back, as in a real restart.
        """
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        _end_group(process.pid)  # any backend the postmaster left behind

    def restart(self) -> None:
        """Stop and start again on the same port, with the same data; connections drop."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its files (a kept `data_dir` stays)."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
        if not self.keep_data:
            shutil.rmtree(self.data, ignore_errors=True)

    # -- helpers for tests --------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq conninfo string for database `dbname`, over TCP on 127.0.0.1."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def create_database(self, name: str) -> str:
        """Create an empty database `name` (from ``template0``); return its conninfo."""
        import psycopg  # noqa: PLC0415 (the postgres extra)
        from psycopg import sql  # noqa: PLC0415

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            )
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, disconnecting whoever is still connected to it."""
        import psycopg  # noqa: PLC0415 (the postgres extra)
        from psycopg import sql  # noqa: PLC0415

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def empty_database(self, name: str) -> None:
        """Make database `name` as it was when created: end its connections, drop its schemas.

        Every schema but PostgreSQL's own goes (with what is in it, extensions included), and
        an empty ``public`` is made again.
        """
        import psycopg  # noqa: PLC0415 (the postgres extra)
        from psycopg import sql  # noqa: PLC0415

        with psycopg.connect(self.dsn(name), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            schemas = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%'"
                " AND nspname <> 'information_schema'"
            ).fetchall()
            for (schema,) in schemas:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            conn.execute("CREATE SCHEMA public")

    def version(self) -> str:
        """``postgres --version``."""
        done = subprocess.run(
            [str(self.bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout.strip()

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
