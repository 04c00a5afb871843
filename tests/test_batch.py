"""Batches: several photos, folders of photos and every face of a group photo in one run
(engine/batch.py, ``python -m engine reconstruct A B FOLDER --out DIR [--face all]``)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.batch import collect_photos, reconstruct_batch
from engine.errors import OutputFolderError, UserError


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLCONFIGDIR=str(cwd / "mpl"))
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_batch_reconstructs_every_face_and_goes_on_past_bad_photos(tmp_path, photos):
    """A folder (a face, a corrupt file, a photo without a face, in a subfolder too) and a group
    photo with --face all: every face gets its own complete folder, each bad photo one line
    and an entry in batch.json, and the exit status says that some failed."""
    folder = tmp_path / "shoot"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(photos["astronaut"], folder / "day2" / "anna.png")
    shutil.copy(photos["gradient"], folder / "wall.png")
    (folder / "notes.jpg").write_text("not a photo")
    out = tmp_path / "heads"
    r = _cli("reconstruct", str(folder), str(photos["group"]), "--face", "all", "--out", str(out),
             "--progress", "none", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    done = {p.relative_to(out).as_posix() for p in out.rglob("params.json")}
    assert done == {"day2/anna_face0/params.json", "group_face0/params.json", "group_face1/params.json"}
    for name, index in (("group_face0", 0), ("group_face1", 1), ("day2/anna_face0", 0)):
        params = json.loads((out / name / "params.json").read_text())
        assert params["face_index"] == index and (out / name / "head.glb").is_file()
        assert params["timings"]["fit"] > 0 and params["timings"]["total"] >= params["timings"]["fit"]
    g0, g1 = (json.loads((out / f"group_face{k}" / "params.json").read_text()) for k in (0, 1))
    x0, x1 = (sum(p[0] for p in g["landmarks68_detected_px"]) / 68 for g in (g0, g1))
    assert x0 < 320 < x1  # face 0 is the larger, left one
    report = json.loads((out / "batch.json").read_text())
    assert report["finished"] and report["photos"] == 4 and report["faces_done"] == 3 and report["photos_failed"] == 2
    errors = {Path(i["photo"]).name: i["error"] for i in report["items"] if i["error"]}
    assert set(errors) == {"notes.jpg", "wall.png"}
    assert "not an image" in errors["notes.jpg"] and "no face" in errors["wall.png"]
    lines = r.stderr.splitlines()
    assert sum("failed:" in ln for ln in lines) == 2 and sum(" -> " in ln for ln in lines) == 3
    assert "3 face(s) reconstructed from 4 photo(s)" in lines[-1] and "2 photo(s) failed" in lines[-1]


def test_collect_photos_names_follow_the_folders_and_never_clash(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    for rel in ("a/x.jpg", "a/x.png", "a/sub/y.JPG", "a/.hidden/z.png", "a/readme.txt", "b.png"):
        (tmp_path / rel).write_bytes(b"")
    got = collect_photos([tmp_path / "a", tmp_path / "b.png", tmp_path / "a" / "x.jpg"])
    assert [(p.relative_to(tmp_path).as_posix(), n) for p, n in got] == [
        ("a/sub/y.JPG", "sub/y"), ("a/x.jpg", "x"), ("a/x.png", "x-2"), ("b.png", "b")]  # x.jpg twice: once
    # the batch's own output folder and the engine's result folders are not photos
    (tmp_path / "a" / "heads" / "x").mkdir(parents=True)
    (tmp_path / "a" / "heads" / "x" / "albedo.png").write_bytes(b"")
    (tmp_path / "a" / "old").mkdir()
    (tmp_path / "a" / "old" / "overlay.png").write_bytes(b"")
    (tmp_path / "a" / "old" / ".facerecon-output.json").write_text("{}")
    got = collect_photos([tmp_path / "a"], exclude=tmp_path / "a" / "heads")
    assert [n for _, n in got] == ["sub/y", "x", "x-2"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images in folder"):
        collect_photos([tmp_path / "empty"])
    with pytest.raises(UserError, match="at least one photo"):
        collect_photos([])


def test_batch_refuses_a_bad_output_folder_before_any_work(tmp_path, photos):
    result = tmp_path / "one"
    result.mkdir()
    (result / "params.json").write_text("{}")
    with pytest.raises(OutputFolderError, match="single reconstruction"):
        reconstruct_batch([photos["astronaut"]], result)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="is a file"):
        reconstruct_batch([photos["astronaut"]], tmp_path / "file")
    with pytest.raises(UserError, match="--face"):
        reconstruct_batch([photos["astronaut"]], tmp_path / "x", face=-1)
    assert not (tmp_path / "x").exists()


def test_a_stopped_batch_keeps_what_it_finished(tmp_path, photos):
    """Ctrl-C after the first face: its folder stays, batch.json lists it and says the batch
    did not finish; nothing of the second photo is written."""
    def stop(item):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        reconstruct_batch([photos["astronaut"], photos["group"]], out, face="all", on_item=stop, method="mofa")
    report = json.loads((out / "batch.json").read_text())
    assert report["finished"] is False and [i["out"] for i in report["items"]] == [str(out / "astronaut_face0")]
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_face0", "batch.json"]
    assert (out / "astronaut_face0" / "params.json").is_file()


def test_same_person_gives_every_photo_one_identity(tmp_path, photos):
    """--same-person: the astronaut and her mirror image get one identity (each photo keeping
    its own pose, expression and texture); the combination's weights are recorded; a face-free
    photo among them fails alone; --face all is refused up front."""
    import numpy as np
    from PIL import Image

    mirrored = tmp_path / "mirrored.png"
    Image.fromarray(np.asarray(Image.open(photos["astronaut"]))[:, ::-1].copy()).save(mirrored)
    out = tmp_path / "person"
    report = reconstruct_batch([photos["astronaut"], mirrored, photos["gradient"]], out, same_person=True)
    assert [Path(i.photo).name for i in report.items if i.error] == ["gradient.png"]
    a, b = (json.loads((out / n / "params.json").read_text()) for n in ("astronaut", "mirrored"))
    assert a["identity"] == b["identity"] and a["t"] != b["t"]  # one head, seen from two places
    assert a["same_person"]["photos"] == 2 and abs(a["same_person"]["weight"] + b["same_person"]["weight"] - 1) < 1e-3
    assert a["timings"]["same_person"] > 0 and json.loads((out / "batch.json").read_text())["same_person"] is True
    alone = reconstruct_batch([photos["astronaut"]], tmp_path / "alone", method="mofa")  # (no flag: its own)
    assert "same_person" not in json.loads((tmp_path / "alone" / "astronaut" / "params.json").read_text())
    assert alone.done
    with pytest.raises(UserError, match="one face per photo"):
        reconstruct_batch([photos["group"]], tmp_path / "g", face="all", same_person=True)
