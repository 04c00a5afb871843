"""Many photos, or every face of a group photo, in one run.

``python -m engine reconstruct A.jpg B.png PHOTOS/ --out DIR [--face all]``: the head model
and the method are loaded once (:class:`engine.reconstruct.Reconstructor`, ~1.5 s saved per
photo against one command per photo), then every photo is read, its faces detected once, and
each chosen face written to its own output folder under ``DIR`` — the same folder, written
atomically, as a single ``reconstruct`` writes:

* ``DIR/<name>`` for one face per photo (``--face N``, or none for a photo of one face);
  ``DIR/<name>_face<k>`` for every face of each photo (``--face all``, 0 = largest);
* ``<name>`` is the photo's file name without its extension, or for a folder given on the
  command line its path inside that folder (``PHOTOS/team/anna.jpg`` -> ``DIR/team/anna``;
  folders are searched recursively, hidden ones, ``DIR`` itself and the engine's own output
  folders skipped, so ``--out PHOTOS/heads`` can be run again); names that would clash get
  ``-2``, ``-3``, ... in the order the photos come.

``--same-person``: the photos show one person (one face each: ``--face N`` or photos of
one face), who gets one identity (:mod:`engine.fitting.shared_identity`): every face is
estimated first, their identities combined, each fitted again with it, then the folders
written (``params.json`` ``same_person``: how many photos and this one's weight).

A photo that cannot be used (unreadable, no face, a face index it does not have, an output
folder holding someone else's files) is reported, counted and skipped; the batch goes on.
``DIR/batch.json`` lists every photo and face with its folder or its reason, and is rewritten
after each one, so a batch that is stopped still says what it finished (``"finished": false``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from engine.errors import OutputFolderError, UserError

ProgressFn = Callable[[str, float, str], None]
FaceChoice = int | Literal["all"] | None
BATCH_FORMAT = "engine.batch/1"
log = logging.getLogger("engine.batch")


@dataclass
class BatchItem:
    """One face of one photo (or a photo that gave none): where it went, or why it did not."""

    photo: str
    name: str
    face: int | None = None
    out: str | None = None
    error: str | None = None
    faces_found: int | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BatchReport:
    """What :func:`reconstruct_batch` did: ``items`` in order, and the ``batch.json`` path."""

    out_dir: Path
    photos: int
    items: list[BatchItem]
    json_path: Path
    seconds: float = 0.0

    @property
    def done(self) -> list[BatchItem]:
        return [i for i in self.items if i.ok]

    @property
    def failed_photos(self) -> list[str]:
        """Photos with at least one face that failed (or no face at all), in order."""
        return list(dict.fromkeys(i.photo for i in self.items if not i.ok))


def collect_photos(inputs: Sequence[str | os.PathLike[str]],
                   exclude: str | os.PathLike[str] | None = None) -> list[tuple[Path, str]]:
    """(photo path, output name) for every input: a file as given (it need not exist yet: a
    missing one fails as that photo's error), a folder as every image under it except inside
    ``exclude`` (the batch's output folder) and inside the engine's own output folders (their
    textures and previews are not photos). Names are made unique with ``-2``, ``-3``, ...; a
    photo given twice counts once; a folder without images is a :class:`UserError`."""
    from engine.data.folders import find_images
    from engine.export.atomic import MARKER_NAME

    skip = Path(os.fspath(exclude)).expanduser().absolute() if exclude is not None else None

    def ours(p: Path) -> bool:
        p = p.absolute()
        return (skip is not None and (p == skip or skip in p.parents)) or (p.parent / MARKER_NAME).is_file()

    found: list[tuple[Path, str]] = []
    for given in inputs:
        path = Path(os.fspath(given)).expanduser()
        if path.is_dir():
            images = [p for p in find_images(path) if not ours(p)]
            if not images:
                raise UserError(f"no images in folder {given} (looked for "
                                ".jpg, .jpeg, .png, .bmp, .webp, .tif, .tiff, in subfolders too)")
            found += [(p, p.relative_to(path).with_suffix("").as_posix()) for p in images]
        else:
            found.append((path, path.stem or path.name))
    if not found:
        raise UserError("give at least one photo or folder of photos")
    seen: dict[str, int] = {}
    unique, taken = [], set()
    for path, name in found:
        if path.exists():  # a photo given twice (on its own and in a folder) is one photo
            same = path.resolve()
            if same in taken:
                continue
            taken.add(same)
        key = name.lower()  # case-insensitive file systems would merge Anna and anna
        seen[key] = seen.get(key, 0) + 1
        unique.append((path, name if seen[key] == 1 else f"{name}-{seen[key]}"))
    return unique


def reconstruct_batch(inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                      face: FaceChoice = None, progress: ProgressFn | None = None,
                      on_item: Callable[[BatchItem], None] | None = None,
                      sessions: Any = None, same_person: bool = False, **options: Any) -> BatchReport:
    """Reconstruct every photo of ``inputs`` (files and folders) into ``out_dir`` (module doc).

    ``face``: None (each photo must show one face), an index for every photo, or ``"all"``.
    ``options``: :class:`engine.reconstruct.Reconstructor`'s arguments (model, method, ...).
    ``on_item`` is called with each finished item (done or failed), as it happens; ``sessions``
    (:class:`engine.reconstruct.SessionCache`) reuses a model and method already loaded.
    ``same_person``: the photos show one person, who gets one identity
    (:mod:`engine.fitting.shared_identity`; every face is estimated first, then the folders
    are written). Bad arguments (no photos, an unknown method, an output path that is a file) raise a
    :class:`UserError` before any photo is read; a photo's own problems do not raise.
    """
    from engine.reconstruct import SessionCache

    if face is not None and face != "all" and (not isinstance(face, int) or face < 0):
        raise UserError(f"--face must be a face index (0 = largest) or 'all', not {face!r}")
    if same_person and face == "all":
        raise UserError("--same-person takes one face per photo (the same person's): give --face N, "
                        "or photos that show one face, instead of --face all")
    root = Path(os.fspath(out_dir)).expanduser().absolute()
    photos = collect_photos(inputs, exclude=root)
    if root.exists() and not root.is_dir():
        raise OutputFolderError(f"the output folder {out_dir} is a file")
    if (root / "params.json").is_file():
        raise OutputFolderError(f"{out_dir} is a single reconstruction's folder; give a batch its own "
                                "output folder (each face gets a folder inside it)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    report = progress or (lambda stage, fraction, message: None)
    t_all = time.perf_counter()
    session, model_seconds = (sessions or SessionCache(0)).get(progress=report, **options)
    items: list[BatchItem] = []
    result = BatchReport(root, len(photos), items, root / "batch.json")
    meta = {"method": session.spec.name, "model": session.head.name, "face": face, "same_person": same_person}
    pending: list[tuple[BatchItem, Any, Path, ProgressFn]] = []  # same_person: estimated, not yet written

    def add(item: BatchItem) -> None:
        items.append(item)
        _write_json(result, meta, finished=False)
        if on_item is not None:
            on_item(item)

    finished = False
    try:
        for n, (path, name) in enumerate(photos):
            def step(stage: str, fraction: float, message: str, n: int = n, name: str = name) -> None:
                report("saved" if stage == "done" else stage, (n + min(fraction, 0.99)) / len(photos),
                       f"[{n + 1}/{len(photos)}] {name}: {message}")

            t = time.perf_counter()
            timings = {"model": model_seconds} if n == 0 else {}
            unread = BatchItem(str(path), name)
            detected = _attempt(unread, lambda: session.detect(path, step))
            if detected is None:
                unread.seconds = time.perf_counter() - t
                add(unread)
                continue
            timings.update(detected.timings)
            if face == "all":
                chosen: list[int | None] = list(range(len(detected.faces))) or [None]
            else:
                chosen = [face]
            for k in chosen:
                folder = root / (f"{name}_face{k}" if face == "all" and k is not None else name)
                item = BatchItem(str(path), name, face=k, faces_found=len(detected.faces))
                if same_person:
                    estimate = _attempt(item, lambda: _estimate(session, detected, k, folder, step, timings))
                    if estimate is not None:
                        item.face = estimate.face
                        pending.append((item, estimate, folder, step))
                else:
                    _written(item, _attempt(item, lambda: session.reconstruct_face(detected, k, folder, step, timings)))
                item.seconds = time.perf_counter() - t
                t, timings = time.perf_counter(), {}  # the photo's load and detect count once
                if item.error is not None or not same_person:
                    add(item)
        if pending:
            _write_same_person(session, pending, add)
        finished = True
    finally:
        result.seconds = time.perf_counter() - t_all
        _write_json(result, meta, finished=finished)
    report("done", 1.0, str(root))
    return result


def _attempt(item: BatchItem, work: Callable[[], Any]) -> Any:
    """``work()``, or None with the item's error set: a photo's problem (or a bug on one photo)
    must not cost the others."""
    try:
        return work()
    except UserError as exc:
        item.error = str(exc)
    except Exception as exc:
        log.exception("internal error on %s (face %s)", item.photo, item.face)
        item.error = f"internal error: {type(exc).__name__}: {exc}"
    return None


def _written(item: BatchItem, result: Any) -> None:
    """A written face's folder, index and warnings into its item (nothing for a failed one)."""
    if result is not None:
        item.face, item.out = result.face_index, str(result.out_dir)
        item.warnings = list(result.params.get("warnings") or [])


def _estimate(session: Any, detected: Any, face: int | None, folder: Path, step: ProgressFn,
              timings: dict[str, float]) -> Any:
    """A face's estimate, its output folder checked first (a folder we may not replace is refused
    before the fit, as a single reconstruction does)."""
    from engine.export.atomic import check_output_folder

    check_output_folder(folder)
    return session.estimate_face(detected, face, step, timings)


def _write_same_person(session: Any, pending: list, add: Callable[[BatchItem], None]) -> None:
    """One identity for the estimated faces (two or more), then every folder written."""
    from engine.fitting.shared_identity import share_identity

    shared, why = None, None
    if len(pending) > 1:
        probe = BatchItem("", "")
        shared = _attempt(probe, lambda: share_identity(session.head, [e.observation for _, e, _, _ in pending],
                                                       [e.estimate for _, e, _, _ in pending], session.config))
        why = probe.error
    for j, (item, estimate, folder, step) in enumerate(pending):
        t = time.perf_counter()
        extra = None
        if shared is not None:
            estimate.estimate = shared.estimates[j]
            estimate.timings["same_person"] = shared.seconds / len(pending)
            extra = {"same_person": {"photos": len(pending), "weight": round(float(shared.weights[j]), 4),
                                     "refitted_by": "fit"}}  # (whatever method made the first estimate)
        _written(item, _attempt(item, lambda: session.write_face(estimate, folder, step, extra=extra)))
        if why is not None:
            item.warnings.append(f"the photos' identities could not be combined ({why}); each keeps its own")
        item.seconds += time.perf_counter() - t
        add(item)


def _write_json(result: BatchReport, meta: dict[str, Any], finished: bool) -> None:
    from engine.export.atomic import atomic_write

    data = {"format": BATCH_FORMAT, **meta, "finished": finished, "photos": result.photos,
            "faces_done": len(result.done), "photos_failed": len(result.failed_photos),
            "seconds": round(result.seconds, 3),
            "items": [{k: (round(v, 3) if k == "seconds" else v) for k, v in asdict(i).items()} for i in result.items]}
    atomic_write(result.json_path, (json.dumps(data, indent=1) + "\n").encode())
