"""The photo camera's conversion (blender_addon/photo_camera.py) without Blender: Blender's
camera model with the converted settings projects like the engine's pinhole camera K [R | t].
(tests/test_blender_inside.py checks the same against Blender's own projection.)"""

import numpy as np
import pytest

from blender_addon.photo_camera import PhotoCameraError, camera_settings, project


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (512, 512), (4032, 3024)])
def test_blender_camera_projects_like_k_r_t(size):
    rng = np.random.default_rng(size[0] + size[1])
    W, H = size
    for _ in range(5):
        f = rng.uniform(0.6, 3.0) * max(W, H)
        K = np.array([[f, 0, rng.uniform(0.3, 0.7) * W], [0, f, rng.uniform(0.3, 0.7) * H], [0, 0, 1]])
        R, t = _rotation(rng), np.array([*rng.normal(0, 0.05, 2), rng.uniform(0.4, 2.0)])
        cam_pts = np.column_stack([rng.uniform(-0.1, 0.1, (50, 2)), rng.uniform(0.3, 1.0, 50)]) * [1, 1, t[2]]
        model_pts = (cam_pts - t) @ R  # points in front of the camera, in the model frame
        expected = cam_pts @ K.T
        s = camera_settings(K, R, t, size)
        assert s.resolution == size and s.sensor_fit == ("HORIZONTAL" if W >= H else "VERTICAL")
        assert np.abs(project(s, model_pts) - expected[:, :2] / expected[:, 2:]).max() < 1e-6
        # the camera's centre is the photographer's: -R^T t in the model frame
        assert np.allclose(s.camera_to_model[:3, 3], -R.T @ t)


def test_a_camera_that_cannot_be_one_is_refused():
    K, R, t = np.diag([800.0, 800.0, 1.0]), np.eye(3), np.array([0, 0, 1.0])
    with pytest.raises(PhotoCameraError, match="not usable"):
        camera_settings(np.zeros((3, 3)), R, t, (640, 480))
    with pytest.raises(PhotoCameraError, match="not usable"):
        camera_settings(K, R, t, (0, 480))
    with pytest.raises(PhotoCameraError, match="not a rotation"):
        camera_settings(K, 2.0 * R, t, (640, 480))
    with pytest.raises(PhotoCameraError, match="not a rotation"):
        camera_settings(K, np.diag([1.0, 1.0, -1.0]), t, (640, 480))  # a mirror
    assert camera_settings(K.ravel().tolist(), R.ravel().tolist(), t.tolist(), [640, 480]).lens_mm == \
        pytest.approx(800 * 36 / 640)  # flat lists, as the object's properties hold them


def test_photo_lighting_world_gives_the_engines_shading_through_srgb():
    """The photo-lighting world (blender_addon.importer.sh_world_terms) is fitted in linear
    light: a skin of the reference value lit by its bands 0-1 and encoded to sRGB, as Blender
    renders it, shows the engine's shading ``a · s(n)`` over the normals facing the camera; the
    fitted SH itself (what the world held before) renders brighter and flatter."""
    import torch

    from blender_addon.importer import WORLD_REFERENCE_ALBEDO, linear_light_sh, sh_shading, srgb_decode
    from engine.render.shading import sh_basis

    rng = np.random.default_rng(3)
    n = rng.normal(size=(400, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    sh = np.zeros((9, 3))
    sh[0] = [2.9, 2.8, 2.6]  # mostly ambient, a key light from the upper left, some band 2 (a fit's scale)
    sh[1], sh[3], sh[6] = [0.5, 0.5, 0.45], [-0.4, -0.4, -0.35], [0.15, 0.12, 0.1]
    assert np.abs(sh_shading(sh, n) - sh_basis(torch.tensor(n)).numpy() @ sh).max() < 1e-12  # one formula

    def encode(v):  # linear -> sRGB
        return np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.maximum(v, 0) ** (1 / 2.4) - 0.055)

    a = WORLD_REFERENCE_ALBEDO
    front = n[n[:, 2] > 0.0]
    s = sh_shading(sh, front)
    lin = np.zeros((9, 3))
    lin[:4] = linear_light_sh(sh)
    shown = encode(srgb_decode(a) * sh_shading(lin, front))
    err = np.abs(shown - a * s) / (a * s.mean())
    assert err.mean() < 0.01 and err.max() < 0.04  # (bands 0-1 only: band 2 and the curve's rest are left)
    before = encode(srgb_decode(a) * s)  # the fitted SH as the world's light
    assert before.mean() > 1.05 * (a * s).mean() and before.std() < 0.9 * (a * s).std()


def test_turned_camera_sees_the_head_turned_on_its_bone_as_before():
    """key_video_camera's geometry without Blender: the engine's head posed by a frame's joint
    rotations (a rotated root included) seen by (R, t) is the head with the head's rotation
    composed onto the neck bone (what the add-on's animation plays) seen by the turned camera."""
    import torch

    from blender_addon.photo_camera import head_turn, turned_extrinsics
    from engine.head import load_head_model
    from engine.video import formats as fmt

    model = load_head_model("open")
    names = model.joint_names
    rng = np.random.default_rng(7)
    pose = rng.normal(0, 0.15, (len(names), 3))
    head_rv = rng.normal(0, 0.4, 3)
    ni = names.index("neck")
    turned = pose.copy()
    turned[ni] = fmt.quaternion_to_rotvec(fmt.quaternion_multiply(fmt.rotvec_to_quaternion(head_rv),
                                                                   fmt.rotvec_to_quaternion(pose[ni])))
    ident = torch.tensor(rng.normal(0, 1, model.identity_basis.shape[0]), dtype=torch.float32)[None]
    with torch.no_grad():
        X = model(ident, None, torch.tensor(pose, dtype=torch.float32)[None]).vertices[0].double().numpy()
        X2 = model(ident, None, torch.tensor(turned, dtype=torch.float32)[None]).vertices[0].double().numpy()
        rest = model(ident, None, None).joints[0].double().numpy()
    parents = {n: (names[p] if p >= 0 else None) for n, p in zip(names, model.joint_parents.tolist())}
    R_A, c = head_turn({n: rest[j] for j, n in enumerate(names)}, parents,
                       {n: fmt.rotvec_to_matrix(pose[j]) for j, n in enumerate(names)}, "neck",
                       fmt.rotvec_to_matrix(head_rv))
    R, t = _rotation(rng), np.array([0.01, -0.02, 0.6])
    R2, t2 = turned_extrinsics(R, t, R_A, c)
    on_head = model.skin_weights[:, [names.index(n) for n in ("neck", "jaw", "eye_left", "eye_right")]].sum(1) > 0.999
    gap = np.linalg.norm((X @ R.T + t) - (X2 @ R2.T + t2), axis=1)
    assert on_head.sum() > 1000 and gap[on_head.numpy()].max() < 5e-5
    assert np.median(gap[~on_head.numpy()]) > 1e-3  # (the neck's base does not turn with the head)


def test_same_view_translation_keeps_the_pixel_and_the_size():
    from blender_addon.photo_camera import same_view_translation

    K = np.array([[500.0, 0, 300], [0, 500.0, 200], [0, 0, 1]])
    K_new = np.array([[900.0, 0, 320], [0, 900.0, 160], [0, 0, 1]])
    t = np.array([0.12, -0.05, 0.7])
    t2 = same_view_translation(K, t, K_new)
    assert np.allclose((K_new @ t2)[:2] / t2[2], (K @ t)[:2] / t[2])  # the head's origin: same pixel
    assert t2[2] == pytest.approx(0.7 * 900 / 500)  # same size: 10 cm across stays as many pixels


def test_the_video_plays_behind_the_camera_only_in_step(tmp_path):
    """video_source: a folder's first frame in natural order and the scene frame of the video's
    first frame when every frame was kept; a reason otherwise (subsampled, gone)."""
    from PIL import Image

    from blender_addon.photo_camera import video_source
    from engine.video.formats import Animation, natural_key

    folder = tmp_path / "clip"
    folder.mkdir()
    for i in (2, 10, 3, 4):
        Image.new("RGB", (8, 8)).save(folder / f"frame{i}.png")
    (folder / "notes.txt").write_text("not a frame")

    def anim(frames, fps=30.0, source=folder):
        n = len(frames)
        return Animation(fps=fps, times=np.asarray(frames) / 30.0, names=["a"], weights=np.zeros((n, 1)),
                         frames=np.asarray(frames), meta={"source": str(source), "source_fps": 30.0})

    assert video_source(anim([1, 2, 3]), np.array([5, 6, 7]), natural_key) == (folder / "frame2.png", 4)
    # sampled at half the video's rate: keyed on the video's frames (timeline_rate), the clip plays in step
    from blender_addon.animation import scene_frames, timeline_rate

    half = anim([0, 2, 4], fps=15.0)
    assert timeline_rate(half) == 30.0 and timeline_rate(anim([0, 1])) == 30.0
    assert timeline_rate(Animation(fps=24.0, times=np.zeros(1), names=["a"], weights=np.zeros((1, 1)))) == 24.0
    on_video = scene_frames(half.times, timeline_rate(half), 1)
    assert on_video.tolist() == [1, 3, 5] and video_source(half, on_video, natural_key) == (folder / "frame2.png", 1)
    assert "not on the video's frames" in video_source(half, np.array([1, 2, 3]), natural_key)
    assert "not there any more" in video_source(anim([0, 1], source=tmp_path / "gone.mp4"), np.array([1, 2]),
                                                natural_key)
