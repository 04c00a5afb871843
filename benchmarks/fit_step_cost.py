"""What one optimisation step of the fit costs, and in how many tensor operations (not a test;
prints figures).

    python benchmarks/fit_step_cost.py [--repeats 30]

Fits the bundled astronaut photo once (default ``fit``), keeps the fitter's state, then times
one landmark step (``PhotoFit._landmark_energy`` with its priors, forward and backward: an
Adam step's work), the Levenberg–Marquardt landmark stage's system (``PhotoFit._lm_system``:
gradient and Gauss–Newton Hessian) and its energy evaluation, and one joint photometric step (as ``PhotoFit.refine`` builds it) — best of ``--repeats`` and the
median, milliseconds, one torch thread — and counts the ``aten::`` operations of each with
``torch.profiler``. A step's time over its operation count is the per-operation overhead
that bounds the hybrid's speed (docs/evaluation.md, "More steps instead").
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from skimage import data
    from torch.profiler import ProfilerActivity, profile

    import engine.fitting.fitter as fitter
    from engine.detect import detect_faces
    from engine.head import load_head_model
    from engine.losses.terms import LossInputs, weighted_sum
    from engine.methods import build_predictor
    from engine.methods.base import FaceObservation

    head = load_head_model("open")
    img = data.astronaut()
    obs = FaceObservation.from_detection(img, detect_faces(img)[0])
    kept: dict = {}
    refine = fitter.PhotoFit.refine

    def keep(self):  # the fitter's state as the joint stage starts
        kept["fit"] = self
        return refine(self)

    fitter.PhotoFit.refine = keep
    try:
        build_predictor("fit", head)(obs)
    finally:
        fitter.PhotoFit.refine = refine
    fit, cfg = kept["fit"], kept["fit"].cfg
    albedo, feature_keep = fit._joint_albedo(fit.app)
    fit.sh = fit.app.sh.clone()[None].requires_grad_(True)
    weights = {"landmark": 1.0 / fit.lmk_sigma**2, "photometric": cfg.w_photo, **fit._priors_weights()}
    if fit.contour_px is not None:
        weights["contour"] = cfg.w_contour / fit.lmk_sigma**2
    photo_weights = (fit.weights * fit.cache.photo_mask.float() * feature_keep)[None]

    def landmark_step() -> None:  # one Adam step's work (landmark_solver=adam)
        fit._landmark_energy(priors=True).sum().backward()

    def gauss_newton_system() -> None:  # one Levenberg-Marquardt step's system (the default)
        fit._lm_system(priors=True)

    def landmark_energy() -> None:  # what LM evaluates for each trial step
        with torch.no_grad():
            fit._landmark_energy(priors=True, l1=False)

    def joint_step() -> None:
        dec = fit.decoder(fit.params(albedo=albedo))
        inputs = LossInputs(dec, observed=dec.sample(fit.work), photo_weights=photo_weights, landmarks=fit.target,
                            landmark_points=dec.project(dec.points(fit.lmk_tri, fit.lmk_bary)),
                            landmark_weights=fit.lmk_w, contour=fit.contour_px, contour_band=cfg.contour_band,
                            contour_region=head.regions["skin"], expression_l1_weights=fit.l1_weights)
        weighted_sum(weights, inputs)[0].sum().backward()

    for name, step in (("landmark step (forward + backward)", landmark_step),
                       ("Gauss-Newton system (gradient + 2 J^T J)", gauss_newton_system),
                       ("landmark energy (no gradient)", landmark_energy), ("joint step (forward + backward)", joint_step)):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            step()
            times.append((time.perf_counter() - t) * 1000.0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        ops = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
        best = min(times)
        print(f"{name}: best {best:.2f} ms, median {statistics.median(times):.2f} ms; "
              f"{ops} aten operations, {1000.0 * best / ops:.1f} us each")


if __name__ == "__main__":
    main()
