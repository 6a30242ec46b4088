"""Health checks with Docker's semantics: cmd (run in the container), http GET, tcp connect.

A check runs in a child process of the supervisor that joins the container (for ``cmd``: all
its namespaces, root, cgroup and credentials; for ``http``/``tcp``: its network namespace
only), so a check reaches exactly what a process of the app would, and a hung check is killed
at its timeout without disturbing the supervisor.

State machine (Docker's): ``starting`` until the first success; each success makes it
``healthy`` and resets the failing streak; a failure (non-zero exit, timeout, refused
connection, HTTP status outside 200-399) adds to the streak, and ``retries`` consecutive failures
make it ``unhealthy``. Failures during ``start_period`` do not count, but a success there counts.
The last five results are kept, with the first 4 KiB of their output.
"""

from __future__ import annotations

import os

# Re-exported: app specs give their durations to it.
from tophan._internal.units import parse_duration as parse_duration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KEEP_RESULTS = 5
MAX_OUTPUT = 4096
DEFAULTS = {"interval": 30.0, "timeout": 30.0, "retries": 3, "start_period": 0.0}


class Check:
    """One health check. (A plain class: a supervisor's memory is counted, and dataclasses
    pulls in inspect, ast and tokenize.)"""

    FIELDS = ("kind", "cmd", "url", "address", "interval", "timeout", "retries", "start_period")

    def __init__(
        self,
        kind: str,  # "cmd", "http" or "tcp"
        cmd: list[str] | None = None,
        url: str = "",
        address: str = "",
        interval: float = 30.0,
        timeout: float = 30.0,
        retries: int = 3,
        start_period: float = 0.0,
    ) -> None:
        self.kind = kind
        self.cmd = list(cmd or [])
        self.url = url
        self.address = address
        self.interval = interval
        self.timeout = timeout
        self.retries = retries
        self.start_period = start_period

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cmd": self.cmd,
            "url": self.url,
            "address": self.address,
            "interval": self.interval,
            "timeout": self.timeout,
            "retries": self.retries,
            "start_period": self.start_period,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Check:
        return cls(**{k: d[k] for k in cls.FIELDS if k in d})


def from_docker(hc: dict[str, Any]) -> Check | None:
    """An image config's Healthcheck (Test + nanosecond durations) -> Check, or None."""
    test = hc.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        cmd = ["/bin/sh", "-c", " ".join(test[1:])]
    elif test[0] == "CMD":
        cmd = list(test[1:])
    else:
        return None
    ns = 1e-9
    return Check(
        "cmd",
        cmd=cmd,
        interval=hc.get("Interval", 0) * ns or DEFAULTS["interval"],
        timeout=hc.get("Timeout", 0) * ns or DEFAULTS["timeout"],
        retries=int(hc.get("Retries", 0) or DEFAULTS["retries"]),
        start_period=hc.get("StartPeriod", 0) * ns,
    )


# -- the state machine -------------------------------------------------------------------------


class Health:
    def __init__(self, check: Check, started: float) -> None:
        self.check = check
        self.started = started
        self.status = "starting"
        self.failing_streak = 0
        self.log: list[dict[str, Any]] = []

    def record(self, start: float, end: float, exit_code: int, output: str) -> None:
        self.log.append(
            {"start": start, "end": end, "exit_code": exit_code, "output": output[:MAX_OUTPUT]}
        )
        del self.log[:-KEEP_RESULTS]
        if exit_code == 0:
            self.status = "healthy"
            self.failing_streak = 0
            return
        if start - self.started < self.check.start_period and self.status == "starting":
            return  # failures while the app starts do not count
        self.failing_streak += 1
        if self.failing_streak >= self.check.retries:
            self.status = "unhealthy"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "failing_streak": self.failing_streak, "log": self.log}


# -- running one check (in a forked child of the supervisor) -----------------------------------


def probe_network(check: Check, target_pid: int) -> tuple[int, str]:
    """Run an http or tcp check from inside the container's network namespace.

    Called in a child process: it joins the namespace for good."""
    from tophan._internal import libc as _libc

    # Rootless: the network namespace belongs to the container's user namespace, which we
    # must enter first to have the right to join it.
    for ns in ("user", "net"):
        theirs = f"/proc/{target_pid}/ns/{ns}"
        if os.stat(theirs).st_ino != os.stat(f"/proc/self/ns/{ns}").st_ino:
            fd = os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)
            _libc.setns(fd)
            os.close(fd)
    if check.kind == "tcp":
        return _tcp(check.address, check.timeout)
    return _http(check.url, check.timeout)


def _split_hostport(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return address.strip("[]") or "127.0.0.1", default_port
    return host.strip("[]"), int(port)


def _tcp(address: str, timeout: float) -> tuple[int, str]:
    import socket

    host, port = _split_hostport(address, 0)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return 0, f"connected to {host}:{port}"
    except OSError as e:
        return 1, f"cannot connect to {host}:{port}: {e.strerror or e}"


def _http(url: str, timeout: float) -> tuple[int, str]:
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = _split_hostport(u.netloc, 443 if u.scheme == "https" else 80)
    conn: http.client.HTTPConnection
    if u.scheme == "https":
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # a local probe of our own app, like curl -k
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""))
        resp = conn.getresponse()
        body = resp.read(MAX_OUTPUT).decode(errors="replace")
    except OSError as e:
        return 1, f"GET {url}: {e.strerror or e}"
    finally:
        conn.close()
    ok = 200 <= resp.status < 400
    return (0 if ok else 1), f"GET {url}: {resp.status} {resp.reason}\n{body}"
