"""The compile cache: compiled modules on disk, each with an HMAC-SHA256 tag of its name and bytes beside it.

A .vmfb is native code that the runtime jumps into, so gir runs only modules it can show it wrote: the tag's key is
32 random bytes in the cache folder, readable by this user alone (the folder is made private too). A truncated,
bit-flipped, zero-byte, swapped or foreign entry fails its tag and is reported in one warning line, removed and
recompiled, and the run goes on. Each entry is read and written under an exclusive lock (flock on NAME.lock), so
concurrent runs compile a module once and never read half of one.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from gir.messages import warn

KEY_FILE = "cache.key"
KEY_BYTES = 32
TAG_SUFFIX = ".tag"


class CompileCache:
    """Verified compiled modules under `root`, by name (a hash of what was compiled and how)."""

    def __init__(self, root: Path, warn: Callable[[str], None] = warn):
        self.root, self.warn = Path(root), warn

    def get_or_compile(self, name: str, compile: Callable[[], bytes]) -> bytes:
        """The entry's bytes if present and verified, else `compile()`'s, stored. A cache folder that cannot be
        used (not private, not writable) only costs the compile, with a warning saying why."""
        key = self._key()
        if key is None:
            return compile()
        with self._locked(name):
            data = self._read(name, key)
            if data is None:
                data = compile()
                self._write(name, key, data)
        return data

    def evict(self, name: str, why: str) -> None:
        """Remove an entry the runtime refused, saying so."""
        with self._locked(name):
            self._remove(name, why)

    # ---- entries ---------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.root / f"{name}.vmfb"

    def _tag(self, key: bytes, name: str, data: bytes) -> str:
        return hmac.new(key, name.encode() + b"\0" + data, hashlib.sha256).hexdigest()

    def _read(self, name: str, key: bytes) -> bytes | None:
        path, tag_path = self.path(name), self.path(name).with_suffix(".vmfb" + TAG_SUFFIX)
        if not tag_path.exists():
            return None  # nothing gir vouched for (absent, or left untagged by an older gir): compiled afresh
        try:
            data = path.read_bytes()
        except OSError as e:
            self._remove(name, f"unreadable ({e.strerror or e})")
            return None
        try:
            tag = tag_path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            tag = ""
        if not hmac.compare_digest(tag, self._tag(key, name, data)):
            self._remove(name, "is empty" if not data else f"fails its check ({len(data):,} bytes)")
            return None
        return data

    def _write(self, name: str, key: bytes, data: bytes) -> None:
        """Bytes then tag, each by rename; a failure to write only costs the next run a compile."""
        try:
            _write_atomic(self.path(name), data)
            _write_atomic(self.path(name).with_suffix(".vmfb" + TAG_SUFFIX), self._tag(key, name, data).encode())
        except OSError as e:
            self.warn(f"cannot write the compile cache entry {self.path(name)}: {e.strerror or e}")

    def _remove(self, name: str, why: str) -> None:
        path = self.path(name)
        self.warn(f"compile cache entry {path} {why}; removed, recompiling")
        for p in (path, path.with_suffix(".vmfb" + TAG_SUFFIX)):
            with contextlib.suppress(OSError):
                p.unlink()

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        try:
            fd = os.open(self.root / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield  # no lock file, no lock: the renames still keep every file whole
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ---- the folder and its key ------------------------------------------------------------

    def _key(self) -> bytes | None:
        """This cache's secret, made on first use; None (with a warning) when the folder cannot be trusted."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = self.root.stat()
        except OSError as e:
            self.warn(f"compile cache {self.root} cannot be created ({e.strerror or e}); compiling without it")
            return None
        if st.st_uid != os.getuid():
            self.warn(f"compile cache {self.root} belongs to another user; compiling without it")
            return None
        if stat.S_IMODE(st.st_mode) & 0o077:
            with contextlib.suppress(OSError):
                self.root.chmod(0o700)
        key_path = self.root / KEY_FILE
        with contextlib.suppress(OSError):
            key = key_path.read_bytes()
            if len(key) == KEY_BYTES and key_path.stat().st_uid == os.getuid():
                return key
            key_path.unlink()  # damaged or foreign: every entry it signed is unverifiable and will be replaced
        return self._new_key(key_path)

    def _new_key(self, key_path: Path) -> bytes | None:
        """A fresh key, created whole (written to a temporary file, then linked in: a concurrent process either
        wins the link or reads the winner's key)."""
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".key-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(secrets.token_bytes(KEY_BYTES))
                os.chmod(tmp, 0o600)
                os.link(tmp, key_path)
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
            return key_path.read_bytes()
        except OSError as e:
            self.warn(f"compile cache {self.root} has no usable key ({e.strerror or e}); compiling without it")
            return None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
