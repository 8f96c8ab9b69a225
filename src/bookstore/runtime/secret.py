"""The deployment's own credentials: the inter-region secret, the operator token and the S3 key pair.

Each is made at first start, per data directory, and kept in a file of mode 0600 there (`secret`,
`operator-token`, `s3-credentials`): no two installations share one and none is written in the source.
An environment variable overrides each file (BOOKSTORE_SECRET, BOOKSTORE_OPERATOR_TOKEN,
BOOKSTORE_S3_ACCESS_KEY_ID with BOOKSTORE_S3_SECRET_ACCESS_KEY); the supervisor hands its region and
edge processes the values it loaded that way.

Regions on separate hosts (a topology with `supervised = false`) must share all three: `export` writes
them as one document, which `import_credentials` puts into another host's data directory before its
first start (`bookstore secrets export > FILE`, copy FILE, `bookstore secrets import FILE`).

`rotate` replaces the files with new values. The processes of a running system hold the old values in
memory, and regions must agree on the inter-region secret, so a rotation takes effect when the system
is started again (`bookstore secrets rotate` refuses to run while the system answers).
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from bookstore.config import ObjectStoreAccess, Topology
from bookstore.domain import errors

ENV = "BOOKSTORE_SECRET"
FILE = "secret"
TOKEN_ENV = "BOOKSTORE_OPERATOR_TOKEN"
TOKEN_FILE = "operator-token"
S3_ID_ENV = "BOOKSTORE_S3_ACCESS_KEY_ID"
S3_KEY_ENV = "BOOKSTORE_S3_SECRET_ACCESS_KEY"
S3_FILE = "s3-credentials"
# What `rotate` knows, by the names `bookstore secrets rotate --only` takes.
KINDS = ("s3", "secret", "operator-token")
_KEY_ID_ALPHABET = string.ascii_uppercase + string.digits


class MissingCredential(RuntimeError):
    """A client asked for a credential its data directory does not hold (not the system's, or not started)."""


@dataclass(frozen=True)
class Credentials:
    """Everything a deployment keeps secret."""

    secret: str
    operator_token: str
    s3: ObjectStoreAccess

    def env(self) -> dict[str, str]:
        """The environment that gives a child process these credentials."""
        return {
            ENV: self.secret,
            TOKEN_ENV: self.operator_token,
            S3_ID_ENV: self.s3.access_key_id,
            S3_KEY_ENV: self.s3.secret_access_key,
        }

    @classmethod
    def generate(cls) -> Credentials:
        """New credentials held nowhere else (an edge under test, with no deployment behind it)."""
        return cls(_new_secret(), _new_secret(), _new_s3())


def deployment_credentials(data_dir: Path) -> Credentials:
    """The deployment's credentials, each from its environment variable or its file, made on first use."""
    return Credentials(
        deployment_secret(data_dir), operator_token(data_dir, create=True), s3_credentials(data_dir)
    )


def deployment_secret(data_dir: Path) -> str:
    """BOOKSTORE_SECRET when set; else the one kept in DATA_DIR/secret, created (mode 0600) on first use."""
    return os.environ.get(ENV) or _kept(data_dir / FILE, _new_secret)


def operator_secret(data_dir: Path) -> str:
    """The deployment's secret for signing operator requests (the blog's commands, the region's operator
    endpoints): BOOKSTORE_SECRET or DATA_DIR/secret, never created (a client holds no deployment of its own).

    Raises Unauthorized, saying what to pass, when neither is there.
    """
    value = os.environ.get(ENV) or ""
    if not value:
        try:
            value = (data_dir / FILE).read_text(encoding="ascii").strip()
        except OSError:
            value = ""
    if not value:
        raise errors.Unauthorized(
            f"no deployment secret: set {ENV} or pass the --data-dir the system runs with (it holds '{FILE}')"
        )
    return value


def operator_token(data_dir: Path, *, create: bool = False) -> str:
    """BOOKSTORE_OPERATOR_TOKEN when set; else DATA_DIR/operator-token, made on first use when `create`.

    Raises MissingCredential (a client pointed at the wrong data directory) when it is not there.
    """
    from_env = os.environ.get(TOKEN_ENV)
    if from_env:
        return from_env
    path = data_dir / TOKEN_FILE
    if create:
        return _kept(path, _new_secret)
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise MissingCredential(
            f"no operator token at {path}: pass the --data-dir the system runs with (or set {TOKEN_ENV})"
        ) from None


def s3_credentials(data_dir: Path, *, create: bool = True) -> ObjectStoreAccess:
    """The S3 key pair from BOOKSTORE_S3_ACCESS_KEY_ID/..._SECRET_ACCESS_KEY, else DATA_DIR/s3-credentials
    (made on first use when `create`; else MissingCredential when it is not there)."""
    key_id, key = os.environ.get(S3_ID_ENV), os.environ.get(S3_KEY_ENV)
    if key_id and key:
        return ObjectStoreAccess(access_key_id=key_id, secret_access_key=key)
    path = data_dir / S3_FILE
    if not create and not path.exists():
        raise MissingCredential(
            f"no S3 credentials at {path}: pass the --data-dir the system runs with "
            f"(or start it once: they are made at first start)"
        )
    stored = orjson.loads(_kept(path, lambda: _s3_text(_new_s3())))
    return ObjectStoreAccess(access_key_id=stored["accessKeyId"], secret_access_key=stored["secretAccessKey"])


def s3_access(topology: Topology, data_dir: Path, *, create: bool = True) -> ObjectStoreAccess:
    """The key pair the regions' S3 APIs accept: the topology's when it pins one, else the deployment's."""
    return topology.s3 if topology.s3 is not None else s3_credentials(data_dir, create=create)


def from_env(environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials a supervisor handed this process, or None when it was not started by one."""
    env = os.environ if environ is None else environ
    values = [env.get(name) for name in (ENV, TOKEN_ENV, S3_ID_ENV, S3_KEY_ENV)]
    if not all(values):
        return None
    secret, token, key_id, key = (str(v) for v in values)
    return Credentials(secret, token, ObjectStoreAccess(access_key_id=key_id, secret_access_key=key))


def rotate(data_dir: Path, kinds: Collection[str] = KINDS) -> list[str]:
    """Replace the named credentials in DATA_DIR with new ones; returns the files written.

    The files are replaced atomically. The running processes keep the old values until they restart.
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown credential(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    makers: dict[str, tuple[str, Callable[[], str]]] = {
        "secret": (FILE, _new_secret),
        "operator-token": (TOKEN_FILE, _new_secret),
        "s3": (S3_FILE, lambda: _s3_text(_new_s3())),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        if kind in kinds:
            name, make = makers[kind]
            _write(data_dir / name, make(), replace=True)
            written.append(name)
    return written


def overridden(kinds: Collection[str] = KINDS) -> list[str]:
    """The environment variables set now that would override the named credentials' files."""
    names = {"secret": [ENV], "operator-token": [TOKEN_ENV], "s3": [S3_ID_ENV, S3_KEY_ENV]}
    return [n for kind in KINDS if kind in kinds for n in names[kind] if os.environ.get(n)]


# The first key of an exported document, and its version: a file of anything else is refused.
EXPORT_FORMAT = "bookstore-credentials/1"


class CredentialsConflict(RuntimeError):
    """An import would replace credentials a data directory already holds with different ones."""


def export_credentials(data_dir: Path) -> str:
    """The deployment's credentials (made on first use, as at first start) as one JSON document."""
    held = deployment_credentials(data_dir)
    return (
        orjson.dumps(
            {
                "format": EXPORT_FORMAT,
                "secret": held.secret,
                "operatorToken": held.operator_token,
                "s3": {"accessKeyId": held.s3.access_key_id, "secretAccessKey": held.s3.secret_access_key},
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
        + "\n"
    )


def parse_export(text: str | bytes) -> Credentials:
    """The credentials in a document `export_credentials` wrote; ValueError saying what is wrong."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("not a credentials export (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise ValueError(f"not a credentials export (its format is not {EXPORT_FORMAT!r})")
    s3 = doc.get("s3")
    values = [doc.get("secret"), doc.get("operatorToken")]
    if isinstance(s3, dict):
        values += [s3.get("accessKeyId"), s3.get("secretAccessKey")]
    if len(values) != 4 or not all(isinstance(v, str) and v for v in values):
        raise ValueError(
            "a credentials export holds secret, operatorToken and s3 {accessKeyId, secretAccessKey}"
        )
    secret, token, key_id, key = (str(v) for v in values)
    return Credentials(secret, token, ObjectStoreAccess(access_key_id=key_id, secret_access_key=key))


def import_credentials(data_dir: Path, held: Credentials, *, replace: bool = False) -> list[str]:
    """Write `held` into DATA_DIR's credential files (mode 0600); returns the files written.

    Files already holding the same values are left alone. Different values raise CredentialsConflict
    unless `replace`: a region that made its own at first start would otherwise be silently re-keyed.
    """
    wanted = {FILE: held.secret, TOKEN_FILE: held.operator_token, S3_FILE: _s3_text(held.s3)}
    current = {name: _read(data_dir / name) for name in wanted}
    differ = [
        name
        for name, value in current.items()
        if value is not None and (_s3_load(value) != held.s3 if name == S3_FILE else value != wanted[name])
    ]
    if differ and not replace:
        raise CredentialsConflict(
            f"{data_dir} already holds other credentials ({', '.join(differ)}): "
            "a region started there made its own; replace them with --replace (then restart it)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, value in wanted.items():
        if current[name] is None or name in differ:
            _write(data_dir / name, value, replace=True)
            written.append(name)
    return written


def missing(data_dir: Path) -> list[str]:
    """The credentials that neither the environment nor DATA_DIR holds (by the names `rotate` takes)."""
    env = {"secret": [ENV], "operator-token": [TOKEN_ENV], "s3": [S3_ID_ENV, S3_KEY_ENV]}
    files = {"secret": FILE, "operator-token": TOKEN_FILE, "s3": S3_FILE}
    return [
        kind
        for kind in KINDS
        if not all(os.environ.get(n) for n in env[kind]) and not (data_dir / files[kind]).exists()
    ]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None


def _s3_load(text: str) -> ObjectStoreAccess | None:
    try:
        stored = orjson.loads(text)
        return ObjectStoreAccess(
            access_key_id=stored["accessKeyId"], secret_access_key=stored["secretAccessKey"]
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def _new_s3() -> ObjectStoreAccess:
    # Shaped like AWS's (AKIA + 16 characters; a 40-character secret), so tools that check the shape agree.
    key_id = "AKIA" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))
    return ObjectStoreAccess(access_key_id=key_id, secret_access_key=secrets.token_urlsafe(30))


def _s3_text(access: ObjectStoreAccess) -> str:
    return orjson.dumps(
        {"accessKeyId": access.access_key_id, "secretAccessKey": access.secret_access_key}
    ).decode()


def _kept(path: Path, make: Callable[[], str]) -> str:
    """The value kept at `path`, or a new one from `make`, written there first (mode 0600)."""
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, make(), replace=False)
    return path.read_text(encoding="ascii").strip()


def _write(path: Path, value: str, *, replace: bool) -> None:
    """Write `value` to a new file of mode 0600 beside `path`, synced, then put it in place.

    Not `replace`: a link, so when two processes race to create it, the first value written wins for both.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value)
        f.flush()
        os.fsync(f.fileno())
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
