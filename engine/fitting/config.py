"""Configuration of the analysis-by-synthesis fitter (one dataclass, documented defaults)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence


@dataclass
class FitConfig:
    """Schedule, weights and camera guess of :func:`engine.fitting.fit_photo`.

    Camera: the focal length is unknown in a single photo, so it is guessed from a fixed
    field of view over the photo's longer side (``fov_deg``); when that would put the face
    closer than ``min_distance_m`` (tight face crops, where the FOV rule is meaningless),
    the focal is raised so the face sits at that distance instead. Focal errors mostly
    trade perspective strength for depth; the similarity-aligned shape barely changes.
    """

    # camera guess
    fov_deg: float = 40.0
    min_distance_m: float = 0.6
    # working crop around the face (photometric sampling and visibility raster)
    work_size: int = 192
    crop_scale: float = 1.7  # crop side / landmark bounding-box side
    blur_sigma_px: float = 1.0  # Gaussian blur of the working crop (smoother photometric gradients)
    # stage 1+2: landmarks (pose, then identity/expression/jaw)
    pose_iters: int = 15  # Adam steps (landmark_solver "adam"); with "lm" > 0 = solve, 0 = skip
    shape_iters: int = 40
    # "adam": the schedule above (pose_iters, then shape_iters and expression_reweight_iters
    # Adam steps); "lm": the same energies (pose alone; everything with the ℓ1 prior; again
    # with the reweighted ℓ1) each minimised to convergence by orthant-wise
    # Levenberg–Marquardt (engine.fitting.optim, engine.fitting.gauss_newton), at most
    # `landmark_lm_iters` Gauss–Newton steps per solve; a step count of 0 still skips its part.
    # "lm" since the tenth session: the stage 0.6 s -> 0.2-0.35 s, the same fits within noise
    # (synthetic seed 0 and the Cycles set), video frames 13 % more accurate (docs/fitting.md)
    landmark_solver: str = "lm"
    landmark_lm_iters: int = 20
    lr_pose: float = 0.02
    lr_shape: float = 0.08
    # stage 3: appearance (closed-form SH + albedo alternation)
    appearance_rounds: int = 3
    albedo_prior_weight: float = 0.05
    sh_reg: float = 1e-3
    # light-level prior (issue #17: skin tones collapsed to one mean): albedo × light is
    # ambiguous in scale, and starting from the mean skin colour the lighting absorbed every
    # face's brightness. This pulls the mean SH shading over the visible skin towards
    # `light_level` (sRGB-space units: 1 = a white surface renders white) with weight
    # `light_level_weight` (relative to the data term; 0 = off), so the albedo keeps the
    # photo's brightness and chromaticity.
    # Tuned on the realistic generator's faces (python -m engine.eval skin --n 24, weights
    # 0.3/1/3 × levels 0.7/0.85/1.0: slope 1.18/0.98/0.83, weight hardly matters); judged on
    # the Cycles set: skin Spearman 0.582 -> 0.871, slope 0.187 -> 0.588, geometry unchanged.
    light_level: float = 0.85
    light_level_weight: float = 1.0
    # with a learned start (hybrid), the level is the start's own: its mean SH shading over the
    # same skin. The networks tell a dim light from a dark skin better than the photo's
    # brightness does (thirteenth session, docs/evaluation.md "The hybrid takes the network's
    # light level"): on our faces (engine.eval skin --n 40 --method hybrid) Spearman 0.879 ->
    # 0.897, mean |error| 0.066 -> 0.053; on the Cycles set 0.872 / 0.589 -> 0.893 / 0.638,
    # geometry unchanged. Plain fits have no start and use `light_level`.
    light_level_from_init: bool = True
    # the hybrid's shorter schedule (engine.methods.hybrid): a learned start replaces the PnP
    # start and the pose-only stage; these many landmark, reweighted-ℓ1 and joint steps follow.
    # 8 + 10 landmark steps keep the geometry on the Cycles set (1.40 vs 1.41 mm) in 10 % less
    # time but lose expression (preset slope 0.21 -> 0.12, jaw correlation 0.91 -> 0.83), so
    # the defaults stay (docs/evaluation.md). With landmark_solver "lm" the landmark counts only
    # switch their solve on (> 0) or off (0): each solve runs to convergence
    hybrid_shape_iters: int = 15
    hybrid_reweight_iters: int = 20
    # 30 = the fit's joint_iters (eleventh session): with 20 the hybrid ended 0.03 mm worse than
    # the fit on the Cycles set (21 faces worse by > 0.1 mm, 2 better); with 30 and the guessed
    # intrinsics below it ends where the fit ends (1.37 mm, 78 %), docs/evaluation.md
    hybrid_joint_iters: int = 30
    # when the detector is lost (its landmarks' median distance to the learned start's, over the
    # landmarks' box size, above this; 0 = never), the hybrid keeps the start's geometry and
    # solves only the appearance: following lost landmarks (profiles, occluded faces) ended 1-3
    # mm worse than the network on the realistic generator's wide-pose frames (all 12 of 49
    # faces above 0.12), while no face of the Cycles set comes near it (at most 0.078)
    hybrid_lost_landmarks: float = 0.12
    # the intrinsics of a fit started from another estimate (`init`): "init" keeps the
    # estimate's camera K (video: one camera for the whole clip); "guess" uses the fit's own
    # guess (fov_deg, min_distance_m) and moves the estimate's translation so the head projects
    # to the same place at the same size. The hybrid uses `hybrid_intrinsics`: a network's
    # fixed canonical focal length (3.375 × crop side) is a long lens, and its perspective
    # cost the hybrid 74 % -> 77 % better-than-mean-face faces on the Cycles set
    init_intrinsics: str = "init"
    hybrid_intrinsics: str = "guess"
    # stage 4: joint photometric refinement
    joint_iters: int = 30
    visibility_every: int = 10
    lr_joint: float = 0.01
    # the expression's step in the joint stage, times lr_joint. 2 raised the fitted-on-true slope
    # (seed 100: 0.175 -> 0.242) but also eyeWide on neutral faces (mean largest weight 0.24 ->
    # 0.39) and the geometric mean with detected landmarks (2.189 -> 2.231 mm)
    joint_expression_lr_scale: float = 1.0
    # low-pass albedo in the joint stage (shape from shading; 0 = off): the per-vertex albedo
    # is smoothed over the mesh by this many neighbour-averaging passes before the photometric
    # term uses it, so shading detail has to come from the surface normals; vertices whose
    # albedo differs from the low-pass by more than `joint_albedo_feature_tau` (brows, lips)
    # leave the photometric term. The final appearance solve keeps the per-vertex albedo.
    # Off by default: 12 passes helped detected landmarks (N = 50 seed 0: 2.15 -> 2.02 mm with
    # the contour term) but hurt exact landmarks (1.69 -> 1.76 mm; see docs/fitting.md).
    joint_albedo_smooth_iters: int = 0
    joint_albedo_feature_tau: float = 0.05
    # reflectance symmetry in the joint stage (CEST's flip prior; 0 = off, 1 = full): the
    # photometric term sees each vertex's albedo averaged with its mirror partner's, weighted
    # by how well each side was seen, so shading that differs between the two halves of the
    # face (a side light on a nose or cheek) has to be explained by the geometry instead of
    # being absorbed into a one-sided albedo. Outputs keep the per-vertex albedo. With detected
    # landmarks, medians (means) on seeds 100-124 / 125-149 / 150-174 / 175-199, N = 25 each:
    # 2.01 (2.12) / 2.20 (2.23) / 1.98 (2.05) / 2.13 (2.21) mm -> 2.04 (2.09) / 2.04 (2.20) /
    # 1.90 (2.03) / 1.98 (2.17); ground-truth landmarks unchanged (1.68/1.86 -> 1.64/1.90).
    joint_albedo_symmetry: float = 1.0
    # loss weights
    # The landmark term is the mean of (distance / σ_lmk)² over the 68 points, so a MAP
    # prior N(0, std²) on a coefficient weighs 1/68 per (coefficient/std)².
    w_photo: float = 300.0
    w_identity: float = 0.02
    # Expression priors (issue 17, docs/fitting.md "Expression recovery"; chosen on seed 100 of
    # `python -m engine.eval expressions`, reported on seed 0). The former Tikhonov 2/68 and ℓ1
    # 0.3 shrank every expression to almost nothing (fitted-on-true slope 0.07): a full unit of
    # smile changes the landmark energy by ~0.1, so its pull at zero (~0.2) is below the 0.3
    # per unit the ℓ1 prior charged.
    w_expression: float = 0.5 / 68.0
    w_expression_range: float = 1.0
    w_jaw: float = 0.3
    # the jaw joint only opens (its x rotation; the generator's and the ARKit export's jaw): a
    # free joint took sideways jaw motion as a y/z rotation that no ARKit weight carries, and
    # put 1-3° of it into neutral faces; jawLeft/jawRight are the lateral mechanism (as jawOpen
    # is held at 0 for opening). Models without jawLeft keep a free joint.
    jaw_opening_only: bool = True
    # ℓ1 (sparsity) prior on the expression weights: most faces use few blendshapes, and
    # without it detector noise is explained as expression (neutral faces: mean weight 0.007
    # at 0.3, 0.024 at 0.1, 0.054 at 0.01, 0.07 at 0; seed 100, N = 10). 0.3 had been tuned for
    # geometry on an older fitter (median 2.41 -> 2.20 mm on seeds 1-20); 0.1 with the
    # reweighting is as good or better for geometry now (seed 100, N = 50).
    w_expression_l1: float = 0.1
    # reweighted ℓ1 (Candès, Wakin & Boyd 2008; 0 = off): after the landmark stage each unit's
    # ℓ1 weight becomes w_expression_l1 · eps / (eps + ψ_k) and the landmark stage runs
    # `expression_reweight_iters` more steps (the joint stage keeps those weights): a unit the
    # landmarks clearly use is no longer pulled to zero; unused units keep the full weight
    expression_reweight_eps: float = 0.05
    expression_reweight_iters: int = 20
    # identity modes free in the landmark stage (0 = all; coarse to fine). 10 modes was tried
    # and did not help (seeds 1-20: 2.40 vs 2.41 mm).
    landmark_identity_modes: int = 0
    # Tuned with the synthetic protocol on --seed 1 (reported figures use --seed 0): detected
    # landmarks are biased, so they are trusted less and the photometric term more.
    landmark_sigma_px: float = 5.0  # landmark noise at the 192-px working crop (sets the prior balance)
    jaw_landmark_weight: float = 0.5  # jawline (silhouette) landmarks count less
    # dense detector points (MediaPipe-478 with the open model's embedding)
    use_dense: bool = True
    ibug_share_with_dense: float = 0.1  # share of the landmark weight left to iBUG-68
    dense_spread_scale: float = 2.0  # multiplies the embedding's per-point spread (noise); 2 tuned on seeds 1-20 and 100-124
    # iBUG-68 points the dense term does not cover: an iBUG point is a mix of MediaPipe points
    # (engine.detect.ibug68); its coverage c is that mix of their dense weights (0 = not embedded
    # or unstable: the mouth corners and inner lips, whose embedded points spread 20-30 mm).
    # Outside the jawline such a point also counts as a dense point of weight
    # `ibug_uncovered_weight` · (1 − c) (0 = off: only the share above), so a smile's corners
    # are not left to the 10 % share. 3 brought the presets' smiles from 0.30 to 0.47 (seed 100),
    # but cost 0.10 mm of geometry on our faces and 0.4° of pitch on the Cycles set, with the same
    # expression slope there (docs/fitting.md, "The mouth corners in the dense term"): off
    ibug_uncovered_weight: float = 0.0
    # dynamic contour term (joint stage): MediaPipe's face-oval points that are silhouette
    # points (not in the dense embedding) pull the model's nearest silhouette vertex along its
    # 2-D outward normal; weight relative to the landmark term (0 = off). Seeds 100-124 /
    # 125-149: median 2.28 -> 2.22 / 2.23 -> 2.21 mm; 3.0 (2.11, same mean) broke a yawed face, 10 worse.
    w_contour: float = 1.0
    contour_band: float = 0.3  # silhouette candidates: skin vertices with 0 <= n·(-ray) < band
    # visibility test
    depth_tolerance_m: float = 4e-3
    # keep the identity at the init's value (zeros without an init): video fits one identity
    # per clip on key frames, then fits every frame with it (engine.video)
    fix_identity: bool = False
    # False: stop after the landmark stages (no lighting/albedo solve, no photometric
    # refinement; the result keeps the init's lighting). Video frames: those stages cost
    # three quarters of a warm-started fit and made expressions 50 % worse (docs/video.md)
    appearance: bool = True
    # CPU intra-op threads during a fit (0 = leave torch's setting alone)
    cpu_threads: int = 1
    # outputs
    texture_size: int = 1024
    overlay_max_side: int = 1024

    def __post_init__(self) -> None:
        from engine.errors import ConfigError

        if self.landmark_solver not in LANDMARK_SOLVERS:
            raise ConfigError(f"landmark_solver must be one of {', '.join(LANDMARK_SOLVERS)}, "
                              f"got {self.landmark_solver!r}")
        for name in ("init_intrinsics", "hybrid_intrinsics"):
            if getattr(self, name) not in INIT_INTRINSICS:
                raise ConfigError(f"{name} must be one of {', '.join(INIT_INTRINSICS)}, got {getattr(self, name)!r}")


#: the landmark stage's optimisers (FitConfig.landmark_solver)
LANDMARK_SOLVERS = ("adam", "lm")
#: where a fit started from an estimate takes its intrinsics (FitConfig.init_intrinsics)
INIT_INTRINSICS = ("init", "guess")


def fit_config(options: Sequence[str] = (), base: FitConfig | None = None) -> FitConfig:
    """``base`` (default: the defaults) with ``KEY=VALUE`` overrides of its fields, values
    read as YAML and typed and checked like a training config (``--fit-option`` of
    ``python -m engine reconstruct`` and ``python -m engine.eval``). Unknown keys and wrong
    types raise :class:`engine.errors.ConfigError`."""
    from dataclasses import asdict

    from engine.train.config import apply_overrides, from_dict

    start = asdict(base) if base is not None else {}
    return from_dict(FitConfig, apply_overrides(start, list(options)), "--fit-option ")


def changed_fields(cfg: FitConfig) -> dict[str, object]:
    """The fields of ``cfg`` that differ from the defaults (what an output records)."""
    default = FitConfig()
    return {f.name: getattr(cfg, f.name) for f in fields(FitConfig) if getattr(cfg, f.name) != getattr(default, f.name)}
