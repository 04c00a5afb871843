"""Soak test (not a CI test; prints figures): many reconstructions, flat memory, no leaks.

    python benchmarks/soak.py [--api 500] [--cli 100] [--kept] [--work DIR]

Runs ``--api`` reconstructions in this one process through ``engine.reconstruct.reconstruct``
(``--kept``: all with one head model and method kept loaded, as ``python -m engine serve``
and the Blender add-on keep them; otherwise each run loads its own)
and then ``--cli`` through ``python -m engine reconstruct``, cycling through the astronaut
photo turned by 0, 90, 180 and 270 degrees and alternating two output folders (so most runs
replace a previous output). Every run must succeed without warnings. Prints the resident
memory after the first, the 10th (warm) and every 50th API run - raw RSS, and the memory in
use (RSS after ``gc.collect()`` + glibc ``malloc_trim``; raw RSS also holds freed heap glibc
keeps, which wanders by tens of MB) - the open file descriptors and threads at the same
points, and what is left over: anything in a private TMPDIR used by this process and its
children, and any hidden ``.NAME.tmp-*`` / ``.NAME.old-*`` beside the outputs. Targets
(docs/security.md): memory in use grows <= 50 MB from run 10 to the end (raw RSS printed
beside it), no descriptor growth, nothing left over.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RSS_GROWTH_LIMIT_MB = 50.0


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def live_mb() -> float:
    """RSS after ``gc.collect()`` and glibc's ``malloc_trim(0)`` (freed heap handed back to the
    system): the memory actually in use. Raw RSS also counts freed blocks glibc keeps for
    reuse, which drifts by tens of MB from run to run without any leak. NaN where there is no
    glibc."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return float("nan")
    return rss_mb()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def leftovers(tmpdir: Path, out_parent: Path) -> list[str]:
    found = [str(p) for p in tmpdir.iterdir()]
    found += [str(p) for p in out_parent.iterdir() if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name)]
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api", type=int, default=500, help="reconstructions through the Python API")
    ap.add_argument("--cli", type=int, default=100, help="reconstructions through the command line")
    ap.add_argument("--kept", action="store_true", help="the API runs reuse one loaded model and method")
    ap.add_argument("--work", default=None, help="working folder (default: a new temporary one)")
    args = ap.parse_args()

    import numpy as np
    from PIL import Image
    from skimage import data

    work = Path(args.work or tempfile.mkdtemp(prefix="facerecon_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    tmpdir = work / "tmp"
    tmpdir.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(tmpdir)
    tempfile.tempdir = str(tmpdir)
    out_parent = work / "outputs"
    out_parent.mkdir(exist_ok=True)
    photos = []
    for k in range(4):
        p = work / f"astronaut_{90 * k}.png"
        Image.fromarray(np.ascontiguousarray(np.rot90(data.astronaut(), k))).save(p)
        photos.append(p)

    from engine.reconstruct import SessionCache, reconstruct

    sessions = SessionCache(1) if args.kept else None

    print(f"soak: {args.api} API{' (kept model)' if args.kept else ''} + {args.cli} CLI reconstructions in {work}",
          flush=True)
    marks: dict[int, tuple[float, int, int, float]] = {0: (rss_mb(), open_fds(), threads(), live_mb())}
    failures: list[str] = []
    t0 = time.perf_counter()
    for i in range(1, args.api + 1):
        res = reconstruct(photos[i % 4], out_parent / f"out{i % 2}", sessions=sessions)
        if res.params.get("warnings"):
            failures.append(f"api run {i}: warnings {res.params['warnings']}")
        if i in (1, 10, args.api) or i % 50 == 0:
            marks[i] = (rss_mb(), open_fds(), threads(), live_mb())
            print(f"  api {i:4d}: RSS {marks[i][0]:7.1f} MB (in use {marks[i][3]:7.1f} MB), fds {marks[i][1]}, "
                  f"threads {marks[i][2]}, {(time.perf_counter() - t0) / i:.2f} s/run", flush=True)
    api_s = time.perf_counter() - t0
    left_api = leftovers(tmpdir, out_parent)

    env = dict(os.environ, TMPDIR=str(tmpdir), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    t1 = time.perf_counter()
    cli_codes: dict[int, int] = {}
    for i in range(1, args.cli + 1):
        r = subprocess.run([sys.executable, "-m", "engine", "reconstruct", str(photos[i % 4]), "--out",
                            str(out_parent / f"cli{i % 2}"), "--progress", "none"], env=env, cwd=work,
                           capture_output=True, text=True)
        cli_codes[r.returncode] = cli_codes.get(r.returncode, 0) + 1
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        if r.returncode != 0 or len(lines) != 1 or lines[0].startswith(("error", "warning")):
            failures.append(f"cli run {i}: exit {r.returncode}, stderr {r.stderr.strip()[:300]!r}")
        if i % 25 == 0:
            print(f"  cli {i:4d}: {(time.perf_counter() - t1) / i:.2f} s/run", flush=True)
    cli_s = time.perf_counter() - t1
    left = leftovers(tmpdir, out_parent)
    end = (rss_mb(), open_fds(), threads())

    print("results:")
    if args.api:
        warm = marks.get(10, marks[1])
        last = marks[args.api]
        growth = last[3] - warm[3]
        raw = [m[0] for i, m in sorted(marks.items()) if i >= 10]
        print(f"  api: {args.api} runs in {api_s:.0f} s ({api_s / args.api:.2f} s each)")
        print(f"  api: memory in use before {marks[0][3]:.1f} MB, after run 1 {marks[1][3]:.1f} MB, after run 10 "
              f"{warm[3]:.1f} MB, after run {args.api} {last[3]:.1f} MB -> growth 10..{args.api}: {growth:+.1f} MB "
              f"(limit {RSS_GROWTH_LIMIT_MB:.0f} MB)")
        print(f"  api: raw RSS after run 10 {warm[0]:.1f} MB, after run {args.api} {last[0]:.1f} MB "
              f"({last[0] - warm[0]:+.1f} MB); from run 10 on between {min(raw):.1f} and {max(raw):.1f} MB")
        print(f"  api: open fds after run 1 {marks[1][1]}, run 10 {warm[1]}, run {args.api} {last[1]}; "
              f"threads {marks[1][2]} / {warm[2]} / {last[2]}")
        print(f"  api: leftovers after the API runs: {len(left_api)}")
        if growth > RSS_GROWTH_LIMIT_MB:
            failures.append(f"RSS grew {growth:.1f} MB")
        if last[1] > warm[1]:
            failures.append(f"open file descriptors grew {warm[1]} -> {last[1]}")
    if args.cli:
        print(f"  cli: {args.cli} runs in {cli_s:.0f} s ({cli_s / args.cli:.2f} s each), exit codes {cli_codes}")
    print(f"  end: this process RSS {end[0]:.1f} MB, fds {end[1]}, threads {end[2]}")
    print(f"  leftovers (private TMPDIR + hidden temporaries beside the outputs): {len(left)} {left[:5]}")
    if left:
        failures.append(f"{len(left)} leftovers")
    print(f"  failures: {len(failures)}")
    for f in failures[:20]:
        print(f"    {f}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
