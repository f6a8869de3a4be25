"""A tracking store checked before MLflow opens it: what would fail deep inside MLflow (a traceback),
write into the wrong file, or wait ~100 s on retries fails here, in one line, before anything is written.

    check_store("sqlite:////abs/mlflow.db")                 # a writer: a missing file is made later
    check_store("sqlite:////abs/mlflow.db", reader=True)    # a reader: the file must be a store already
    check_store("http://mlflow:5000")                       # someone must answer there, within seconds

Called at a store's first touch only (the sweep's tracker, a reader's client): a server that goes away
later is an outage, which the writer waits out (search/tracking/retry.py), not bad input.
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path
from urllib.parse import unquote, urlsplit

from search.errors import UserError

__all__ = ["check_store", "CONNECT_SECONDS"]

CONNECT_SECONDS = 3.0  # a server on the same network answers a connection in milliseconds

# SQLAlchemy's database drivers: the one a scheme uses by default, and by its `+driver` name → the
# module it imports and the package that provides it
_DRIVERS = {
    "postgresql": ("psycopg", "psycopg[binary]"), "postgresql+psycopg2": ("psycopg2", "psycopg2-binary"),
    "postgresql+psycopg": ("psycopg", "psycopg[binary]"), "postgresql+pg8000": ("pg8000", "pg8000"),
    "mysql": ("MySQLdb", "mysqlclient"), "mysql+mysqldb": ("MySQLdb", "mysqlclient"),
    "mysql+pymysql": ("pymysql", "pymysql"), "mysql+mysqlconnector": ("mysql.connector", "mysql-connector-python"),
    "mssql": ("pyodbc", "pyodbc"), "mssql+pyodbc": ("pyodbc", "pyodbc"), "mssql+pymssql": ("pymssql", "pymssql"),
}
_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_store(uri: str, *, reader: bool = False) -> None:
    """Raise UserError if the store at `uri` (as `resolve_uri` returns it) cannot be used as one."""
    scheme = uri.partition(":")[0].lower()
    if scheme == "sqlite":
        _check_sqlite(uri, reader)
    elif scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        module, package = _DRIVERS.get(scheme, (None, None))
        if module is not None and importlib.util.find_spec(module.split(".")[0]) is None:
            raise UserError(f"tracking URI {_safe(uri)}: the {scheme.split('+')[0]} driver is not installed "
                            f"(module {module}); install it with `pip install {package}`")
        _answers(uri)
    elif scheme in ("http", "https"):
        _answers(uri)
        _health(uri)


def _check_sqlite(uri: str, reader: bool) -> None:
    if ":memory:" in uri:
        return
    path = Path(unquote(uri[len("sqlite:///"):]))
    if path.is_dir():
        raise UserError(f"tracking URI {uri}: {path} is a directory; expected an MLflow sqlite file (.db)")
    if not path.exists():
        if reader:  # opening a missing file creates it: a reader must say where it looked instead
            raise UserError(f"tracking URI {uri}: no MLflow database at {path.resolve()}")
        if not path.parent.is_dir():
            raise UserError(f"tracking URI {uri}: folder {path.parent} does not exist; create it or choose "
                            "another path for the MLflow database")
        return
    if not path.is_file():
        raise UserError(f"tracking URI {uri}: {path} is not a regular file; expected an MLflow sqlite file (.db)")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise UserError(f"tracking URI {uri}: cannot read {path} ({e.strerror or e})") from None
    if not head:  # empty: sqlite takes it as an empty database, a new store is made in it (retry.first_touch)
        if reader:
            raise UserError(f"tracking URI {uri}: {path} is empty, no MLflow database yet; run `mentee sweep` "
                            "first")
        return
    if head != _SQLITE_MAGIC:
        raise UserError(f"tracking URI {uri}: {path} is not an SQLite database (it starts {head[:8]!r}); "
                        "expected an MLflow store, or a new path")


def _answers(uri: str) -> None:
    """A TCP connection to the server's host and port within CONNECT_SECONDS, or one line saying so."""
    parts = urlsplit(uri)
    if not parts.hostname:  # a local socket (postgresql:///db): nothing to dial
        return
    try:
        port = parts.port or _PORTS.get(parts.scheme.split("+")[0].lower(), 80)
    except ValueError:
        raise UserError(f"tracking URI {_safe(uri)}: the port is not a number in 1..65535") from None
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_SECONDS).close()
    except OSError as e:
        why = f"no answer within {CONNECT_SECONDS:g} s" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise UserError(f"tracking URI {_safe(uri)}: nothing answers at {parts.hostname}:{port} ({why}); start the "
                        "server or check the URI") from None


def _health(uri: str) -> None:
    """An MLflow server answers GET /health; a proxy, another service or a wrong path does not."""
    import urllib.error
    import urllib.request

    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=CONNECT_SECONDS):
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):  # an MLflow behind a login: it is there, MLflow's client brings the credentials
            return
        raise UserError(f"tracking URI {_safe(uri)}: something answers, but not as an MLflow server (GET /health: "
                        f"HTTP {e.code}); check the host, port and path") from None
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"tracking URI {_safe(uri)}: no MLflow server answers ({reason}); start the server or "
                        "check the URI") from None


def _safe(uri: str) -> str:
    """The URI without a password, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return uri.replace(f":{parts.password}@", ":***@", 1)
