"""Playbooks by their text: one interface, three loaders (from the file, kept in memory, cached on disk).

Loading a playbook (YAML, the schema pass, the builder) costs more than everything else a short
command does, and gives the same :class:`~engine.model.Playbook` for the same text under the same
code.  A :class:`PlaybookLoader` loads a file (:meth:`~PlaybookLoader.load`), a text
(:meth:`~PlaybookLoader.load_text`) or the version of the audit log's content hash
(:meth:`~PlaybookLoader.stored`); the CLI, ``why``, ``replay`` and the service all ask one:

- :class:`PlaybookLoader` itself builds every time;
- :class:`MemoryLoader` keeps what it built for the life of the process (the service);
- :class:`CachedLoader` keeps the built playbook on disk, for the next command.

The disk cache's key is the SHA-256 of the code version (every source file of the engine and its
schemas), the file name the locations carry and the text: an entry is found only for the same text
under the same code, so a stale entry cannot be served; a changed file or a changed engine is a
new key.  An entry is a pickle, read only from a directory that is the user's own (owned by the
user, writable by no one else: see docs/architecture.md for why that is safe) and only when its
own SHA-256 matches: a damaged or foreign entry is ignored and written again.  Only playbooks
that check are cached; problems are found afresh each time.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from engine.errors import Location, PlaybookError, Problem
from engine.limits import MAX_BYTES

if TYPE_CHECKING:
    from engine.model import Playbook

__all__ = [
    "CACHE_ENV",
    "CachedLoader",
    "MemoryLoader",
    "PlaybookLoader",
    "code_version",
    "default_cache_dir",
    "default_loader",
    "read_file",
    "stored_name",
]

CACHE_ENV = "PLAYBOOK_CACHE"  # a directory for the cache, or "off"
_MAGIC = b"playbook-cache 1\n"
T = TypeVar("T")
_ENGINE_DIR = Path(__file__).resolve().parent


class PlaybookTexts(Protocol):
    """Where stored playbook versions are read by content hash (the audit log's :class:`~engine.store.Store`)."""

    def playbook_text(self, content_hash: str) -> str: ...


def stored_name(content_hash: str) -> str:
    """The file name a stored playbook version's locations carry."""
    return f"<playbook {content_hash[:12]}>"


class PlaybookLoader:
    """Builds the playbook every time: load, check, build; :class:`PlaybookError` with every problem."""

    def load(self, path: str | Path) -> Playbook:
        return self.load_text(read_file(path), str(path))

    def load_text(self, text: str, file: str = "<string>") -> Playbook:
        from engine.load import load_text
        from engine.validate import build_playbook

        return build_playbook(load_text(text, file))

    def stored(self, store: PlaybookTexts, content_hash: str) -> Playbook:
        """The playbook version the audit log keeps under ``content_hash``; LookupError when it keeps none."""
        return self.load_text(store.playbook_text(content_hash), stored_name(content_hash))

    def derived(self, playbook: Playbook, what: str, compute: Callable[[Playbook], T]) -> T:
        """``compute(playbook)``, for a ``compute`` that depends on nothing but the playbook and the
        code (``check``'s analysis): a cached loader keeps it beside the playbook, named ``what``."""
        return compute(playbook)


class MemoryLoader(PlaybookLoader):
    """Keeps the playbooks built (by ``inner``) in memory, the last ``size`` of them; safe across threads."""

    def __init__(self, inner: PlaybookLoader | None = None, size: int = 64) -> None:
        self.inner = inner or PlaybookLoader()
        self.size = size
        self._kept: OrderedDict[tuple[str, str], Playbook] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, playbook: Playbook) -> None:
        """Keep a playbook built elsewhere (the one a server was started with)."""
        with self._lock:
            self._kept[(playbook.file, playbook.content_hash)] = playbook
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)

    def _found(self, file: str, content_hash: str) -> Playbook | None:
        with self._lock:
            found = self._kept.get((file, content_hash))
            if found is not None:
                self._kept.move_to_end((file, content_hash))
            return found

    def load_text(self, text: str, file: str = "<string>") -> Playbook:
        found = self._found(file, hashlib.sha256(text.encode("utf-8")).hexdigest())
        if found is None:
            found = self.inner.load_text(text, file)
            self.remember(found)
        return found

    def stored(self, store: PlaybookTexts, content_hash: str) -> Playbook:
        # the content hash is the text's: a kept version is found without reading the text again
        return self._found(stored_name(content_hash), content_hash) or super().stored(store, content_hash)


@cache
def code_version() -> str:
    """SHA-256 of everything that shapes a built playbook: the engine's source files and the schemas
    (in a wheel they are inside the engine package, in a checkout beside it), and the Python version."""
    digest = hashlib.sha256(f"{sys.implementation.cache_tag} pickle {pickle.HIGHEST_PROTOCOL}\n".encode())
    files = [*sorted(_ENGINE_DIR.rglob("*.py")), *sorted(_ENGINE_DIR.rglob("*.json"))]
    files += sorted((_ENGINE_DIR.parent / "schemas").glob("*.json"))
    for path in files:
        content = path.read_bytes()
        digest.update(f"{path.name} {len(content)}\n".encode())
        digest.update(content)
    return digest.hexdigest()


def default_cache_dir() -> Path | None:
    """``$PLAYBOOK_CACHE`` (``off``: no cache), else ``$XDG_CACHE_HOME/playbook``, else ``~/.cache/playbook``."""
    chosen = os.environ.get(CACHE_ENV, "")
    if chosen.lower() == "off":
        return None
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "playbook"


def _own(info: os.stat_result) -> bool:
    """Owned by this user and writable by no one else."""
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class CachedLoader(PlaybookLoader):
    """Keeps each playbook built in ``directory``, keyed by its text and the code (see the module's text).

    The directory is made (mode 0700) when missing; if it is not the user's own, nothing is read
    from it or written to it and every playbook is built.  Failing to write an entry loses nothing.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def entry(self, text: str, file: str, what: str = "playbook") -> Path:
        """Where the ``what`` of this text under this name and this code is kept."""
        key = hashlib.sha256(f"{code_version()}\0{what}\0{file}\0".encode())
        key.update(text.encode("utf-8"))
        return self.directory / f"{key.hexdigest()}.pickle"

    def load_text(self, text: str, file: str = "<string>") -> Playbook:
        from engine.model import Playbook

        entry = self.entry(text, file) if self._usable() else None
        found = self._read(entry) if entry is not None else None
        if isinstance(found, Playbook) and found.file == file and found.text == text:
            return found
        playbook = super().load_text(text, file)
        if entry is not None:
            self._write(entry, playbook)
        return playbook

    def derived(self, playbook: Playbook, what: str, compute: Callable[[Playbook], T]) -> T:
        entry = self.entry(playbook.text, playbook.file, what) if self._usable() else None
        found = self._read(entry) if entry is not None else None
        if isinstance(found, tuple) and len(found) == 2 and found[0] == playbook.content_hash:
            return cast(T, found[1])  # written under this key by this code: what compute gave
        value = compute(playbook)
        if entry is not None:
            self._write(entry, (playbook.content_hash, value))
        return value

    def _usable(self) -> bool:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            return _own(self.directory.stat())
        except OSError:
            return False

    @staticmethod
    def _read(entry: Path) -> object | None:
        """The entry's object, or None when there is none or it is damaged or not the user's own."""
        try:
            with entry.open("rb") as handle:
                if not _own(os.fstat(handle.fileno())):
                    return None
                content = handle.read()
        except OSError:
            return None
        head, digest, payload = (
            content[: len(_MAGIC)],
            content[len(_MAGIC) : len(_MAGIC) + 32],
            content[len(_MAGIC) + 32 :],
        )
        if head != _MAGIC or hashlib.sha256(payload).digest() != digest:
            return None
        try:
            found: object = pickle.loads(payload)  # noqa: S301 - the user's own file, written by this code (see above)
        except Exception:  # noqa: BLE001 - written by this code: any failure to read it back is damage
            return None
        return found

    def _write(self, entry: Path, value: object) -> None:
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".writing-")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
                os.replace(temporary, entry)  # whole or not at all: a reader never sees half an entry
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            pass  # a cache that cannot be written costs time, not correctness


def read_file(path: str | Path) -> str:
    """A playbook file's text (UTF-8, a BOM dropped); raise :class:`PlaybookError` when it cannot be one."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PlaybookError([Problem(Location(file), "file_unreadable", exc.strerror or str(exc))]) from None
    if len(raw) > MAX_BYTES:
        raise PlaybookError(
            [Problem(Location(file, 1, 1), "yaml_too_large", f"{len(raw)} bytes; the limit is {MAX_BYTES}")]
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PlaybookError(
            [Problem(Location(file, 1, 1), "file_not_utf8", f"not UTF-8 text (byte {exc.start})")]
        ) from None
    return text


def default_loader() -> PlaybookLoader:
    """The loader commands use: cached on disk in :func:`default_cache_dir`, unless that is ``off``."""
    directory = default_cache_dir()
    return PlaybookLoader() if directory is None else CachedLoader(directory)
