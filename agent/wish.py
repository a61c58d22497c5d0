"""The wish that survives restarts: the accepted start, kept in one file per node id.

A wall display must come back by itself after a power cut or a container restart, before
anyone can send a command again. The supervisor publishes every change of what is wanted; the
keeper writes the latest one to ``<state_dir>/<node_id>.wish.json`` and the agent resumes it
at start-up.

The file is replaced atomically (temp file in the same directory, fsync, rename, fsync of the
directory): a kill -9 at any instant leaves the old or the new wish, never a torn one. Writes
run in a thread, and a burst of changes is written once, with the latest value.

The contents are the wish's dataclass fields as JSON, recursively, so that a field a later
feature adds is kept without touching this module; loading ignores keys it does not know and
fills missing ones with their defaults, so an older or newer file still loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import os
import tempfile
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger

T = TypeVar("T")
FORMAT_VERSION = 1


class WishFileError(Exception):
    """The state file exists but holds no usable wish."""


# -- dataclasses ⇄ JSON --------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """Dataclasses (recursively), datetimes, enums and paths as JSON-able data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v) for v in value]
    return value


def from_json(kind: Any, data: Any) -> Any:
    """``data`` (as made by to_json) back into ``kind``; raises WishFileError when it does not
    fit. Unknown keys are ignored and missing ones take the dataclass defaults."""
    if kind is Any:
        return data
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return _from_union(typing.get_args(kind), data)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _from_dataclass(kind, data)
    if origin in (list, tuple, set, frozenset) and isinstance(data, list):
        args = [a for a in typing.get_args(kind) if a is not Ellipsis] or [Any]
        return origin(from_json(args[0], item) for item in data)
    if origin is dict and isinstance(data, dict):
        value_kind = (typing.get_args(kind) or (Any, Any))[1]
        return {k: from_json(value_kind, v) for k, v in data.items()}
    return _from_scalar(kind, data)


def _from_scalar(kind: Any, data: Any) -> Any:
    if typing.get_origin(kind) is typing.Literal:
        if data in typing.get_args(kind):
            return data
        raise WishFileError("not one of the allowed values")
    if kind is datetime and isinstance(data, str):
        try:
            return datetime.fromisoformat(data)
        except ValueError as exc:
            raise WishFileError("a time that is not ISO 8601") from exc
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(data)
        except ValueError as exc:
            raise WishFileError(f"not a {kind.__name__}") from exc
    if kind is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    if isinstance(kind, type) and isinstance(data, kind):
        return data
    # Names types, never values: a URL may carry a password.
    raise WishFileError(f"expected {getattr(kind, '__name__', kind)}, found {type(data).__name__}")


def _from_union(options: tuple[Any, ...], data: Any) -> Any:
    if data is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        with contextlib.suppress(WishFileError):
            return from_json(option, data)
    raise WishFileError(f"a {type(data).__name__} that fits none of {options}")


def _from_dataclass(kind: type[T], data: Any) -> T:
    if not isinstance(data, dict):
        raise WishFileError(f"expected an object for {kind.__name__}, found {type(data).__name__}")
    hints = typing.get_type_hints(kind)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(kind):  # type: ignore[arg-type]
        if field.name in data and field.init:
            values[field.name] = from_json(hints[field.name], data[field.name])
    try:
        return kind(**values)
    except TypeError as exc:  # a required field is missing
        raise WishFileError(f"incomplete {kind.__name__}: {exc}") from exc


# -- the file ------------------------------------------------------------------------------------


class WishFile:
    """``<directory>/<node_id>.wish.json``; blocking I/O, call it from a thread."""

    def __init__(self, directory: Path, node_id: str) -> None:
        self.directory = directory
        self.path = directory / f"{node_id}.wish.json"
        self._temp_prefix = f".{node_id}.wish."

    def read(self) -> Any:
        """The stored wish as JSON data, None when there is none; WishFileError when the file
        cannot be read or parsed."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise WishFileError(f"{self.path}: cannot read: {exc}") from exc
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise WishFileError(f"{self.path}: not JSON: {exc}") from exc
        if not isinstance(document, dict) or "wish" not in document:
            raise WishFileError(f"{self.path}: no wish in it")
        return document["wish"]

    def write(self, wish: Any) -> None:
        """Replace the stored wish atomically; None removes it. Not for concurrent use: it
        also removes the temp files that a writer killed mid-write left behind."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        if wish is None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._sync_directory()
            return
        body = json.dumps({"version": FORMAT_VERSION, "wish": wish}, indent=1, sort_keys=True)
        fd, temp = tempfile.mkstemp(prefix=self._temp_prefix, suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(body)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self._sync_directory()

    def _sync_directory(self) -> None:
        # The rename (or unlink) itself is durable only once the directory is synced.
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _remove_leftovers(self) -> None:
        with contextlib.suppress(OSError):
            for leftover in self.directory.glob(f"{self._temp_prefix}*.tmp"):
                with contextlib.suppress(OSError):
                    leftover.unlink()


# -- the keeper ----------------------------------------------------------------------------------


class WishKeeper:
    """Writes each change of the wish (a dataclass, or None for "nothing") off the event loop.

    ``changes`` is the supervisor's ``wish_changes`` subscription. A burst is coalesced: what
    queued up while a write ran is written once, with its latest value.
    """

    def __init__(self, file: WishFile, changes: asyncio.Queue[Any]) -> None:
        self._file = file
        self._changes = changes
        self.writes = 0

    @property
    def path(self) -> Path:
        return self._file.path

    async def load(self, kind: type[T]) -> T | None:
        """The stored wish, or None (also when the file is unusable: one warning, no crash)."""
        try:
            data = await asyncio.to_thread(self._file.read)
            return None if data is None else from_json(kind, data)
        except WishFileError as exc:
            logger.warning("ignoring the saved wish, starting idle: {}", exc)
        except Exception as exc:
            logger.warning("ignoring the saved wish {}, starting idle: {}", self.path, exc)
        return None

    def forget(self) -> None:
        """Clear the stored wish (one that is not worth resuming)."""
        self._changes.put_nowait(None)

    async def run(self) -> None:
        """Write every change until cancelled; a write under way and whatever is queued by
        then still get to the disk, so a clean shutdown loses no change made before it."""
        try:
            while True:
                await self._write(self._latest(await self._changes.get()))
        finally:
            if not self._changes.empty():
                await self._write(self._latest(self._changes.get_nowait()))

    def _latest(self, value: Any) -> Any:
        while not self._changes.empty():
            value = self._changes.get_nowait()
        return value

    async def _write(self, wish: Any) -> None:
        writing = asyncio.ensure_future(asyncio.to_thread(self._file.write, to_json(wish)))
        try:
            await asyncio.wait([writing])
        except asyncio.CancelledError:
            # Let it land first: two writes must never race (an older rename could win).
            await asyncio.wait([writing])
            raise
        finally:
            self._report(writing)

    def _report(self, writing: asyncio.Future[None]) -> None:
        if not writing.done() or writing.cancelled():
            return
        if writing.exception() is None:
            self.writes += 1
        else:
            logger.warning("could not save the wish to {}: {}", self.path, writing.exception())
