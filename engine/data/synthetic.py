"""Synthetic training/evaluation corpus on top of :mod:`engine.generator`.

Item ``i`` of split ``s`` is face ``seed = corpus_seed · 10⁷ + offset(s) + i`` (train
offsets from 0, validation from 9·10⁶), so the two splits never share a face and every
item is the same on any machine, in any worker, in any order. Clips (one person, moving:
:func:`engine.generator.render_clip`) and identity groups (K photos of one person,
:func:`engine.generator.render_identity_views`) use their own seed ranges (clips: train 5·10⁶,
validation 8·10⁶; identities: train 6·10⁶, validation 7·10⁶). Rendering costs ~0.05 s
per face on one CPU thread; for real training write the corpus once with ``python -m engine.data.synthetic --out DIR --n N [--clips M --frames T]``
(uint8 memmaps + ground truth) and point ``data.options.cache`` at it.

Two generators: ``basic`` (the default: :mod:`engine.generator.basic`, MoFA-like faces; existing
configs and caches are unchanged) and ``realistic`` (:func:`engine.generator.realistic.render_realistic`:
photo-like faces with hair, props, shadows and camera degradations; ~0.15 s per face), chosen
with ``data.options.generator: realistic`` or ``--generator realistic``; the other
``data.options`` are the chosen generator's config fields (``SyntheticConfig`` /
``RealisticConfig``). Realistic items also carry ``landmarks_visible (68,)`` and
``occlusion_mask (S, S)`` (face skin hidden by hair, hats, glasses or hands), cached too, and
``gt_albedo (V, 3)`` (the true per-vertex sRGB albedo) and ``gt_sh (9, 3)`` (the light's SH
approximation), cached by corpora written since they exist (older realistic caches load
without them), and ``gt_displacement (1, D, D)`` (the fine detail: pores, age lines and
expression wrinkles, metres along the normal in the head's UV layout, ``detail_map_size``
texels; :mod:`engine.generator.wrinkles`) — cached only on request (``--displacement-size D``:
a float16 copy area-resampled to ``D`` texels, e.g. 128; cached items then carry that size).
Clips are rendered by the basic generator only; identity groups by either
(:func:`engine.generator.realistic.render_realistic_views` for the realistic one: the same
person, skin, hair and static detail in every view, often a strong wrinkle expression).

``data.options.crop`` (:mod:`engine.data.crops`) makes items ``align_crop`` crops of
``image_size`` px around the (jittered) true landmarks of whole frames of
``crop.frame_size`` px, with the true camera mapped into the crop: training data cut the way
``predict_photo`` cuts a photo. The cache then holds the whole frames.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.errors import UserError

GENERATORS = ("basic", "realistic")

VAL_OFFSET = 9_000_000
CLIP_OFFSET = 5_000_000
CLIP_VAL_OFFSET = 8_000_000
IDENTITY_OFFSET = 6_000_000
IDENTITY_VAL_OFFSET = 7_000_000


def face_seed(corpus_seed: int, split: str, index: int) -> int:
    return corpus_seed * 10_000_000 + (VAL_OFFSET if split == "val" else 0) + index


def clip_seed(corpus_seed: int, split: str, index: int) -> int:
    """Seed of clip ``index`` (disjoint from every face seed of the same corpus)."""
    return corpus_seed * 10_000_000 + (CLIP_VAL_OFFSET if split == "val" else CLIP_OFFSET) + index


def identity_seed(corpus_seed: int, split: str, index: int) -> int:
    """Seed of identity group ``index`` (K views of one person; disjoint from faces and clips)."""
    return corpus_seed * 10_000_000 + (IDENTITY_VAL_OFFSET if split == "val" else IDENTITY_OFFSET) + index


def generator_config(generator: str, image_size: int, options: dict):
    """The config of ``generator`` (basic: SyntheticConfig, realistic: RealisticConfig)."""
    if generator not in GENERATORS:
        raise UserError(f"synthetic data generator must be one of {', '.join(GENERATORS)}, got {generator!r}")
    if generator == "realistic":
        from engine.generator.realistic import RealisticConfig as cls
    else:
        from engine.generator import SyntheticConfig as cls
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)} - {"image_size"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"unknown {generator} generator option {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return cls(image_size=image_size, **options)


def _basic_only(generator: str, what: str) -> None:
    if generator != "basic":
        raise UserError(f"{what} are rendered by the basic generator only (data.options.generator={generator!r})")


def _ground_truth(sample) -> dict[str, torch.Tensor]:
    """The ``gt_*`` tensors of an item from a :class:`engine.generator.SyntheticSample`
    (``gt_displacement (1, S, S)`` when the sample has a detail map)."""
    p = sample.params
    out = {"gt_identity": p.identity[0], "gt_expression": p.expression[0], "gt_pose": p.pose[0],
           "gt_R": p.camera.R[0], "gt_t": p.camera.t[0], "gt_K": p.camera.K[0], "gt_vertices": sample.vertices}
    if p.displacement is not None:
        out["gt_displacement"] = p.displacement[0].float()
    return out


def _realistic_extras(sample) -> dict[str, torch.Tensor]:
    """The realistic generator's extra per-item tensors (visibility, occlusion, albedo, SH)."""
    return {"landmarks_visible": sample.landmarks_visible.clone(),
            "occlusion_mask": torch.from_numpy(sample.occlusion_mask.copy()),
            "gt_albedo": sample.params.albedo[0].float(), "gt_sh": sample.params.sh[0].float()}


_SPLIT_CODE = {"train": 0, "val": 1}


class SyntheticFaces(Dataset):
    """Rendered faces with ground truth: image (3,S,S) in [0,1], landmarks (68,2) px, and
    ``gt_identity``/``gt_expression``/``gt_pose``/``gt_R``/``gt_t``/``gt_K``/``gt_vertices``
    (realistic: also ``landmarks_visible``, ``occlusion_mask`` and, when rendered or cached,
    ``gt_albedo``/``gt_sh``/``gt_displacement (1, D, D)``). With ``crop`` (:class:`engine.data.crops.CropConfig` or its
    mapping) the frames are ``crop.frame_size`` px and items their ``image_size`` crops.
    ``vertices=False`` (``data.options.vertices: false``) leaves ``gt_vertices`` out of cached
    items (MoFA's supervised terms then compute them batched from the gt codes)."""

    def __init__(self, head, n: int, image_size: int = 224, corpus_seed: int = 1234,
                 split: str = "train", cache: str | Path | None = None, generator: str = "basic",
                 crop=None, vertices: bool = True, **synthetic_options) -> None:
        from engine.data.crops import parse_crop

        self.head = head
        # False: cached items leave ``gt_vertices`` out (a learned method computes them batched
        # from the gt codes; one head forward per item costs more than the rest of the item)
        self.vertices = bool(vertices)
        self.n, self.split, self.corpus_seed = int(n), split, int(corpus_seed)
        self.generator = generator
        self.crop = parse_crop(crop)
        self.image_size = int(image_size)
        frame_size = self.crop.frame_size if self.crop is not None else self.image_size
        self.syn_cfg = generator_config(generator, frame_size, synthetic_options)
        self.cache = None
        if cache:
            self.cache = _open_cache(Path(cache), split, frame_size, generator=generator, head=head,
                                     need=(self.n, "faces"))

    def __len__(self) -> int:
        return self.n


    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        if self.cache is not None:
            c = self.cache
            img = torch.from_numpy(np.array(c["images"][i]))
            item = {k: torch.from_numpy(np.array(c[k][i])) for k in
                    ("landmarks", "gt_identity", "gt_expression", "gt_pose", "gt_R", "gt_t", "gt_K")
                    + (_REALISTIC_ARRAYS if self.generator == "realistic" else ())
                    + tuple(k for k in _OPTIONAL_ARRAYS if k in c)}
            if "gt_displacement" in c:
                item["gt_displacement"] = torch.from_numpy(np.array(c["gt_displacement"][i], np.float32))
            _orient_identity(item, c)
            if self.vertices:
                item["gt_vertices"] = _gt_vertices(self.head, item)
            seed = int(c["seeds"][i])
        else:
            seed = face_seed(self.corpus_seed, self.split, i)
            if self.generator == "realistic":
                from engine.generator.realistic import render_realistic

                s = render_realistic(self.head, seed, self.syn_cfg)
            else:
                from engine.generator import render_sample

                s = render_sample(self.head, seed, self.syn_cfg)
            img = torch.from_numpy(s.image)
            item = {"landmarks": s.landmarks2d.float(), **_ground_truth(s)}
            if self.generator == "realistic":
                item.update(_realistic_extras(s))
        item["image"] = img.permute(2, 0, 1)  # uint8 here: crop_item cuts the uint8 frame
        if self.crop is None:
            item["image"] = item["image"].float() / 255.0
        else:
            from engine.data.crops import crop_item

            rng = np.random.default_rng([self.crop.seed, _SPLIT_CODE.get(self.split, 2), i])
            item = crop_item(item, self.image_size, self.crop, rng)
        item["landmarks_valid"] = torch.ones(68, dtype=torch.bool)
        item["seed"] = torch.tensor(seed)
        return item


_CACHE_ARRAYS = ("landmarks", "gt_identity", "gt_expression", "gt_pose", "gt_R", "gt_t", "gt_K", "seeds")
_REALISTIC_ARRAYS = ("landmarks_visible", "occlusion_mask")  # cached too for realistic corpora
_OPTIONAL_ARRAYS = ("gt_albedo", "gt_sh")  # realistic corpora written since they exist; loaded when present


@torch.no_grad()
def _gt_vertices(head, item: dict[str, torch.Tensor]) -> torch.Tensor:
    """The posed vertices ``(V, 3)`` of one cached item's ``gt_identity/expression/pose``."""
    pose = item["gt_pose"][None] if head.n_joints else None
    return head(item["gt_identity"][None], item["gt_expression"][None], pose).vertices[0]


def _orient_identity(item: dict, cache: dict) -> None:
    """Turn a cached ``gt_identity`` onto the local head model's basis (see ``_open_cache``)."""
    flip = cache.get("identity_flip")
    if flip is not None:
        item["gt_identity"] = item["gt_identity"] * flip


def _open_cache(root: Path, split: str, size: int, folder: str | None = None, generator: str = "basic",
                head=None, need: tuple[int, str] | None = None) -> dict:
    """The memmaps of ``root/(folder or split)``, checked against the data set reading them:
    image size, generator and, with ``need = (n, what)``, at least ``n`` items (``what`` names
    them in the error)."""
    d = root / (folder or split)
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"synthetic cache {d} has no meta.json; write it with "
                        f"python -m engine.data.synthetic --out {root}")
    meta = json.loads(meta_path.read_text())
    if meta["image_size"] != size:
        raise UserError(f"synthetic cache {d} has {meta['image_size']} px images, not {size} px")
    if meta.get("generator", "basic") != generator:
        raise UserError(f"synthetic cache {d} was written by the {meta.get('generator', 'basic')} generator, "
                        f"not the {generator} one (data.options.generator)")
    n = meta["n"]
    if need is not None and n < need[0]:
        raise UserError(f"synthetic cache {root} holds {n} {split} {need[1]}, fewer than the {need[0]} requested")
    out = {"n": n, "meta": meta, "images": np.load(d / "images.npy", mmap_mode="r"), "identity_flip": None}
    sig = meta.get("identity_signature")
    if head is not None and sig is not None and len(sig) == head.n_identity:
        # the corpus was rendered with a build whose identity modes may be negated relative to
        # the local one (engine.head.model.basis_signature): same faces, coefficients re-signed
        same = torch.tensor(sig, dtype=torch.float32) * head.identity_signature().cpu() >= 0
        if not bool(same.all()):
            out["identity_flip"] = torch.where(same, 1.0, -1.0)
    for k in _CACHE_ARRAYS + (_REALISTIC_ARRAYS if generator == "realistic" else ()):
        out[k] = np.load(d / f"{k}.npy", mmap_mode="r")
    for k in _OPTIONAL_ARRAYS + ("gt_displacement",):
        if (d / f"{k}.npy").is_file():
            out[k] = np.load(d / f"{k}.npy", mmap_mode="r")
    return out


class SyntheticClips(Dataset):
    """Clips of one synthetic person each (:func:`engine.generator.render_clip`): image
    (T,3,S,S) in [0,1], landmarks (T,68,2) px, per-frame ground truth ``gt_*`` (T, ...),
    ``gt_vertices`` (T,V,3), and ``clip`` (the clip's seed). Same layout as
    :class:`engine.data.ClipFolderFaces` plus the ground truth."""

    def __init__(self, head, n: int, clip_length: int = 8, image_size: int = 224, corpus_seed: int = 1234,
                 split: str = "train", cache: str | Path | None = None, generator: str = "basic",
                 **synthetic_options) -> None:
        from engine.generator import SyntheticConfig

        _basic_only(generator, "synthetic clips")
        self.head = head
        self.n, self.split, self.corpus_seed = int(n), split, int(corpus_seed)
        self.clip_length = int(clip_length)
        self.syn_cfg = SyntheticConfig(image_size=image_size, **synthetic_options)
        self.cache = None
        if cache:
            self.cache = _open_cache(Path(cache), split, image_size, f"clips_{split}", head=self.head,
                                     need=(self.n, "clips"))
            if self.cache["meta"].get("frames", 0) < self.clip_length:
                raise UserError(f"synthetic cache {cache} has clips of {self.cache['meta'].get('frames')} "
                                f"frames, fewer than clip_length={self.clip_length}")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        T = self.clip_length
        if self.cache is not None:
            c = self.cache
            img = torch.from_numpy(np.array(c["images"][i, :T]))
            item = {k: torch.from_numpy(np.array(c[k][i, :T])) for k in _CACHE_ARRAYS[:-1]}
            _orient_identity(item, c)
            seed = int(c["seeds"][i])
            with torch.no_grad():
                pose = item["gt_pose"] if self.head.n_joints else None
                item["gt_vertices"] = self.head(item["gt_identity"], item["gt_expression"], pose).vertices
        else:
            from engine.generator import render_clip

            seed = clip_seed(self.corpus_seed, self.split, i)
            frames = render_clip(self.head, seed, T, self.syn_cfg)
            img = torch.from_numpy(np.stack([f.image for f in frames]))
            item = {"landmarks": torch.stack([f.landmarks2d.float() for f in frames])}
            truths = [_ground_truth(f) for f in frames]
            for k in truths[0]:
                item[k] = torch.stack([t[k] for t in truths])
        item["image"] = img.permute(0, 3, 1, 2).float() / 255.0
        item["landmarks_valid"] = torch.ones(T, 68, dtype=torch.bool)
        item["clip"] = torch.tensor(seed)
        return item


class SyntheticIdentities(Dataset):
    """K independent photos of one synthetic person per item: same identity and albedo;
    expression, pose, camera, light and background differ (basic generator:
    :func:`engine.generator.render_identity_views`; realistic:
    :func:`engine.generator.realistic.render_realistic_views`, which also keeps the painted
    skin, hair and static detail and often makes one wrinkle expression strong). Same layout as
    :class:`SyntheticClips`: image (K,3,S,S), landmarks (K,68,2), ``gt_*`` per view (realistic:
    also ``landmarks_visible``, ``occlusion_mask``, ``gt_albedo``, ``gt_sh`` and
    ``gt_displacement (K, 1, D, D)``), and ``identity`` (the seed). ``crop``
    (:mod:`engine.data.crops`): every view is cut from a ``crop.frame_size`` frame like a
    single face's crop (``crop_matrix (K, 2, 3)`` added)."""

    def __init__(self, head, n: int, views: int = 2, image_size: int = 224, corpus_seed: int = 1234,
                 split: str = "train", generator: str = "basic", crop=None, cache: str | Path | None = None,
                 vertices: bool = True, **synthetic_options) -> None:
        from engine.data.crops import parse_crop

        self.head = head
        self.vertices = bool(vertices)
        self.generator = generator
        self.n, self.split, self.corpus_seed, self.views = int(n), split, int(corpus_seed), int(views)
        # with ``crop`` each view is a detector-like crop of a ``crop.frame_size`` frame, as for single faces
        self.crop = parse_crop(crop)
        self.image_size = int(image_size)
        frame_size = self.crop.frame_size if self.crop is not None else self.image_size
        self.syn_cfg = generator_config(generator, frame_size, synthetic_options)
        self.cache = None
        if cache:
            self.cache = _open_cache(Path(cache), split, frame_size, f"identities_{split}", generator, head,
                                     need=(self.n, "identity groups"))
            if self.cache["meta"].get("views", 0) < self.views:
                raise UserError(f"synthetic cache {cache} has {self.cache['meta'].get('views')} views per "
                                f"person, fewer than views_per_identity={self.views}")

    def __len__(self) -> int:
        return self.n

    def _cached_views(self, i: int) -> tuple[int, list[dict[str, torch.Tensor]]]:
        """Group ``i``'s first ``views`` views from the cache (uint8 frames, like rendered ones)."""
        c = self.cache
        keys = (("landmarks", "gt_identity", "gt_expression", "gt_pose", "gt_R", "gt_t", "gt_K")
                + (_REALISTIC_ARRAYS if self.generator == "realistic" else ())
                + tuple(k for k in _OPTIONAL_ARRAYS if k in c))
        views = []
        for k in range(self.views):
            d = {key: torch.from_numpy(np.array(c[key][i][k])) for key in keys}
            _orient_identity(d, c)
            if self.vertices:
                d["gt_vertices"] = _gt_vertices(self.head, d)
            d["image"] = torch.from_numpy(np.array(c["images"][i][k])).permute(2, 0, 1)
            views.append(d)
        return int(c["seeds"][i]), views

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        if self.cache is not None:
            seed, per_view = self._cached_views(i)
            return self._finish(i, seed, per_view)
        seed = identity_seed(self.corpus_seed, self.split, i)
        if self.generator == "realistic":
            from engine.generator.realistic import render_realistic_views

            views = render_realistic_views(self.head, seed, self.views, self.syn_cfg)
        else:
            from engine.generator import render_identity_views

            views = render_identity_views(self.head, seed, self.views, self.syn_cfg)
        per_view = [{"landmarks": v.landmarks2d.float(), "image": torch.from_numpy(v.image).permute(2, 0, 1),
                     **_ground_truth(v), **(_realistic_extras(v) if self.generator == "realistic" else {})}
                    for v in views]
        return self._finish(i, seed, per_view)

    def _finish(self, i: int, seed: int, per_view: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Crop (or scale to [0, 1]) each view and stack them into one item."""
        if self.crop is not None:
            from engine.data.crops import crop_item

            per_view = [crop_item(d, self.image_size, self.crop,
                                  np.random.default_rng([self.crop.seed, _SPLIT_CODE.get(self.split, 2), i, k]))
                        for k, d in enumerate(per_view)]
        else:
            for d in per_view:
                d["image"] = d["image"].float() / 255.0 if d["image"].dtype == torch.uint8 else d["image"].float()
        item = {k: torch.stack([d[k] for d in per_view]) for k in per_view[0]}
        item["landmarks_valid"] = torch.ones(self.views, 68, dtype=torch.bool)
        item["identity"] = torch.tensor(seed)
        return item


def _resample_map(m: torch.Tensor, size: int) -> np.ndarray:
    """A ``(1, S, S)`` UV map as a float16 ``(1, size, size)`` array (area-resampled)."""
    if m.shape[-1] != size:
        m = torch.nn.functional.interpolate(m[None].float(), size=(size, size), mode="area")[0]
    return m.numpy().astype(np.float16)


def _write(ds, d: Path, n: int, start: int, stop: int | None, lead: tuple[int, ...], meta: dict,
           displacement_size: int = 0, seed_key: str = "") -> Path:
    """Render items ``[start, stop)`` of ``ds`` into preallocated memmaps under ``d``;
    ``lead`` is the per-item leading shape (() for faces, (T,) for clips and identity groups);
    ``seed_key`` the item's seed field (default: ``seed`` for faces, ``clip`` otherwise). With
    ``displacement_size`` > 0 the items' ``gt_displacement`` maps are kept too (float16,
    resampled to that many texels)."""
    d.mkdir(parents=True, exist_ok=True)
    first = ds[0]
    # the orientation of the identity modes the gt_identity coefficients refer to
    meta = {**meta, "identity_signature": [float(x) for x in ds.head.identity_signature().cpu()]}
    S = meta["image_size"]
    shapes = {"images": ((n,) + lead + (S, S, 3), np.uint8), "seeds": ((n,), np.int64)}
    keys = _CACHE_ARRAYS[:-1] + tuple(k for k in _REALISTIC_ARRAYS + _OPTIONAL_ARRAYS if k in first)
    for k in keys:
        shapes[k] = ((n,) + tuple(first[k].shape), np.float32 if first[k].is_floating_point() else np.bool_)
    if displacement_size > 0:
        if "gt_displacement" not in first:
            raise UserError("--displacement-size needs items with a detail map (the realistic generator with detail on)")
        shapes["gt_displacement"] = ((n,) + lead + (1, displacement_size, displacement_size), np.float16)
    arrays = {}
    for k, (shape, dtype) in shapes.items():
        p = d / f"{k}.npy"
        mode = "r+" if p.exists() else "w+"
        arrays[k] = np.lib.format.open_memmap(p, mode=mode, dtype=dtype, shape=shape)
    from tqdm import tqdm

    dims = tuple(range(len(lead)))
    for i in tqdm(range(start, n if stop is None else min(stop, n)), desc=f"synthetic {d.name}"):
        it = ds[i]
        img = it["image"].permute(*dims, len(lead) + 1, len(lead) + 2, len(lead))
        arrays["images"][i] = (img * 255 + 0.5).to(torch.uint8).numpy()
        arrays["seeds"][i] = int(it[seed_key or ("clip" if lead else "seed")])
        for k in keys:
            arrays[k][i] = it[k].numpy()
        if displacement_size > 0:
            arrays["gt_displacement"][i] = _resample_map(it["gt_displacement"], displacement_size)
    for a in arrays.values():
        a.flush()
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def write_cache(head, out: Path, n: int, split: str, image_size: int, corpus_seed: int,
                start: int = 0, stop: int | None = None, generator: str = "basic",
                options: dict | None = None, displacement_size: int = 0) -> Path:
    """Render faces ``[start, stop)`` of a split into ``out/split`` (resumable by range:
    run several processes on disjoint ranges; arrays are preallocated memmaps). ``options``
    are the generator's config fields (e.g. ``{"face_fraction": [0.35, 0.9]}``), recorded in
    ``meta.json``; a data set reading the cache should be given the same ones.
    ``displacement_size`` > 0 (realistic generator) also keeps each face's detail map as
    ``gt_displacement``, float16 at that many texels (128: 32 KiB per face)."""
    options = dict(options or {})
    ds = SyntheticFaces(head, n, image_size, corpus_seed, split, generator=generator, **options)
    meta = {"n": n, "image_size": image_size, "corpus_seed": corpus_seed, "head_model": head.name}
    if generator != "basic":
        meta["generator"] = generator
    if options:
        meta["options"] = options
    if displacement_size > 0:
        meta["displacement_size"] = int(displacement_size)
    return _write(ds, out / split, n, start, stop, (), meta, displacement_size)


def write_clip_cache(head, out: Path, n: int, frames: int, split: str, image_size: int, corpus_seed: int,
                     start: int = 0, stop: int | None = None) -> Path:
    """Render clips ``[start, stop)`` (``frames`` each) into ``out/clips_<split>``."""
    ds = SyntheticClips(head, n, frames, image_size, corpus_seed, split)
    meta = {"n": n, "frames": frames, "image_size": image_size, "corpus_seed": corpus_seed,
            "head_model": head.name}
    return _write(ds, out / f"clips_{split}", n, start, stop, (frames,), meta)


def write_identity_cache(head, out: Path, n: int, views: int, split: str, image_size: int, corpus_seed: int,
                         start: int = 0, stop: int | None = None, generator: str = "basic",
                         options: dict | None = None) -> Path:
    """Render identity groups ``[start, stop)`` (``views`` photos of one person each: same
    identity and albedo, other expression, pose, camera, light and background) into
    ``out/identities_<split>``, read back by :class:`SyntheticIdentities` (``cache``)."""
    options = dict(options or {})
    ds = SyntheticIdentities(head, n, views, image_size, corpus_seed, split, generator=generator, **options)
    meta = {"n": n, "views": views, "image_size": image_size, "corpus_seed": corpus_seed, "head_model": head.name}
    if generator != "basic":
        meta["generator"] = generator
    if options:
        meta["options"] = options
    return _write(ds, out / f"identities_{split}", n, start, stop, (views,), meta, seed_key="identity")


def parse_generator_options(pairs: list[str]) -> dict:
    """``["key=value", ...]`` (YAML values) -> a mapping of generator config fields."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option must be KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    from engine.errors import cli_errors

    ap = argparse.ArgumentParser(prog="python -m engine.data.synthetic",
                                 description="Render the synthetic corpus once into memmaps.")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--n-val", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--model", default="open")
    ap.add_argument("--clips", type=int, default=0, help="also write this many training clips")
    ap.add_argument("--n-val-clips", type=int, default=16)
    ap.add_argument("--frames", type=int, default=8, help="frames per clip")
    ap.add_argument("--identities", type=int, default=0,
                    help="also write this many training identity groups (--views photos of one person each)")
    ap.add_argument("--n-val-identities", type=int, default=32)
    ap.add_argument("--views", type=int, default=2, help="photos per identity group")
    ap.add_argument("--start", type=int, default=0,
                    help="first item of the range to render (faces, or clips / identity groups with --n 0)")
    ap.add_argument("--stop", type=int, default=None)
    ap.add_argument("--generator", choices=GENERATORS, default="basic",
                    help="basic (default, MoFA-like faces) or realistic (photo-like faces; faces and identity groups, no clips)")
    ap.add_argument("--displacement-size", type=int, default=0, metavar="D",
                    help="realistic: also cache each face's detail map (gt_displacement), float16 at D texels (e.g. 128)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a generator config field for the faces (YAML value), e.g. face_fraction=[0.35,0.9]; repeatable")
    a = ap.parse_args(argv)
    with cli_errors():
        from engine.head import load_head_model

        if min(a.n, a.n_val, a.clips, a.n_val_clips, a.identities, a.n_val_identities) < 0 or a.frames < 1 \
                or a.views < 1 or a.size < 8:
            raise UserError("--n, --n-val, --clips, --n-val-clips, --identities and --n-val-identities must be "
                            ">= 0, --frames and --views >= 1, --size >= 8")
        if a.clips > 0 and a.identities > 0:
            raise UserError("write clips and identity groups in separate runs (--start/--stop are per kind)")
        if a.clips > 0:
            _basic_only(a.generator, "synthetic clips")
        if a.displacement_size < 0 or (a.displacement_size > 0 and a.generator != "realistic"):
            raise UserError("--displacement-size must be >= 0 and needs --generator realistic")
        options = parse_generator_options(a.option)
        generator_config(a.generator, a.size, options)  # unknown fields fail before any rendering
        head = load_head_model(a.model)
        out = Path(a.out)
        if a.n > 0:
            write_cache(head, out, a.n, "train", a.size, a.seed, a.start, a.stop, a.generator, options,
                        a.displacement_size)
            if a.start == 0 and a.n_val > 0:
                write_cache(head, out, a.n_val, "val", a.size, a.seed, generator=a.generator, options=options,
                            displacement_size=a.displacement_size)
        if a.clips > 0:
            first, last = (a.start, a.stop) if a.n == 0 else (0, None)
            write_clip_cache(head, out, a.clips, a.frames, "train", a.size, a.seed, first, last)
            if first == 0 and a.n_val_clips > 0:
                write_clip_cache(head, out, a.n_val_clips, a.frames, "val", a.size, a.seed)
        if a.identities > 0:
            first, last = (a.start, a.stop) if a.n == 0 else (0, None)
            write_identity_cache(head, out, a.identities, a.views, "train", a.size, a.seed, first, last,
                                 a.generator, options)
            if first == 0 and a.n_val_identities > 0:
                write_identity_cache(head, out, a.n_val_identities, a.views, "val", a.size, a.seed,
                                     generator=a.generator, options=options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
