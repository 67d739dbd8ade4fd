"""Atomic file writes: a reader (or a job killed with -9) never sees a half-written file.

* :func:`atomic_write_bytes`, :func:`atomic_write_json` (strict JSON: non-finite numbers are
  written as ``null``, never as ``NaN``/``Infinity``), :func:`atomic_savez`;
* :class:`OutputSet`: several files written as one set (all to temporaries, then renamed
  together; a failure leaves the previous set as it was);
* :func:`check_output_path`, :func:`check_output_dir`: refuse an output that cannot be written
  *before* the work that produces it (missing or read-only folder, a regular file where a folder
  should be, a name longer than the file system allows);
* :func:`guarded_main`: how every command line ends: one message and exit status 2 for a user
  error, the traceback in a log file (``~/.cache/synthprog/logs/``) and its path for anything
  unexpected.
"""

from __future__ import annotations

import datetime
import errno
import io
import json
import math
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

NAME_MAX = 255  # bytes in one path component on the usual file systems (ext4, xfs, btrfs, tmpfs)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, ``os.replace``.

    An existing file keeps its permission bits; a failed write leaves no temporary behind.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_tmp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _tmp_prefix(path: str) -> str:
    """A temporary's name prefix: hidden, and short enough that a name near NAME_MAX still fits."""
    return "." + os.path.basename(path)[:80] + "."


def finite_json(obj: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf; Python or NumPy) replaced by None, NumPy
    scalars and arrays turned into Python numbers and lists, tuples into lists."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return finite_json(obj.item(), default)
    if isinstance(obj, np.ndarray):
        return finite_json(obj.tolist(), default)
    if isinstance(obj, dict):
        return {k: finite_json(v, default) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v, default) for v in obj]
    if default is not None:
        return finite_json(default(obj), default)
    if hasattr(obj, "items"):  # read-only mappings (config FrozenMap) and the like
        return {k: finite_json(v, default) for k, v in obj.items()}
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def json_text(obj: Any, indent: int | None = 1, sort_keys: bool = False,
              default: Callable[[Any], Any] | None = None) -> str:
    """Strict JSON (what every JSON reader accepts): non-finite numbers become ``null``."""
    return json.dumps(finite_json(obj, default), indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 1, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = None) -> None:
    """``obj`` as strict JSON (UTF-8, trailing newline; NaN/inf written as null), atomically."""
    atomic_write_bytes(path, json_text(obj, indent, sort_keys, default).encode("utf-8"))


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` of ``arrays``, written atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------ output checks
class OutputPathError(ValueError):
    """An output that cannot be written; the message names the path, the reason and the fix."""


def _name_too_long(path: Path) -> str | None:
    for part in path.parts:
        n = len(os.fsencode(part))
        if n > NAME_MAX:
            return (f"the name {part[:40]!r}... is {n} bytes long; the file system allows {NAME_MAX}: "
                    "choose a shorter name")
    return None


def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    return p


def _probe_writable(folder: Path) -> str | None:
    """None if a file can be created in ``folder`` (tried for real, then removed), else why not."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".synthprog-write-check.")
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass
    return None


def _show(text: str) -> str:
    return text if len(text) <= 120 else text[:60] + "..." + text[-40:]


def _dir_problem(p: Path, create: bool) -> str | None:
    """Why files cannot be written in the folder ``p`` (absolute), or None."""
    anc = _nearest_existing(p)
    if not anc.is_dir():
        return f"{_show(str(anc))} is a file, not a folder; choose another folder (or move that file away)"
    if anc != p and not create:
        return f"the folder {_show(str(p))} does not exist; create it first"
    why = _probe_writable(anc)
    if why:
        return f"cannot write in {_show(str(anc))} ({why}); choose a folder you can write to"
    return None


def check_output_dir(path: str | os.PathLike, flag: str, create: bool = True) -> Path:
    """Check that ``path`` is (or, with ``create``, can become) a folder this process writes in.

    Nothing is created: the nearest existing folder on the way is checked (a file creation is
    tried there and undone). Raises :class:`OutputPathError`."""
    text = os.fspath(path)
    if not text.strip() or "\0" in text:
        raise OutputPathError(f"{flag}: expected a folder path, got {text!r}; give a folder name")
    p = Path(text).absolute()
    why = _name_too_long(p) or _dir_problem(p, create)
    if why:
        raise OutputPathError(f"{flag} {_show(text)}: {why}")
    return p


def check_output_path(path: str | os.PathLike, flag: str, create_parents: bool = False,
                      suffixes: Sequence[str] = ()) -> Path:
    """Check, before any work, that the file ``path`` can be written (and, with ``suffixes``,
    that the companions ``path.with_suffix(s)`` can be too): not a folder, names within
    ``NAME_MAX``, its folder exists (or, with ``create_parents``, can be created) and can be
    written in. Raises :class:`OutputPathError`; creates nothing."""
    text = os.fspath(path)
    if not text.strip() or "\0" in text:
        raise OutputPathError(f"{flag}: expected a file name, got {text!r}")
    p = Path(text).absolute()
    for q in [p] + [p.with_suffix(s) for s in suffixes]:
        why = _name_too_long(q)
        if why is None and q.is_dir():
            why = f"{_show(str(q))} is a folder; give a file name inside it"
        if why is None and q.exists() and not os.access(q, os.W_OK):
            why = f"{_show(str(q))} exists and is read-only; choose another name or make it writable"
        if why:
            raise OutputPathError(f"{flag} {_show(text)}: {why}")
    why = _dir_problem(p.parent, create_parents)
    if why:
        raise OutputPathError(f"{flag} {_show(text)}: {why}")
    return p


# ------------------------------------------------------------------------------ output sets
class OutputSet:
    """Files written as one set: each to a temporary beside its final name, all renamed at the end.

    ::

        with OutputSet() as out:
            out.write_bytes("x.wav", data)
            out.write_json("x.json", report)
            tmp = out.path("x.png")          # for writers that want a file name
            render_png(tmp)
        # here every file is in place; an exception inside the block leaves the previous
        # x.wav / x.json / x.png exactly as they were and no temporary behind

    The renaming is undone if it fails half-way (the previous files are restored). Folders the
    set creates are removed again when nothing is committed.
    """

    def __init__(self) -> None:
        self._items: list[tuple[Path, Path]] = []  # (temporary, final)
        self._made: list[Path] = []  # folders created for the set, deepest last
        self._dirs: list[Path] = []  # temporary folders (tempdir)
        self.committed: list[str] = []

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def _folder(self, final: Path) -> None:
        missing = []
        d = final.parent
        while not d.exists():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            d.mkdir()
            self._made.append(d)

    def path(self, final: str | os.PathLike) -> Path:
        """A temporary file name for ``final`` (same folder); it becomes ``final`` on commit."""
        final = Path(final).absolute()
        self._folder(final)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=_tmp_prefix(str(final)), suffix=".part")
        os.close(fd)
        self._items.append((Path(tmp), final))
        return Path(tmp)

    def tempdir(self, final: str | os.PathLike) -> Path:
        """A new hidden folder beside ``final`` for writers that write several files themselves
        (adopt them with :meth:`adopt`); removed on commit and on discard."""
        final = Path(final).absolute()
        self._folder(final)
        d = Path(tempfile.mkdtemp(dir=final.parent, prefix=_tmp_prefix(str(final)), suffix=".dir"))
        self._dirs.append(d)
        return d

    def adopt(self, tmp: str | os.PathLike, final: str | os.PathLike) -> None:
        """Make a file already written elsewhere on the same file system part of the set."""
        final = Path(final).absolute()
        self._folder(final)
        self._items.append((Path(tmp), final))

    def write_bytes(self, final: str | os.PathLike, data: bytes) -> Path:
        tmp = self.path(final)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return Path(final)

    def write_text(self, final: str | os.PathLike, text: str) -> Path:
        return self.write_bytes(final, text.encode("utf-8"))

    def write_json(self, final: str | os.PathLike, obj: Any, indent: int = 1,
                   default: Callable[[Any], Any] | None = None) -> Path:
        return self.write_bytes(final, json_text(obj, indent, default=default).encode("utf-8"))

    def commit(self) -> list[str]:
        """Rename every temporary to its final name (previous files are replaced; if a rename
        fails, those already replaced are put back and the error is raised)."""
        backups: list[tuple[Path, Path | None]] = []  # (final, backup of the previous file or None)
        try:
            for tmp, final in self._items:
                bak = None
                if os.path.lexists(final):
                    if final.is_dir():
                        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(final))
                    fd, name = tempfile.mkstemp(dir=final.parent, prefix=_tmp_prefix(str(final)), suffix=".bak")
                    os.close(fd)
                    bak = Path(name)
                    os.replace(final, bak)
                backups.append((final, bak))
                try:
                    mode = os.stat(bak).st_mode & 0o777 if bak is not None else 0o644
                    os.chmod(tmp, mode)
                except OSError:
                    pass
                os.replace(tmp, final)
        except BaseException:
            for final, bak in reversed(backups):
                try:
                    if bak is not None:
                        os.replace(bak, final)
                    elif os.path.lexists(final):
                        os.unlink(final)
                except OSError:
                    pass
            self.discard()
            raise
        for _, bak in backups:
            if bak is not None:
                try:
                    os.unlink(bak)
                except OSError:
                    pass
        self.committed = [str(final) for _, final in self._items]
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._items, self._made, self._dirs = [], [], []
        return self.committed

    def discard(self) -> None:
        """Remove every temporary (and the folders made for the set, when empty)."""
        for tmp, _ in self._items:
            try:
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink()
            except OSError:
                pass
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)
        for d in reversed(self._made):
            try:
                d.rmdir()
            except OSError:
                pass
        self._items, self._made, self._dirs = [], [], []


# ------------------------------------------------------------------------------ how CLIs end
#: OSErrors that are about the user's files or machine (a message, exit status 2), and the fix.
USER_OS_ERRORS: dict[int, str] = {
    errno.ENOSPC: "the disk is full: free space, or point the output (or data.cache_dir / run.runs_dir) elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space, or write elsewhere",
    errno.EROFS: "that file system is read-only: write elsewhere",
    errno.EACCES: "no permission: fix the file's permissions or use another path",
    errno.EPERM: "not permitted: fix the file's permissions or use another path",
    errno.ENAMETOOLONG: "a name is too long: choose a shorter one",
    errno.ENOTDIR: "a part of the path is a file, not a folder: fix the path",
    errno.EISDIR: "that is a folder, not a file: give a file name",
    errno.EFBIG: "the file grew beyond the size this system allows: write smaller outputs or elsewhere",
}


def log_dir() -> Path:
    """Where unexpected errors are logged: ``$SYNTHPROG_LOG_DIR``, else ``~/.cache/synthprog/logs``."""
    return Path(os.environ.get("SYNTHPROG_LOG_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "synthprog",
                                                                     "logs"))


def write_crash_log(prog: str, exc: BaseException, argv: Iterable[str] | None = None) -> str | None:
    """Write ``exc``'s traceback (and the command line) to a new file under :func:`log_dir`;
    returns its path, or None if it could not be written."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in prog.replace("python -m ", ""))
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}-{stamp}-{os.getpid()}.log"
        text = (f"{prog} {' '.join(argv) if argv is not None else ' '.join(sys.argv[1:])}\n"
                f"cwd: {os.getcwd()}\npython: {sys.version.split()[0]}\n\n"
                + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        path.write_text(text)
        return str(path)
    except Exception:  # noqa: BLE001  (the log is a courtesy: never fail because of it)
        return None


def guarded_main(prog: str, body: Callable[[], int], user_errors: tuple[type[BaseException], ...] = (),
                 argv: Sequence[str] | None = None, label: str | None = None) -> int:
    """Run a command line's ``body`` and end it the way every CLI here ends:

    * its return value (0 success);
    * ``user_errors`` (and OSErrors about the user's files: :data:`USER_OS_ERRORS`): one line
      ``PROG: error: MESSAGE`` (``label`` replaces ``PROG: error: ``) on stderr, exit status 2;
    * Ctrl-C: status 130;
    * anything else: a one-line summary and the path of a log file holding the traceback,
      status 1.

    ``SystemExit`` (argparse's usage errors, status 2) passes through.
    """
    label = f"{prog}: error: " if label is None else label
    try:
        return body()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except user_errors as e:
        print(f"{label}{e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno in USER_OS_ERRORS:
            where = f"{e.filename}: " if e.filename else ""
            print(f"{label}{where}{e.strerror or e}; fix: {USER_OS_ERRORS[e.errno]}", file=sys.stderr)
            return 2
        return _unexpected(prog, e, argv)
    except Exception as e:  # noqa: BLE001
        return _unexpected(prog, e, argv)


def _unexpected(prog: str, e: BaseException, argv: Sequence[str] | None) -> int:
    path = write_crash_log(prog, e, argv)
    first = (str(e).strip().splitlines() or [""])[0][:300]
    if path is None:
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        where = "the traceback is above (the log folder could not be written)"
    else:
        where = f"the traceback is in {path}"
    print(f"{prog}: unexpected error: {type(e).__name__}: {first}\n{prog}: {where}; please report it with that file",
          file=sys.stderr)
    return 1
