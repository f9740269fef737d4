"""CURVE keys for the link between ringmaster-dispatcher and its handlers.

Key files are ZeroMQ certificates in the format ``zmq.auth.create_certificates`` writes:
``NAME.key`` holds the public key, ``NAME.key_secret`` the public and the secret key. The
dispatcher (CURVE server) lets in only handlers whose public key is a ``*.key`` file in its
authorised directory (see zap.py); a handler knows each dispatcher's public key from a file
of ``<endpoint> <public key>`` lines, so it cannot be talked into serving an impostor.

Generate a keypair (as the account that will own it; the secret file is created 0600):

    python -m ringmaster_handler.curve DIR NAME
"""

import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

# Z85 text of a 32-byte CURVE key.
KEY_TEXT_LEN = 40


class CurveError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Keypair:
    public: bytes  # Z85 text
    secret: bytes = b""  # Z85 text; empty for a peer's public key

    def __repr__(self) -> str:
        # Tracebacks and debug output show dataclasses whole: never the secret.
        return f"Keypair(public={self.public!r})"


@dataclass(frozen=True, slots=True)
class ServerSide:
    """What a CURVE dispatcher needs: its own keypair and where the allowed keys are."""

    keypair: Keypair
    authorized_dir: str

    def __repr__(self) -> str:
        return f"ServerSide({self.keypair!r}, {self.authorized_dir!r})"


@dataclass(frozen=True, slots=True)
class ClientSide:
    """What a CURVE handler needs: its own keypair and each dispatcher's public key."""

    keypair: Keypair
    server_keys: dict  # endpoint url -> Z85 public key

    def __repr__(self) -> str:
        return f"ClientSide({self.keypair!r}, {sorted(self.server_keys)!r})"


def check_key(text: bytes, where: str) -> bytes:
    """``text`` if it is the Z85 form of a 32-byte key, else a CurveError naming ``where``."""
    if len(text) != KEY_TEXT_LEN:
        raise CurveError(f"{where}: a key must be {KEY_TEXT_LEN} Z85 characters")
    try:
        raw = zmq.utils.z85.decode(text)
    except (ValueError, KeyError, IndexError):
        raise CurveError(f"{where}: the key is not valid Z85") from None
    if len(raw) != 32:
        raise CurveError(f"{where}: the key is not valid Z85")
    return text


def _load_certificate(path: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise CurveError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise CurveError(f"{path} is not a ZeroMQ certificate (no public-key line)") from None
    check_key(public, f"{path}: public-key")
    return public, secret


def _stat_file(path: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CurveError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CurveError(f"{path} is not a regular file")
    return st


def load_keypair(path: str) -> Keypair:
    """Our own keypair, from a ``.key_secret`` certificate that only its owner can read."""
    st = _stat_file(path)
    public, secret = _load_certificate(path)
    if not secret:
        raise CurveError(f"{path} holds no secret-key (give the .key_secret file)")
    if st.st_mode & 0o077:
        # Refused rather than warned about: a warning in a log nobody reads leaves the key
        # exposed, and an operator who really wants it can chmod 600 in one command.
        raise CurveError(
            f"{path} holds a secret key but group or others have access to it "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
        )
    try:
        check_key(secret, f"{path}: secret-key")
    except CurveError:
        raise CurveError(f"{path}: the secret-key is not a valid key") from None
    if zmq.curve_public(secret) != public:
        raise CurveError(f"{path}: its public-key does not belong to its secret-key")
    return Keypair(public, secret)


def load_public(path: str) -> bytes:
    _stat_file(path)
    return _load_certificate(path)[0]


def authorized_files(directory: str) -> list[Path]:
    """The certificates a dispatcher accepts: ``*.key`` files (never ``.key_secret``)."""
    try:
        entries = sorted(Path(directory).iterdir())
    except NotADirectoryError:
        raise CurveError(f"{directory} is not a directory") from None
    except OSError as exc:
        raise CurveError(f"cannot read {directory}: {exc.strerror}") from None
    return [p for p in entries if p.suffix == ".key" and not p.name.startswith(".")]


def load_authorized(directory: str) -> dict[bytes, str]:
    """{public key: certificate name} of every handler allowed in."""
    keys: dict[bytes, str] = {}
    for path in authorized_files(directory):
        keys[load_public(str(path))] = path.stem
    return keys


def parse_server_keys(text: str, where: str) -> dict[str, bytes]:
    """``<endpoint> <public key>`` lines (``#`` comments, blank lines) -> {endpoint url: key}."""
    from ringmaster_handler.specs import SpecError, parse_spec

    keys: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise CurveError(f"{where}, line {number}: expected '<endpoint> <public key>'")
        try:
            url = parse_spec(fields[0]).url
        except SpecError as exc:
            raise CurveError(f"{where}, line {number}: {exc}") from None
        if url in keys:
            raise CurveError(f"{where}, line {number}: a second key for {url}")
        keys[url] = check_key(fields[1].encode("ascii", "replace"), f"{where}, line {number}")
    return keys


def load_server_keys(path: str, endpoints: list[str]) -> dict[str, bytes]:
    """Each dispatcher endpoint's public key, from ``path``; every endpoint must have one."""
    _stat_file(path)
    try:
        text = Path(path).read_text(encoding="ascii")
    except OSError as exc:
        raise CurveError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CurveError(f"{path}: not a text file of '<endpoint> <public key>' lines") from None
    keys = parse_server_keys(text, path)
    missing = [url for url in endpoints if url not in keys]
    if missing:
        raise CurveError(f"{path} has no public key for {', '.join(missing)}")
    return {url: keys[url] for url in endpoints}


def generate(directory: str, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) into ``directory``.

    Both appear whole or not at all (written aside, then renamed), the secret one last: a
    deploy that checks for the secret file never finds half a keypair.
    """
    if not name or "/" in name or name.startswith("."):
        raise CurveError(f"bad key name {name!r}")
    target = Path(directory)
    public_path, secret_path = target / f"{name}.key", target / f"{name}.key_secret"
    old_umask = os.umask(0o077)
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target))
    except OSError as exc:
        raise CurveError(f"cannot write into {directory}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    try:
        old_umask = os.umask(0o077)
        try:
            made_public, made_secret = zmq.auth.create_certificates(str(scratch), name)
        finally:
            os.umask(old_umask)
        os.chmod(made_public, 0o644)
        os.replace(made_public, public_path)
        os.replace(made_secret, secret_path)
    finally:
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()
    return public_path, secret_path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0].startswith("-"):
        print(
            "usage: python -m ringmaster_handler.curve DIR NAME\n"
            "writes the CURVE keypair DIR/NAME.key (public) and DIR/NAME.key_secret (0600)",
            file=sys.stderr,
        )
        return 2
    try:
        public_path, _ = generate(args[0], args[1])
    except CurveError as exc:
        print(f"ringmaster_handler.curve: error: {exc}", file=sys.stderr)
        return 2
    print(public_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
