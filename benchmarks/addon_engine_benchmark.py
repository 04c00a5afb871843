"""What the Blender artist waits for, with and without the kept engine (not a test; prints figures).

    python benchmarks/addon_engine_benchmark.py [--n 4] [--method fit]

Drives the add-on's engine runner (``blender_addon.runner``, no Blender needed) with this
Python as the engine Python, on the tests' two-face group photo: *Find Faces* with a child of
its own, then on the kept engine (``python -m engine serve``: the first call starts it); then
``--n`` reconstructions of face 0 as jobs with a child each, and ``--n`` on the kept engine,
each job timed from ``start`` to its end as the panel's modal timer sees it (polled every
20 ms). Prints the seconds of each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _group_photo(path: Path) -> Path:
    import numpy as np
    from PIL import Image
    from skimage import data

    portrait = data.astronaut()[0:300, 100:360]
    group = np.full((320, 640, 3), 200, np.uint8)
    group[0:300, 20:280] = portrait
    group[60:268, 400:580] = np.asarray(Image.fromarray(portrait).resize((180, 208)))
    Image.fromarray(group).save(path)
    return path


def main() -> None:
    from blender_addon import runner

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4, help="reconstructions each way (default 4)")
    ap.add_argument("--method", default="fit")
    a = ap.parse_args()
    choice = runner.choose_python("EXTERNAL", sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        photo = str(_group_photo(Path(tmp) / "group.png"))

        def find(keep: bool) -> float:
            t = time.perf_counter()
            found = runner.find_faces(choice, photo, Path(tmp) / "faces.png", keep=keep)
            if found.error or len(found.faces) != 2:
                raise SystemExit(f"Find Faces failed: {found.error}")
            return time.perf_counter() - t

        def job(keep: bool) -> float:
            j = runner.EngineJob(runner.ReconstructRequest(photo=photo, method=a.method, face=0), choice, keep=keep)
            t = time.perf_counter()
            j.start()
            while j.poll() == runner.RUNNING:
                time.sleep(0.02)
            seconds = time.perf_counter() - t
            if j.state != runner.DONE:
                raise SystemExit(f"reconstruction failed: {j.error}")
            j.cleanup()
            return seconds

        runner.stop_worker()
        own_find = find(False)
        kept_find = [find(True) for _ in range(3)]
        own = [job(False) for _ in range(a.n)]
        kept = [job(True) for _ in range(a.n)]
        runner.stop_worker()
    print(f"add-on engine runner, --method {a.method}, group photo (2 faces), wall clock")
    print(f"  Find Faces: child of its own {own_find:.2f} s; kept engine {kept_find[0]:.2f} s (starting it), "
          f"then {kept_find[1]:.3f} / {kept_find[2]:.3f} s")
    print(f"  Reconstruct: child of its own {statistics.median(own):.2f} s (median of {a.n}); kept engine "
          f"{' / '.join(f'{s:.2f}' for s in kept)} s (warmed by Find Faces)")


if __name__ == "__main__":
    main()
