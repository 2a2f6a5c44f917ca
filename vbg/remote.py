"""A running vbg driven from this computer: where its server is, and requests to it; and, before
one starts, whether its port can be served on (apart from the server, which loads aiohttp).

A running ``vbg --serve`` writes a small file with its address and token (mode 0600) into
the user's runtime folder (platformdirs: ``$XDG_RUNTIME_DIR/vbg`` on Linux) and removes it
when it stops, so ``vbg get`` and ``vbg set`` (a script, a desktop shortcut) need neither
port nor token. Requests go to the same ``/api/state`` as the control page's, as JSON
without an ``Origin`` (the server takes that from programs on this computer).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from vbg.config import SETTINGS_FIELDS
from vbg.errors import VbgError

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0


def runtime_dir() -> Path:
    """Where running servers are recorded (this user's only; in a temporary folder where the
    system has no runtime folder, which platformdirs warns about: a fallback, not a fault)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_dir("vbg"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process under a reused pid
        return False
    return True


def port_error(host: str, port: int, exc: OSError) -> VbgError:
    """The one line for a port that cannot be served on, the same from the check and the server."""
    return VbgError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); pick another --port "
                    "or --host (`vbg doctor --port N` checks one)")


def check_port(host: str, port: int) -> None:
    """Raise the --serve error now unless ``host:port`` can be bound (checked before a model download)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will bind it
            probe.bind(address)
    except OSError as exc:
        raise port_error(host, port, exc) from None


@dataclass
class ServerFile:
    """The record of one running server: its address (without token) and its token."""

    url: str
    token: str | None
    pid: int
    path: Path | None = None

    @classmethod
    def write(cls, url: str, token: str | None) -> ServerFile:
        """Record this process's server; where that fails, say so and go on (only `vbg set` needs it)."""
        record = cls(url, token, os.getpid())
        folder = runtime_dir()
        path = folder / f"server-{record.pid}.json"
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
                json.dump({"url": url, "token": token, "pid": record.pid}, file)
        except OSError as exc:
            log.warning("cannot record the server in %s (%s): `vbg set` will not find it", folder, exc.strerror)
            return record
        record.path = path
        return record

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def running_servers() -> list[ServerFile]:
    """The servers of this user's running vbgs, the most recently started first."""
    found = []
    for path in runtime_dir().glob("server-*.json"):
        try:
            started = path.stat().st_mtime
            data = json.loads(path.read_text("utf-8"))
            record = ServerFile(str(data["url"]), data["token"], int(data["pid"]), path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(record.pid):
            found.append((started, record))
        else:  # left by a vbg that was killed
            path.unlink(missing_ok=True)
    return [record for _, record in sorted(found, key=lambda item: item[0], reverse=True)]


def find_server(port: int | None = None) -> ServerFile:
    """The running server to talk to: the one on ``port``, else the most recently started."""
    servers = running_servers()
    if port is not None:
        servers = [s for s in servers if s.url.rstrip("/").rsplit(":", 1)[-1] == str(port)]
    if not servers:
        where = f" on port {port}" if port is not None else ""
        raise VbgError(f"no running `vbg --serve`{where} found (none recorded in {runtime_dir()}); "
                       "start one with `vbg --serve`")
    return servers[0]


def request_state(server: ServerFile, change: dict[str, Any] | None = None) -> dict[str, Any]:
    """GET the live settings, or POST ``change`` and get them back as they now are."""
    headers = {"Content-Type": "application/json"}
    if server.token:
        headers["X-Vbg-Token"] = server.token
    body = json.dumps(change).encode() if change is not None else None
    request = urllib.request.Request(server.url.rstrip("/") + "/api/state", data=body, headers=headers,
                                     method="POST" if change is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            reason = json.loads(error.read())["error"]
        except (ValueError, KeyError, TypeError):
            reason = error.reason
        raise VbgError(f"vbg at {server.url} refused it: {reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise VbgError(f"vbg at {server.url} does not answer ({reason}); is it still running?") from None


def parse_assignments(words: list[str]) -> dict[str, Any]:
    """``["mode=blur", "blur=30", "mirror=true"]`` -> ``{"mode": "blur", "blur": 30, "mirror": True}``:
    a value is read as JSON (numbers, true/false) unless the setting is text."""
    change: dict[str, Any] = {}
    for word in words:
        key, equals, text = word.partition("=")
        if not equals or not key:
            raise VbgError(f"'{word}' is not KEY=VALUE; e.g. `vbg set mode=blur blur=30`")
        field = SETTINGS_FIELDS.get(key)
        if field is not None and "str" in str(field.type):
            change[key] = text
            continue
        try:
            change[key] = json.loads(text)
        except ValueError:
            change[key] = text
    return change


def toggled(state: dict[str, Any], what: str) -> dict[str, Any]:
    """The change that flips ``what`` in ``state``: a true/false setting, or ``passthrough``
    (on, or back to the mode it was switched on from)."""
    if what == "passthrough":
        return {"mode": state["resume_mode"] if state["mode"] == "passthrough" else "passthrough"}
    if isinstance(state.get(what), bool):
        return {what: not state[what]}
    switches = sorted(key for key, value in state.items() if isinstance(value, bool))
    raise VbgError(f"cannot toggle '{what}': toggle passthrough or one of {', '.join(switches)}")
