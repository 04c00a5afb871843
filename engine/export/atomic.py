"""Atomic writes: a reader never sees a half-written export or output folder.

Two levels:

* :func:`atomic_write` - one file, written beside its destination and renamed into place.
* :func:`atomic_output_folder` - a whole reconstruction output folder, written into a hidden
  sibling ``.NAME.tmp-PID-XXXXXXXX`` and renamed to ``NAME`` only when complete.

Output folders carry a marker file, :data:`MARKER_NAME` (JSON: format name, format version
and the list of files the engine wrote). An existing folder is replaced only when it is
empty or when every entry in it is one the engine wrote (listed in its marker; for folders of
engine versions before the marker, one of :data:`LEGACY_OUTPUT_FILES` next to a
``params.json``). Anything else - a ``.blend`` saved into the folder, an unrelated folder
given by mistake - is refused with an :class:`OutputFolderError`, and a replacement deletes
only the files listed, never the folder as a whole (docs/conventions.md, last section).

A run killed while writing (SIGKILL, power loss) leaves its hidden temporary folder behind;
the next run into the same parent folder removes such temporaries when their marker shows
they are ours and the process that made them is gone.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from engine.errors import OutputFolderError, UserError  # noqa: F401 (OutputFolderError re-exported)

MARKER_NAME = ".facerecon-output.json"
MARKER_FORMAT = "facerecon-output"
MARKER_VERSION = 1

#: Files written by engine versions that predate the marker: a folder with ``params.json``
#: and nothing but these is recognised as an old reconstruction.
LEGACY_OUTPUT_FILES = frozenset({
    "head.obj", "head.mtl", "albedo.png", "head.glb", "rig.json", "head_camera.obj", "head_camera.mtl",
    "params.json", "overlay.png", "summary.png", "displacement.png",
})

#: Temporaries of other hosts or of platforms without a process check are left alone
#: unless they are older than this (seconds).
STALE_AGE_S = 24 * 3600.0


def _umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_default(path: str | os.PathLike[str], directory: bool = False) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the result the usual umask-based mode."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write(path: str | Path, data: str | bytes | Callable[[BinaryIO], None], *, fsync: bool = False) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place; the
    temporary file is removed on any failure, so a reader sees the old file or the new one.

    ``data``: text (written with '\\n' line ends), bytes, or a function that writes into the
    open binary file (e.g. ``lambda fh: torch.save(obj, fh)``). ``fsync`` flushes the file
    and its folder to disk (checkpoints: a crash right after must not lose them).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if isinstance(data, str):
            with os.fdopen(fd, "w", newline="\n") as fh:
                fh.write(data)
                _flush(fh, fsync)
        else:
            with os.fdopen(fd, "wb") as fh:
                if callable(data):
                    data(fh)
                else:
                    fh.write(data)
                _flush(fh, fsync)
        _chmod_default(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if fsync:
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:  # some file systems do not allow fsync on directories
            pass
    return path


def _flush(fh, fsync: bool) -> None:
    if fsync:
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------------------- output folders
def _target(out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(the path as given, made absolute; the folder actually written). A symlinked ``--out``
    is followed, so the link keeps pointing at the (new) folder and no link is renamed."""
    out = Path(os.fspath(out_dir)).expanduser().absolute()
    if out.is_symlink():
        return out, Path(os.path.realpath(out))
    return out, out


def read_marker(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parsed marker of an output folder, or None when it has none (or an unreadable one)."""
    try:
        with open(Path(folder) / MARKER_NAME, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
        return None
    return data


def _owned_entries(folder: Path, entries: list[str]) -> tuple[set[str] | None, str | None]:
    """(names the engine wrote in ``folder``, or None; why it is not recognised, or None)."""
    marker = read_marker(folder)
    if marker is not None:
        version = marker.get("version")
        if not isinstance(version, int) or version > MARKER_VERSION:
            return None, (f"was written by a newer engine (output format {version!r}, this engine "
                          f"knows {MARKER_VERSION})")
        files = marker.get("files")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            return None, f"has a damaged {MARKER_NAME}"
        return set(files) | {f.split("/", 1)[0] for f in files} | {MARKER_NAME}, None
    if "params.json" in entries:
        return set(LEGACY_OUTPUT_FILES), None
    return None, "is not a previous reconstruction"


def _folder_problem(folder: Path, shown: Path) -> str | None:
    """Why ``folder`` may not be replaced by a new reconstruction, or None when it may."""
    if not folder.exists():
        return None
    if not folder.is_dir():
        return f"output folder {shown} already exists and is a file, not a folder; choose another --out"
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        return f"cannot read output folder {shown}: {exc.strerror or exc}"
    if not entries:
        return None
    owned, why = _owned_entries(folder, entries)
    if owned is None:
        return f"output folder {shown} already exists and {why}; choose another --out or remove it"
    foreign = [e for e in entries if e not in owned]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return (f"output folder {shown} holds files the engine did not write ({', '.join(foreign[:3])}{more}); "
                "move them elsewhere or choose another --out")
    return None


def _writable_ancestor(path: Path) -> str | None:
    """Why no folder can be created at ``path`` (nearest existing ancestor not a writable folder)."""
    p = path.parent
    while not p.exists():
        if p.is_symlink():  # a dangling link among the parents
            return f"{p} is a broken symbolic link"
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"permission denied in {p}"
    return None


def check_output_folder(out_dir: str | os.PathLike[str]) -> Path:
    """Check, before any work, that a reconstruction can be written to ``out_dir``.

    Raises :class:`OutputFolderError` when ``out_dir`` is a file, a folder holding anything
    the engine did not write, or cannot be created. Returns the absolute path as given
    (a symlink is not resolved). Creates and changes nothing.
    """
    shown, folder = _target(out_dir)
    problem = _folder_problem(folder, shown)
    if problem is None and not folder.exists():
        why = _writable_ancestor(folder)
        if why:
            problem = f"cannot create output folder {shown}: {why}"
    if problem:
        raise OutputFolderError(problem)
    return shown


def _marker_text(state: str, files: list[str] | None = None) -> str:
    data: dict[str, Any] = {"format": MARKER_FORMAT, "version": MARKER_VERSION, "state": state}
    if files is not None:
        data["files"] = files
    else:
        data.update(pid=os.getpid(), host=socket.gethostname(), started=round(time.time(), 3))
    return json.dumps(data, indent=1) + "\n"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no cheap check: the age rule decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _is_stale(folder: Path, kind: str, pid: int) -> bool:
    """A temporary of ours whose process is gone: a ``tmp`` must carry our marker, an ``old``
    folder must be recognisable as an output folder (marker or legacy files)."""
    marker = read_marker(folder)
    if kind == "tmp" and marker is None:
        return False
    if kind == "old":
        try:
            if _owned_entries(folder, os.listdir(folder))[0] is None:
                return False
        except OSError:
            return False
        marker = marker or {}
    try:
        age = time.time() - folder.stat().st_mtime
    except OSError:
        return False
    if marker.get("host") not in (None, socket.gethostname()):
        return age > STALE_AGE_S
    if os.name != "posix":
        return age > STALE_AGE_S
    return not _pid_alive(pid)


def _temp_name(name: str, kind: str) -> str:
    return f".{name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _parse_temp_name(entry: str, name: str) -> tuple[str, int] | None:
    """("tmp"|"old", pid) for ``.NAME.tmp-PID-XXXXXXXX`` / ``.NAME.old-PID-XXXXXXXX``."""
    prefix = f".{name}."
    if not entry.startswith(prefix):
        return None
    kind, _, rest = entry[len(prefix):].partition("-")
    pid, _, tail = rest.partition("-")
    if kind not in ("tmp", "old") or not pid.isdigit() or len(tail) != 8:
        return None
    return kind, int(pid)


def remove_stale_temporaries(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed runs into ``out_dir`` left in its parent folder; return what was removed.

    Only hidden ``.NAME.tmp-PID-*`` / ``.NAME.old-PID-*`` folders that carry our marker and
    whose process is gone are touched. A ``.old`` folder (the previous output, renamed just
    before the new one took its place) is renamed back when ``NAME`` itself is missing.
    """
    _, folder = _target(out_dir)
    parent, name = folder.parent, folder.name
    removed: list[Path] = []
    try:
        entries = os.listdir(parent)
    except OSError:
        return removed
    for entry in sorted(entries):
        parsed = _parse_temp_name(entry, name)
        if parsed is None:
            continue
        kind, pid = parsed
        path = parent / entry
        if path.is_symlink() or not path.is_dir() or not _is_stale(path, kind, pid):
            continue
        if kind == "old" and not folder.exists() and not folder.is_symlink():
            try:
                os.rename(path, folder)
                continue
            except OSError:
                pass
        if kind == "old":
            _remove_owned(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def _remove_owned(folder: Path) -> None:
    """Delete the entries of an old output folder that its marker lists; then the folder if
    that leaves it empty. Anything else in it stays where it is."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    owned, _ = _owned_entries(folder, entries)
    for entry in entries:
        if owned is not None and entry in owned and entry != MARKER_NAME:
            p = folder / entry
            try:
                if p.is_dir() and not p.is_symlink():
                    listed = [f for f in owned if f.startswith(entry + "/")]
                    if not listed:  # a folder of a marker without its files (older engines)
                        shutil.rmtree(p)
                        continue
                    for f in listed:  # only the files we wrote; the folder if that empties it
                        (folder / f).unlink(missing_ok=True)
                    if not os.listdir(p):
                        os.rmdir(p)
                else:
                    p.unlink()
            except OSError:
                pass
    try:
        if set(os.listdir(folder)) <= {MARKER_NAME}:
            (folder / MARKER_NAME).unlink(missing_ok=True)
            os.rmdir(folder)
    except OSError:
        pass


def _walk_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` (one level of subfolders, e.g. ``detail/``), and the
    subfolders themselves when empty."""
    out: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            inner = sorted(entry.iterdir())
            out.extend(inner if inner else [entry])
        else:
            out.append(entry)
    return out


@contextmanager
def atomic_output_folder(out_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success move it to ``out_dir``.

    Nothing appears at ``out_dir`` unless the block succeeds: on any exception (Ctrl-C
    included) the temporary folder is deleted. An existing ``out_dir`` is replaced only
    when :func:`check_output_folder` accepts it, checked again just before the swap, and
    the replaced folder loses only the files the engine wrote. The new folder gets the
    marker :data:`MARKER_NAME` listing its files, and folders/files get the user's umask.
    A symlinked ``out_dir`` stays a link to the (new) folder.
    """
    shown = check_output_folder(out_dir)
    _, folder = _target(out_dir)
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"cannot create output folder {shown}: {exc.strerror or exc}") from None
    remove_stale_temporaries(folder)
    tmp = parent / _temp_name(folder.name, "tmp")
    try:
        os.mkdir(tmp)
        (tmp / MARKER_NAME).write_text(_marker_text("writing"), encoding="utf-8")
        _chmod_default(tmp, directory=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputFolderError(f"cannot create output folder {shown}: {exc.strerror or exc}") from None
    try:
        yield tmp
        files = sorted(str(f.relative_to(tmp)) if f.parent != tmp else f.name
                       for f in _walk_files(tmp) if f.name != MARKER_NAME)
        (tmp / MARKER_NAME).write_text(_marker_text("complete", files), encoding="utf-8")
        problem = _folder_problem(folder, shown)  # a file may have been saved there during the fit
        if problem:
            raise OutputFolderError(problem)
        if folder.exists():
            trash = parent / _temp_name(folder.name, "old")
            os.rename(folder, trash)
            try:
                os.rename(tmp, folder)
            except OSError:
                os.rename(trash, folder)
                raise
            _remove_owned(trash)
        else:
            try:
                os.rename(tmp, folder)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # appeared meanwhile
                    raise OutputFolderError(f"output folder {shown} was created by something else while "
                                            "the reconstruction ran; choose another --out") from None
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
