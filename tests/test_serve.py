"""``python -m engine serve`` (engine/serve.py): requests as JSON lines, the model kept loaded,
every request answered with its end line, bad requests answered without ending the server."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _server(tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mpl"))
    return subprocess.Popen([sys.executable, "-m", "engine", "serve", *extra], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
                            cwd=tmp_path)


def test_server_answers_each_request_and_keeps_the_model_loaded(tmp_path, photos):
    proc = _server(tmp_path)
    ready = json.loads(proc.stdout.readline())
    assert ready["ready"] is True and ready["pid"] == proc.pid

    def ask(rid, request: str) -> tuple[dict, list[dict]]:
        proc.stdin.write(request + "\n")
        proc.stdin.flush()
        events = []
        while True:
            event = json.loads(proc.stdout.readline())
            if "end" in event:
                return event, events
            events.append(event)

    def reconstruct(rid, photo, out, *more):
        return ask(rid, json.dumps({"id": rid, "argv": ["reconstruct", str(photo), "--out", str(out),
                                                        "--method", "mofa", *more]}))

    end, events = reconstruct(1, photos["astronaut"], tmp_path / "a")
    assert end == {"end": 1, "status": 0, "error": None}
    assert events[-1] == {"stage": "done", "fraction": 1.0, "out": str(tmp_path / "a")}
    assert json.loads((tmp_path / "a" / "params.json").read_text())["timings"]["model"] > 0
    end, _ = reconstruct(2, photos["gradient"], tmp_path / "b")
    assert end["end"] == 2 and end["status"] == 2 and "no face" in end["error"]
    assert not (tmp_path / "b").exists()
    for rid, request, why in ((3, "not json", "one JSON object"),
                              (4, json.dumps({"id": 4, "argv": ["animate", "x.mp4"]}), "runs reconstruct"),
                              (5, json.dumps({"id": 5, "argv": ["reconstruct", str(photos["astronaut"])]}),
                               "required: --out")):
        end, events = ask(rid, request)
        assert end["status"] == 2 and why in end["error"] and not events, (rid, end)
    end, events = ask(7, json.dumps({"id": 7, "argv": ["detect", str(photos["group"]), "--json"]}))
    assert end["status"] == 0 and not events and len(json.loads(end["output"])["faces"]) == 2
    end, _ = reconstruct(6, photos["group"], tmp_path / "g", "--face", "all")  # a batch, same method: loaded
    assert end == {"end": 6, "status": 0, "error": None}
    again = json.loads((tmp_path / "g" / "group_face0" / "params.json").read_text())
    assert again["timings"]["model"] == 0.0 and (tmp_path / "g" / "group_face1" / "head.glb").is_file()
    proc.stdin.close()  # end of input: the server leaves
    assert proc.wait(timeout=60) == 0
    stderr = proc.stderr.read()
    assert "error: no face found" in stderr and "Traceback" not in stderr


def test_server_leaves_when_idle(tmp_path):
    proc = _server(tmp_path, "--idle-exit", "0.5")
    assert json.loads(proc.stdout.readline())["ready"] is True
    t = time.monotonic()
    assert proc.wait(timeout=60) == 0 and time.monotonic() - t < 30
    assert "no request for 0.5 s" in proc.stderr.read()
    proc.stdin.close()
