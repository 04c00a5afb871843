"""The Blender extension: manifest, build, engine runner, and (in a child process) Blender.

Builds the extension zip with Blender's own builder, runs the reconstruction on a real
photo through ``python -m engine reconstruct`` as the non-blocking job the modal operator
polls (progress, errors, cancel), then runs ``tests/test_blender_inside.py`` in a child
Python that imports ``bpy``, installs the zip with
``bpy.ops.extensions.package_install_files`` into a temporary user folder and checks the
operator, the imported head, its sliders, the detail bake and the exports.

Why a child process: ``bpy`` 4.5 as a module can deadlock at interpreter exit (its audio
"delayed close" thread waits on a condition variable that a static destructor destroys),
which would hang the whole test session; the child leaves with ``os._exit``. It also keeps
Blender's global state and the temporary HOME out of the other tests.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import build_extension  # noqa: E402

HAS_BPY = importlib.util.find_spec("bpy") is not None
pytestmark = [pytest.mark.blender,
              pytest.mark.skipif(not HAS_BPY, reason="the bpy module (Blender as a Python module) is not installed")]


def _blender_ext_module():
    """Blender's extension CLI (bl_pkg/cli/blender_ext.py) imported as a module."""
    script = Path(build_extension.blender_ext_command()[-1])
    spec = importlib.util.spec_from_file_location("blender_ext_cli", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- manifest
def test_manifest_passes_blenders_validator():
    ext = _blender_ext_module()
    manifest = ext.pkg_manifest_from_toml_and_validate_all_errors(str(REPO / "blender_manifest.toml"), strict=True)
    assert not isinstance(manifest, list), manifest  # a list holds the validation errors
    assert manifest.schema_version == "1.0.0" and manifest.type == "add-on"
    assert manifest.id == "facerecon"
    raw = build_extension.manifest()
    assert raw["permissions"]["files"]  # every permission has its reason
    excluded = raw["build"]["paths_exclude_pattern"]
    assert {"/tests/", "/train/", "*.npz", "*.pth", "*.ckpt", "__pycache__/"} <= set(excluded)  # .pt: see the zip test
    import engine
    assert raw["version"] == engine.__version__


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    return build_extension.build(tmp_path_factory.mktemp("dist"))


def test_extension_zip_builds_and_validates(extension_zip):
    # `blender --command extension validate` equivalent on the built archive
    proc = subprocess.run(build_extension.blender_ext_command() + ["validate", str(extension_zip)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = zipfile.ZipFile(extension_zip).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names and "runner.py" in names
    assert "engine/__init__.py" in names and "engine/reconstruct.py" in names  # the bundled engine
    assert any(n.startswith("engine/assets/") and n.endswith(".json") for n in names)
    shipped = {"engine/assets/mofa_open_default.pt", "engine/assets/deca_open_default.pt",
               "engine/assets/cest_open_default.pt"}
    assert shipped <= set(names)  # our own default networks ship (the registry's, for the Blender menu)
    assert not any("__pycache__" in n or n.endswith((".npz", ".pyc")) or n.startswith("tests/")
                   or (n.endswith(".pt") and n not in shipped) for n in names)


# ---------------------------------------------------------------------------- engine runner
def test_runner_explains_a_missing_engine(tmp_path):
    from blender_addon import runner

    # The runner must work without bpy (it is also used from plain Python): import it alone.
    probe = subprocess.run([sys.executable, "-c", "import sys, blender_addon.runner; "
                            "sys.exit('bpy' in sys.modules)"], cwd=REPO, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr or "blender_addon.runner imported bpy"

    bad = runner.choose_python("EXTERNAL", str(tmp_path / "nowhere" / "python"))
    assert not bad.ok and "nowhere" in bad.reason
    lines = runner.check_engine(bad)
    assert any(not ok and "nowhere" in text for ok, text in lines)
    job = runner.EngineJob(runner.ReconstructRequest(photo=str(tmp_path / "x.png")), bad)
    job.start()
    assert job.state == runner.FAILED and "nowhere" in job.error
    ok = runner.choose_python("EXTERNAL", sys.executable)
    assert ok.ok and ok.python == sys.executable
    args = runner.ReconstructRequest(photo="p.jpg", model="ict", model_path="/m", device="cuda", face=2).arguments("o")
    assert args[:5] == ["-m", "engine", "reconstruct", "p.jpg", "--out"]
    assert ["--model-path", "/m"] == args[args.index("--model-path"):args.index("--model-path") + 2]
    assert "jsonl" in args and ["--face", "2"] == args[-2:]
    # the largest face is asked for explicitly: the engine refuses to guess between several
    default = runner.ReconstructRequest(photo="p.jpg").arguments("o")
    assert ["--face", "0"] == default[-2:] and "--detail" not in default and "--fit-option" not in default
    tuned = runner.ReconstructRequest(photo="p.jpg", fit_options=("a=1", "b=2")).arguments("o")
    assert tuned[-6:] == ["--fit-option", "a=1", "--fit-option", "b=2", "--face", "0"]
    assert "--texture-size" not in default  # 1024, the engine's default
    big = runner.ReconstructRequest(photo="p.jpg", texture_size=2048).arguments("o")
    assert ["--texture-size", "2048"] == big[big.index("--texture-size"):big.index("--texture-size") + 2]


def test_bake_detail_request_writes_the_pose_and_checks_the_map(tmp_path):
    """The job of *Bake Detail for This Pose* (no bpy): its command line, the pose file it
    writes before the child starts, a missing result folder refused before any child, and
    success only when the map was written."""
    import json

    from blender_addon import runner

    pose = {"expression": {"browInnerUp": 1.0, "jawOpen": 0.25}, "jaw": [0.1, 0.0, 0.0]}
    gone = runner.BakeDetailRequest(result_dir=str(tmp_path / "gone"), pose=pose)
    assert "is gone" in gone.input_problem()
    job = runner.EngineJob(gone, runner.choose_python("EXTERNAL", sys.executable))
    job.start()
    assert job.state == runner.FAILED and "is gone" in job.error and job._proc is None
    folder = tmp_path / "result"
    folder.mkdir()
    (folder / "params.json").write_text("{}")
    request = runner.BakeDetailRequest(result_dir=str(folder), pose=pose)
    assert request.input_problem() is None
    out = tmp_path / "work" / "result"
    assert request.arguments(str(out)) == ["-m", "engine", "bake-detail", str(folder), "--pose",
                                           str(out / "pose.json"), "--out", str(out / "detail_pose.png")]
    request.prepare(out)
    assert json.loads((out / "pose.json").read_text()) == pose
    assert "no detail map" in request.output_problem(out)
    (out / "detail_pose.png").write_bytes(b"written by the engine")
    assert request.output_problem(out) is None
    # reconstruct and animate still need head.glb in their folder
    assert "head.glb" in runner.ReconstructRequest(photo="p.jpg").output_problem(out)


def test_animate_request_passes_the_smoothing_the_engine_understands():
    """*Animate from Video*'s smoothing choices become ``engine animate`` options its own parser
    accepts (no bpy); the defaults add none."""
    from blender_addon import runner
    from engine.__main__ import build_parser

    plain = runner.AnimateRequest(video="clip.mp4").arguments("OUT")
    assert "--smooth" not in plain and "--min-cutoff" not in plain
    for smooth in ("causal", "off"):
        args = runner.AnimateRequest(video="clip.mp4", smooth=smooth, min_cutoff=0.2).arguments("OUT")
        parsed = build_parser().parse_args(args[2:])  # after "-m engine"
        assert (parsed.smooth, parsed.min_cutoff, parsed.video) == (smooth, 0.2, "clip.mp4")


def test_all_faces_request_is_a_batch_that_may_partly_fail(tmp_path):
    """*All* faces (no bpy): ``--face all``; exit status 1 (some faces failed) still imports the
    others; the result is judged by batch.json: no faces done is a failure that says why."""
    import json

    from blender_addon import runner

    request = runner.ReconstructRequest(photo="team.jpg", face="all")
    args = request.arguments(str(tmp_path))
    assert args[args.index("--face") + 1] == "all"
    assert request.exit_ok(0) and request.exit_ok(1) and not request.exit_ok(2)
    one = runner.ReconstructRequest(photo="team.jpg", face=1)
    assert not one.exit_ok(1) and one.arguments(str(tmp_path))[-2:] == ["--face", "1"]
    assert "batch.json" in request.output_problem(tmp_path)
    items = [{"photo": "team.jpg", "face": None, "out": None, "error": "no face found in team.jpg"}]
    (tmp_path / "batch.json").write_text(json.dumps({"items": items}))
    assert request.output_problem(tmp_path) == "no face found in team.jpg"
    items = [{"photo": "team.jpg", "face": 0, "out": str(tmp_path / "team_face0"), "error": None},
             {"photo": "team.jpg", "face": 1, "out": None, "error": "internal error: ValueError: x"}]
    (tmp_path / "batch.json").write_text(json.dumps({"items": items}))
    assert request.output_problem(tmp_path) is None
    assert [i["face"] for i in runner.batch_items(tmp_path)] == [0, 1]


@pytest.fixture(scope="module")
def engine_choice():
    from blender_addon import runner

    choice = runner.choose_python()
    ok, why = runner.reconstruct_available(choice)
    if not ok:
        pytest.skip(f"'python -m engine reconstruct' is not available yet: {why}")
    return choice


def _run_job(job, timeout=300.0):
    """Drive the job exactly like the modal operator's timer does."""
    job.start()
    stages, deadline = [], time.monotonic() + timeout
    while job.poll() == "running":
        if job.stage and (not stages or stages[-1] != job.stage):
            stages.append(job.stage)
        assert time.monotonic() < deadline, "engine job did not finish"
        time.sleep(0.05)
    return stages


@pytest.fixture(scope="module")
def result_folder(engine_choice, photos, tmp_path_factory) -> Path:
    """A real output folder of the astronaut photo, made through the polled job."""
    from blender_addon import runner

    job = runner.EngineJob(runner.ReconstructRequest(photo=str(photos["astronaut"])), engine_choice)
    stages = _run_job(job)
    assert job.state == runner.DONE, job.error
    assert job.fraction == 1.0 and len(stages) >= 3, stages  # progress arrived while it ran
    keep = tmp_path_factory.mktemp("result") / "astronaut_out"
    shutil.copytree(job.out_dir, keep)
    job.cleanup()
    assert not job.out_dir.exists()
    return keep


@pytest.fixture(scope="module")
def detail_folder(engine_choice, photos, tmp_path_factory) -> Path:
    """A real output folder with animated detail (docs/deca.md, "Output folder and Blender"):
    a 2-step run of the DECA detail stage at test size (as tests/test_deca_detail.py; the
    plain generator has no true displacement, so ``detail_gt`` is off), its detail decoder
    randomised so that it displaces something (an untrained one gives flat maps), then
    ``engine reconstruct --method deca`` of the astronaut. ~15 s on two cores."""
    import torch

    from engine.methods.deca import Deca
    from engine.reconstruct import reconstruct
    from engine.train import Trainer, load_config

    root = tmp_path_factory.mktemp("deca_detail")
    cfg = load_config(REPO / "train/configs/deca_detail.yaml",
                      [f"run_dir={root / 'run'}", "max_steps=2", "batch_size=2", "data.image_size=64",
                       "data.n_samples=4", "data.val_samples=2", "data.num_workers=0", "data.options={}",
                       "progress=off", "tensorboard=false", "image_every=0", "log_every=1", "ckpt_every=2",
                       "eval_every=0", "model.visibility_size=32", "model.width=0.25", "model.detail_uv_size=32",
                       "init_from=", "freeze=[]", "data.views_per_identity=2", "model.losses.detail_gt=0",
                       "model.losses.detail_gt_l2=0"])
    trainer = Trainer(cfg)
    try:
        trainer.train()
    finally:
        trainer.close()
    final = root / "run" / "final.pt"
    net = Deca.load(final)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for param in net.detail_decoder.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.05)
    torch.save({**torch.load(final, weights_only=True), "model": net.state_dict()}, final)
    return reconstruct(str(photos["astronaut"]), root / "astronaut_deca", method="deca",
                       checkpoint=str(final)).out_dir


def test_job_reports_engine_errors_and_cancels(engine_choice, photos):
    from blender_addon import runner

    job = runner.EngineJob(runner.ReconstructRequest(photo=str(photos["gradient"])), engine_choice)
    _run_job(job)
    assert job.state == runner.FAILED
    assert "\n" not in job.error and "face" in job.error.lower(), job.error
    job.cleanup()

    job = runner.EngineJob(runner.ReconstructRequest(photo=str(photos["astronaut"])), engine_choice)
    job.start()
    work = job.out_dir.parent
    deadline = time.monotonic() + 120
    while job.poll() == "running" and job.stage in ("", "start"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job.cancel()  # Esc in the UI
    assert job.state == runner.CANCELLED
    assert job._proc.poll() is not None  # the child is gone
    assert not work.exists()  # and so is its temporary folder


def test_more_photos_of_one_person_make_a_same_person_batch_whose_photo_is_the_head(tmp_path):
    """*More photos* (no bpy): the photo and the folder go to one ``--same-person`` batch; the
    head imported is the photo's own folder; its failure is the job's error even when the
    other photos worked; a missing folder or *All* faces with it are refused before any child."""
    import json

    from blender_addon import runner

    photo, more = tmp_path / "anna.jpg", tmp_path / "more"
    photo.write_bytes(b"")
    more.mkdir()
    request = runner.ReconstructRequest(photo=str(photo), more_photos=(str(more),))
    args = request.arguments(str(tmp_path / "out"))
    assert args[3:5] == [str(photo), str(more)] and "--same-person" in args and request.batch
    assert request.input_problem() is None and request.exit_ok(1)
    assert "do not exist" in runner.ReconstructRequest(photo=str(photo), more_photos=(str(tmp_path / "x"),)).input_problem()
    assert "cannot go together" in runner.ReconstructRequest(photo=str(photo), more_photos=(str(more),),
                                                             face="all").input_problem()
    out = tmp_path / "out"
    out.mkdir()
    items = [{"photo": str(more / "b.jpg"), "face": 0, "out": str(out / "b"), "error": None},
             {"photo": str(photo), "face": 0, "out": str(out / "anna"), "error": None}]
    (out / "batch.json").write_text(json.dumps({"items": items}))
    assert request.head_folders(out) == [out / "anna"] and request.output_problem(out) is None
    items[1].update(out=None, error="no face found in anna.jpg")
    (out / "batch.json").write_text(json.dumps({"items": items}))
    assert request.head_folders(out) == [] and request.output_problem(out) == "no face found in anna.jpg"
    plain = runner.ReconstructRequest(photo=str(photo))
    assert not plain.batch and plain.head_folders(out) == [out] and "--same-person" not in plain.arguments("o")


def test_find_faces_on_the_kept_engine_says_why_when_its_stderr_comes_late(monkeypatch, tmp_path):
    """The kept engine's end line (stdout) can come before its ``error:`` line (stderr, another
    pipe): *Find Faces* still gives the engine's reason, not "no output" (seen on a slow VM)."""
    from blender_addon import runner

    class Worker:  # answers at once with the end line, the stderr line not read yet
        busy = True

        def take(self, rid, timeout=None):
            self.busy = False
            return "end", {"end": rid, "status": 2, "error": "cannot read image bad.png: it is a text file"}

        def alive(self):
            return True

    monkeypatch.setattr(runner, "claim_worker", lambda python, env, argv: (Worker(), 7))
    (tmp_path / "bad.png").write_text("not a photo")
    choice = runner.EngineChoice(python=sys.executable, reason="test", extra_paths=[])
    found = runner.find_faces(choice, str(tmp_path / "bad.png"), tmp_path / "faces.png", keep=True)
    assert found.error == "face detection failed: cannot read image bad.png: it is a text file"
    assert runner.end_error_lines({"end": 1, "status": 0, "error": None}) == []


def test_kept_engine_serves_job_after_job_and_restarts_when_gone(engine_choice, photos, tmp_path):
    """*Keep the engine running*: reconstructions and *Find Faces* go to one ``engine serve``
    child, which keeps the model loaded (the second result loads nothing) and survives a photo
    without a face; Esc stops it and the next job starts a fresh one; one that left (idle) is
    restarted."""
    import json

    from blender_addon import runner

    def job(photo, **kw):
        j = runner.EngineJob(runner.ReconstructRequest(photo=str(photos[photo]), method="mofa", **kw),
                             engine_choice, keep=True)
        _run_job(j)
        return j

    runner.stop_worker()
    try:
        first = job("astronaut")
        assert first.state == runner.DONE, first.error
        worker = runner._WORKER
        assert worker is not None and worker.alive() and not worker.busy and first._proc is None
        found = runner.find_faces(engine_choice, str(photos["group"]), tmp_path / "faces.png", keep=True)
        assert found.error is None and len(found.faces) == 2 and found.preview == str(tmp_path / "faces.png")
        assert runner._WORKER is worker and not worker.busy
        (tmp_path / "bad.png").write_text("not a photo")
        bad = runner.find_faces(engine_choice, str(tmp_path / "bad.png"), tmp_path / "bad_faces.png", keep=True)
        assert "not an image" in bad.error and runner._WORKER is worker and worker.alive()
        noface = job("gradient")
        assert noface.state == runner.FAILED and "face" in noface.error.lower() and "\n" not in noface.error
        second = job("group", face="all")
        assert second.state == runner.DONE and runner._WORKER is worker and worker.alive()
        faces = [json.loads((f / "params.json").read_text()) for f in sorted(second.out_dir.iterdir()) if f.is_dir()]
        assert [f["face_index"] for f in faces] == [0, 1] and faces[0]["timings"]["model"] == 0.0  # kept loaded
        for j in (first, noface, second):
            j.cleanup()

        cancelled = runner.EngineJob(runner.ReconstructRequest(photo=str(photos["astronaut"])), engine_choice, keep=True)
        cancelled.start()
        deadline = time.monotonic() + 120
        while cancelled.poll() == "running" and cancelled.stage in ("", "start"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        work = cancelled.out_dir.parent
        cancelled.cancel()
        assert cancelled.state == runner.CANCELLED and not worker.alive() and runner._WORKER is None
        assert not work.exists()

        again = job("astronaut")
        assert again.state == runner.DONE and runner._WORKER is not worker
        runner._WORKER.proc.kill()  # as if it had left after its idle time
        runner._WORKER.proc.wait()
        last = job("astronaut")
        assert last.state == runner.DONE and runner._WORKER.alive()
        for j in (again, last):
            j.cleanup()
    finally:
        runner.stop_worker()


# ---------------------------------------------------------------------------- inside Blender
def test_inside_blender(extension_zip, result_folder, detail_folder, tmp_path):
    """Run tests/test_blender_inside.py under bpy in a child process (see module docstring)."""
    home = tmp_path / "home"
    env = dict(os.environ, HOME=str(home), BLENDER_USER_RESOURCES=str(home / "blender"),
               XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               FACERECON_BLENDER_CHILD="1", FACERECON_EXTENSION_ZIP=str(extension_zip),
               FACERECON_RESULT_FOLDER=str(result_folder), FACERECON_DETAIL_FOLDER=str(detail_folder),
               PYTHONPATH=str(REPO))
    code = ("import os, sys, pytest; rc = pytest.main(sys.argv[1:]); "
            "sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))")
    # FACERECON_INSIDE_K=EXPR runs only the inner tests that match (pytest -k), e.g. "detail"
    select = ["-k", os.environ["FACERECON_INSIDE_K"]] if os.environ.get("FACERECON_INSIDE_K") else []
    proc = subprocess.run([sys.executable, "-c", code, "-q", "-p", "no:cacheprovider", "-o", "addopts=", *select,
                           str(REPO / "tests" / "test_blender_inside.py")],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
    report = proc.stdout[-6000:] + "\n" + "\n".join(
        ln for ln in proc.stderr.splitlines() if "Freeing memory after the leak" not in ln)[-3000:]
    assert proc.returncode == 0, report
    assert " passed" in proc.stdout and " skipped" not in proc.stdout, report
