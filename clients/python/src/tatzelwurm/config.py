"""Where the coordinator is and how to authenticate: arguments, environment, data directory.

Resolution order, for the address and for the token separately:

1. the explicit argument;
2. the environment: ``TATZELWURM_SERVER`` (``host:port``) and ``TATZELWURM_TOKEN``;
3. the coordinator's data directory, whose ``address`` file holds ``host:port`` and whose
   ``token`` file holds the token. The directory is the ``data_dir`` argument, else
   ``TATZELWURM_DATA``, else ``$XDG_DATA_HOME/tatzelwurm``, else ``~/.local/share/tatzelwurm``.

The address falls back to ``127.0.0.1:7600`` (the coordinator's default). Resolution is repeated
on every reconnect, so a client that found the coordinator through its data directory follows it
to the new port after a restart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .protocol import TatzelwurmError

__all__ = ["Endpoint", "ConfigurationError", "default_data_dir", "parse_address", "resolve_endpoint", "DEFAULT_ADDRESS"]

DEFAULT_ADDRESS = ("127.0.0.1", 7600)


class ConfigurationError(TatzelwurmError):
    """The coordinator's address or token could not be determined."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    token: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def default_data_dir() -> Path:
    env = os.environ.get("TATZELWURM_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "tatzelwurm"


def parse_address(text: str) -> tuple[str, int, str | None]:
    """Parse ``host:port``, ``[v6]:port``, ``tcp://host:port`` or ``tatzelwurm://token@host:port``
    (a ``?token=`` query also works). Returns ``(host, port, token or None)``."""
    text = text.strip()
    if "://" not in text:
        text = "tcp://" + text
    parts = urlsplit(text)
    if parts.hostname is None:
        raise ConfigurationError(f"cannot parse coordinator address {text!r}")
    try:
        port = parts.port or DEFAULT_ADDRESS[1]
    except ValueError as exc:
        raise ConfigurationError(f"bad port in coordinator address {text!r}") from exc
    token = None
    if parts.username:
        token = unquote(parts.username)
    query = parse_qs(parts.query)
    if "token" in query:
        token = query["token"][0]
    return parts.hostname, port, token


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def resolve_endpoint(address: str | None = None, token: str | None = None,
                     data_dir: str | os.PathLike[str] | None = None) -> Endpoint:
    """Determine the coordinator's address and the token (see the module docstring)."""
    data = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    url_token: str | None = None
    text = address or os.environ.get("TATZELWURM_SERVER") or _read(data / "address")
    if text:
        host, port, url_token = parse_address(text)
    else:
        host, port = DEFAULT_ADDRESS
    tok = token or url_token or os.environ.get("TATZELWURM_TOKEN") or _read(data / "token")
    if tok is None:
        raise ConfigurationError(
            "no tatzelwurm token: pass token=..., set TATZELWURM_TOKEN, or point TATZELWURM_DATA "
            f"(or data_dir=...) at the coordinator's data directory (looked in {data / 'token'})")
    return Endpoint(host, port, tok)
