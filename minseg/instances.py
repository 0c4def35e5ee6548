"""From semantic masks to instances and panoptic maps.

A semantic mask says *what* each pixel is, not *which object* it belongs to: two people who
touch are one blob of "person". Connected components split a mask into blobs, which is all
that semantic segmentation can offer as instances; panoptic segmentation (Kirillov et al.
2019, https://arxiv.org/abs/1801.00868) pairs every pixel with a class and, for countable
*things*, an instance id, while amorphous *stuff* (sky, road) gets none.

Panoptic maps (the convention shared with :func:`minseg.metrics.panoptic_quality`): int64
``H,W`` (or ``N,H,W``) tensors with ``id = class_id * label_divisor + instance_id``,
``instance_id = 0`` for stuff classes and ids ``>= 1`` for things, and ``-1`` for void pixels
(the semantic mask's ``ignore_index``).
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable

import numpy as np
import torch
from scipy import ndimage

from minseg.validate import IGNORE_INDEX, check_same_shape

VOID = -1


def _check_label_map(x: torch.Tensor, name: str, ndims: tuple[int, ...] = (2, 3)) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex():
        raise ValueError(f"{name} must be an integer or bool tensor, got dtype {x.dtype}")
    if x.ndim not in ndims:
        shapes = " or ".join({2: "H,W", 3: "N,H,W"}[n] for n in ndims)
        raise ValueError(f"{name} must have shape {shapes}; got shape {tuple(x.shape)}")


def _check_classes(thing_classes: Iterable[int], ignore_index: int | None) -> list[int]:
    try:
        things = sorted({int(c) for c in thing_classes})
    except (TypeError, ValueError):
        raise ValueError(f"thing_classes must be an iterable of class ids, got {thing_classes!r}") from None
    if any(c < 0 for c in things) or (ignore_index is not None and ignore_index in things):
        raise ValueError(f"thing_classes must be class ids >= 0 other than ignore_index "
                         f"({ignore_index}), got {things}")
    return things


def connected_components(mask: torch.Tensor, connectivity: int = 4,
                         background: int | None = 0) -> tuple[torch.Tensor, int]:
    """Label the connected regions of an ``H,W`` mask: ``(labels, count)``.

    A bool (or 0/1) mask gives the components of its ``True`` pixels, like
    ``scipy.ndimage.label``. An integer mask gives the components of pixels that touch *and
    have the same value* (so two touching classes stay apart; scipy would merge every nonzero
    pixel); pixels equal to ``background`` (default 0, ``None`` for none) get label 0.
    ``connectivity``: 4 (edges) or 8 (edges and corners). ``labels`` is int64 with ids
    ``1..count`` numbered in raster order of each component's first pixel (scipy's order).

    Algorithm (no Python loop over pixels, runs on any device): every pixel starts as its own
    tree; each round hooks, for every edge between two same-region pixels, the larger of the
    two roots under the smaller one (``scatter_reduce`` with ``amin``), then pointer-jumping
    (``parent = parent[parent]``) flattens the trees; it stops when no edge joins two roots —
    the hooking-and-shortcutting scheme of Shiloach & Vishkin 1982
    (https://doi.org/10.1016/0196-6774(82)90008-6), usually a handful of rounds.
    """
    _check_label_map(mask, "mask", ndims=(2,))
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    H, W = mask.shape
    values = mask.long()
    fg = values != background if background is not None else torch.ones_like(values, dtype=torch.bool)
    index = torch.arange(H * W, device=mask.device).view(H, W)  # flat pixel id y * W + x
    # each undirected edge once: right, down (and down-right, down-left for 8-connectivity)
    steps = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    sources, targets = [], []
    for dy, dx in steps:
        # pixel (y, x) and its neighbour (y + dy, x + dx), both inside the image
        ys, yt = slice(0, H - dy), slice(dy, H)
        xs, xt = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
        # same value => both or neither are foreground, so testing one end is enough
        joined = (values[ys, xs] == values[yt, xt]) & fg[ys, xs]
        sources.append(index[ys, xs][joined])
        targets.append(index[yt, xt][joined])
    a, b = torch.cat(sources), torch.cat(targets)

    parent = torch.arange(H * W, device=mask.device)  # every pixel starts as its own root
    while True:
        # the trees are flat after every round, so parent[] is already the root
        ra, rb = parent[a], parent[b]
        if bool((ra == rb).all()):
            break
        low = torch.minimum(ra, rb)
        # hook: each root goes under the smallest root it shares an edge with; amin settles
        # the races when one root gets several candidates
        parent.scatter_reduce_(0, ra, low, reduce="amin")
        parent.scatter_reduce_(0, rb, low, reduce="amin")
        while True:
            jumped = parent[parent]  # pointer jumping: each pass halves every path to the root
            if torch.equal(jumped, parent):
                break
            parent = jumped
    roots = parent.view(H, W)[fg]
    labels = torch.zeros(H, W, dtype=torch.long, device=mask.device)
    if roots.numel() == 0:
        return labels, 0
    # a root is its component's smallest flat index, i.e. its first pixel in raster order
    unique_roots, inverse = torch.unique(roots, return_inverse=True)  # sorted = raster order
    labels[fg] = inverse + 1
    return labels, int(unique_roots.numel())


def semantic_to_instances(semantic: torch.Tensor, thing_classes: Iterable[int], connectivity: int = 8,
                          ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Instance map from a semantic mask: each connected blob of a thing class is one instance.

    The best a semantic model can do for instances (touching objects of one class merge; see
    Kirillov et al. 2019, https://arxiv.org/abs/1801.00868, for why panoptic models predict
    instances directly). ``semantic``: int ``H,W`` or ``N,H,W`` with ``ignore_index`` for void.
    Returns int64 of the same shape: ids ``1..K`` unique within each image (across all thing
    classes, in raster order of first pixel), 0 for stuff, void and non-thing pixels.
    """
    _check_label_map(semantic, "semantic")
    things = _check_classes(thing_classes, ignore_index)
    batch = semantic if semantic.ndim == 3 else semantic[None]
    things_t = torch.tensor(things, dtype=torch.long, device=semantic.device)
    out = []
    for sem in batch.long():
        # +1 keeps a thing class 0 apart from the background value 0
        coded = torch.where(torch.isin(sem, things_t), sem + 1, 0)  # 0 = not a thing
        out.append(connected_components(coded, connectivity, background=0)[0])
    # an empty batch (N = 0): torch.stack needs at least one tensor
    result = torch.stack(out) if out else torch.zeros_like(batch, dtype=torch.long)
    return result if semantic.ndim == 3 else result[0]


def to_panoptic(semantic: torch.Tensor, instance: torch.Tensor, thing_classes: Iterable[int],
                label_divisor: int = 1000, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Combine a semantic mask and an instance map into a panoptic map.

    Kirillov et al. 2019, https://arxiv.org/abs/1801.00868. ``id = class * label_divisor +
    instance`` for thing pixels, ``class * label_divisor`` for stuff pixels (their instance id
    is dropped), ``-1`` for void (``semantic == ignore_index``) and for thing pixels whose
    instance id is 0 (a thing pixel must belong to an instance). Shapes ``H,W`` or ``N,H,W``;
    instance ids must lie in ``0..label_divisor-1``. Returns int64.
    """
    _check_label_map(semantic, "semantic")
    _check_label_map(instance, "instance")
    check_same_shape(semantic, instance, "semantic", "instance")
    things = _check_classes(thing_classes, ignore_index)
    if not isinstance(label_divisor, int) or label_divisor < 1:
        raise ValueError(f"label_divisor must be a positive int, got {label_divisor!r}")
    sem, inst = semantic.long(), instance.long()
    void = sem == ignore_index
    if bool(((sem < 0) & ~void).any()):
        raise ValueError(f"semantic contains negative class ids {torch.unique(sem[(sem < 0) & ~void])[:10].tolist()}")
    if bool(((inst < 0) | (inst >= label_divisor)).any()):
        bad = torch.unique(inst[(inst < 0) | (inst >= label_divisor)])[:10].tolist()
        raise ValueError(f"instance ids {bad} are outside 0..{label_divisor - 1} (label_divisor)")
    is_thing = torch.isin(sem, torch.tensor(things, dtype=torch.long, device=sem.device))
    # stuff pixels keep instance 0 whatever the instance map says
    panoptic = sem * label_divisor + torch.where(is_thing, inst, 0)
    return panoptic.masked_fill_(void | (is_thing & (inst == 0)), VOID)


def from_panoptic(panoptic: torch.Tensor, label_divisor: int = 1000,
                  ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a panoptic map into ``(semantic, instance)``, the inverse of :func:`to_panoptic`.

    Kirillov et al. 2019, https://arxiv.org/abs/1801.00868. ``semantic = id // label_divisor``
    (``ignore_index`` where ``id == -1``), ``instance = id % label_divisor`` (0 for void and
    stuff). Both int64, shape of ``panoptic``.
    """
    _check_label_map(panoptic, "panoptic")
    if not isinstance(label_divisor, int) or label_divisor < 1:
        raise ValueError(f"label_divisor must be a positive int, got {label_divisor!r}")
    pan = panoptic.long()
    void = pan == VOID
    if bool((pan < VOID).any()):
        raise ValueError(f"panoptic contains ids {torch.unique(pan[pan < VOID])[:10].tolist()} "
                         f"below -1 (void)")
    semantic = torch.where(void, ignore_index, torch.div(pan, label_divisor, rounding_mode="floor"))
    instance = torch.where(void, 0, pan % label_divisor)
    return semantic, instance


# ---------------------------------------------------------------------------------------------
# Counting (lesson 17: can semantic segmentation count objects?)
# ---------------------------------------------------------------------------------------------

def count_instances(instance: torch.Tensor) -> int | torch.Tensor:
    """Number of distinct instance ids ``> 0``: an int for an ``H,W`` map, an int64 tensor of
    per-image counts for ``N,H,W``.

    Instances as in Kirillov et al. 2019, https://arxiv.org/abs/1801.00868.
    """
    _check_label_map(instance, "instance")
    if instance.ndim == 2:
        return int(torch.unique(instance[instance > 0]).numel())
    return torch.tensor([count_instances(x) for x in instance], dtype=torch.long)


def instances_per_class(semantic: torch.Tensor, instance: torch.Tensor, thing_classes: Iterable[int],
                        ignore_index: int = IGNORE_INDEX) -> dict[int, int]:
    """Ground-truth count per thing class: distinct instance ids ``> 0`` among its pixels
    (``H,W`` maps; a batch is counted as a whole).

    Instances as in Kirillov et al. 2019, https://arxiv.org/abs/1801.00868.
    """
    _check_label_map(semantic, "semantic")
    _check_label_map(instance, "instance")
    check_same_shape(semantic, instance, "semantic", "instance")
    things = _check_classes(thing_classes, ignore_index)
    lead = semantic.shape[:-2]
    img = torch.arange(lead.numel() if lead else 1, device=semantic.device).view(*lead, 1, 1) \
        .expand_as(semantic)  # keep ids of different images apart
    counts = {}
    for c in things:
        sel = (semantic == c) & (instance > 0)
        # distinct (image, instance id) columns of a 2 x P stack
        counts[c] = int(torch.unique(torch.stack([img[sel], instance[sel].long()]), dim=1).shape[1])
    return counts


def components_per_class(semantic: torch.Tensor, thing_classes: Iterable[int], connectivity: int = 8,
                         ignore_index: int = IGNORE_INDEX) -> dict[int, int]:
    """What a semantic mask can count: connected components per thing class (``H,W`` or
    ``N,H,W``, summed over the batch). Touching objects of one class count once.

    Connected components as in :func:`connected_components`; panoptic background in
    Kirillov et al. 2019, https://arxiv.org/abs/1801.00868.
    """
    _check_label_map(semantic, "semantic")
    things = _check_classes(thing_classes, ignore_index)
    counts = {c: 0 for c in things}
    for sem in (semantic if semantic.ndim == 3 else semantic[None]):
        for c in things:
            counts[c] += connected_components(sem == c, connectivity)[1]
    return counts


def count_error(semantic: torch.Tensor, instance: torch.Tensor, thing_classes: Iterable[int],
                connectivity: int = 8, ignore_index: int = IGNORE_INDEX) -> dict[int, int]:
    """Per thing class: components in ``semantic`` minus true instances in ``instance``.

    Negative = touching instances merged into one blob; positive = an instance split into
    several blobs (occlusion, thin parts). Kirillov et al. 2019, https://arxiv.org/abs/1801.00868.
    """
    found = components_per_class(semantic, thing_classes, connectivity, ignore_index)
    true = instances_per_class(semantic, instance, thing_classes, ignore_index)
    return {c: found[c] - true[c] for c in found}


def merged_and_split(pred: torch.Tensor, target: torch.Tensor, label_divisor: int = 1000,
                     min_fraction: float = 0.2) -> dict[str, int]:
    """Why predicted *thing* segments miss the target ones, counted over panoptic maps
    (``H,W`` or ``N,H,W``, the convention of :func:`to_panoptic`; ``-1`` = void):

    * ``targets``: target thing segments (instance id ``> 0``);
    * ``merged``: target thing segments whose *main* predicted segment (the predicted segment
      of the same class holding most of its pixels) is also the main predicted segment of
      another target segment of that image: two objects got one id, which is what connected
      components do to touching objects of one class;
    * ``split``: target thing segments spread over two or more predicted segments of their
      class, each holding at least ``min_fraction`` of the target's pixels (occlusion, thin
      parts cut by a mistake).

    A merged pair can match at most one of its targets (IoU > 0.5 is unique), so every merge
    costs at least one false negative in panoptic quality's RQ (Kirillov et al. 2019,
    https://arxiv.org/abs/1801.00868).
    """
    _check_label_map(pred, "pred")
    _check_label_map(target, "target")
    check_same_shape(pred, target, "pred", "target")
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
    preds = pred.long() if pred.ndim == 3 else pred.long()[None]
    targets = target.long() if target.ndim == 3 else target.long()[None]
    out = {"targets": 0, "merged": 0, "split": 0}
    for p, t in zip(preds, targets):
        thing = (t != VOID) & (t % label_divisor > 0)  # stuff has instance id 0
        out["targets"] += int(torch.unique(t[thing]).numel())
        # target thing pixels predicted as some segment of the same class
        same = thing & (p != VOID) & (torch.div(p, label_divisor, rounding_mode="floor")
                                       == torch.div(t, label_divisor, rounding_mode="floor"))
        if not bool(same.any()):
            continue
        # every (target id, predicted id) pair with its overlap in pixels
        pairs, counts = torch.unique(torch.stack([t[same], p[same]]), dim=1, return_counts=True)
        area = {int(g): int(n) for g, n in zip(*torch.unique(t[thing], return_counts=True))}
        main: dict[int, tuple[int, int]] = {}
        big: dict[int, int] = {}
        for (g, q), n in zip(pairs.T.tolist(), counts.tolist()):
            # main[g] = (predicted id, overlap) of the largest overlap seen so far
            if g not in main or n > main[g][1]:
                main[g] = (q, n)
            if n >= min_fraction * area[g]:
                big[g] = big.get(g, 0) + 1
        owners: dict[int, int] = {}
        for g, (q, _) in main.items():
            owners[q] = owners.get(q, 0) + 1
        # a predicted segment that is the main one of two targets has merged them
        out["merged"] += sum(1 for g, (q, _) in main.items() if owners[q] > 1)
        out["split"] += sum(1 for g in big if big[g] > 1)
    return out


# ---------------------------------------------------------------------------------------------
# Separating touching objects of one class (lesson 17): distance transform + watershed
# ---------------------------------------------------------------------------------------------

# neighbour steps in the order scikit-image's watershed visits them (edges, then corners), so
# that ties on a plateau are broken the same way
_STEPS = {4: ((-1, 0), (0, -1), (0, 1), (1, 0)),
          8: ((-1, 0), (0, -1), (0, 1), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))}


def h_maxima(height: np.ndarray, h: float, mask: np.ndarray | None = None,
             connectivity: int = 8) -> np.ndarray:
    """Bool mask of the tops of the maxima of ``height`` (2-D) that rise at least ``h`` above
    every path to a higher point: the *h-maxima* (Soille, *Morphological Image Analysis*, 2003,
    ch. 6.3.4; ``skimage.morphology.h_maxima`` computes the same on the whole image).

    Morphological reconstruction by dilation of ``height - h`` under ``height`` floods every
    hill up to ``h`` below its top, through ``connectivity``-connected paths (4 or 8); where the residue
    ``height - reconstruction`` is still ``>= h`` the hill was not drowned. A bump whose top is
    less than ``h`` above the saddle that joins it to a higher hill (its *dynamic*) has no
    such pixel. ``mask`` (bool, default everywhere) limits the landscape: paths stay inside
    it, so the highest top of every connected piece of the mask is always kept, however
    low (a small object keeps its marker), and nothing outside is ever a top.
    """
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not h > 0:
        raise ValueError(f"h (the minimum height of a maximum) must be a number > 0, got {h!r}")
    height = np.asarray(height, dtype=np.float64)
    if height.ndim != 2:
        raise ValueError(f"height must be 2-D (H,W); got shape {height.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    # 3x3 cross (4-connectivity) or full 3x3 square (8)
    footprint = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    inside = np.ones(height.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    if inside.shape != height.shape:
        raise ValueError(f"mask shape {inside.shape} differs from height shape {height.shape}")
    terrain = np.where(inside, height, -np.inf)            # no path leaves the mask
    # subtract a hair more than h so that float rounding cannot let the flood reach a top that
    # rises exactly h (the same guard as scikit-image)
    rec = terrain - h - 2 * np.finfo(np.float64).resolution * np.abs(height)
    while True:  # reconstruction by dilation: grow the flood, never above the terrain
        grown = np.minimum(ndimage.grey_dilation(rec, footprint=footprint, mode="nearest"), terrain)
        if np.array_equal(grown, rec):
            break
        rec = grown
    tops = np.zeros(height.shape, bool)
    # residue >= h: the flood from any higher ground never came within h of this top
    tops[inside] = height[inside] - rec[inside] >= h
    return tops


def _flood(height: np.ndarray, markers: np.ndarray, mask: np.ndarray,
           connectivity: int) -> np.ndarray:
    """Marker-controlled watershed of ``height`` (lowest first) inside ``mask``: a priority
    flood. Every marker pixel enters a heap keyed by ``(height, age)``; the lowest pixel is
    popped and each unlabelled mask neighbour takes its label and is pushed with its own
    height, ``age`` counting pushes so that ties go first-come first-served. A pixel is
    labelled by the first basin that reaches it, and basins meet along the ridges of
    ``height`` (the immersion view of Vincent & Soille 1991, https://doi.org/10.1109/34.87344;
    this heap form is Meyer's, as in Beucher & Meyer 1993)."""
    H, W = height.shape
    # plain Python lists: element access in the loop is much faster than on numpy arrays
    labels = markers.astype(np.int64).ravel().tolist()
    h, inside = height.ravel().tolist(), mask.ravel().tolist()
    # markers enter with age 0; later pushes get increasing ages (FIFO among equal heights)
    heap = [(h[i], 0, i) for i in np.flatnonzero(markers).tolist()]
    heapq.heapify(heap)
    age = 0
    steps = _STEPS[connectivity]
    while heap:
        _, _, i = heapq.heappop(heap)
        y, x = divmod(i, W)
        for dy, dx in steps:
            yy, xx = y + dy, x + dx
            if 0 <= yy < H and 0 <= xx < W:
                j = yy * W + xx
                # inside the mask and unclaimed: the first basin to arrive takes the pixel
                if inside[j] and not labels[j]:
                    age += 1
                    labels[j] = labels[i]
                    heapq.heappush(heap, (h[j], age, j))
    return np.asarray(labels, dtype=np.int64).reshape(H, W)


def watershed_instances(semantic: torch.Tensor, thing_classes: Iterable[int], min_height: float = 2.0,
                        connectivity: int = 8, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Instance map from a semantic mask that splits touching objects of one class where the
    region narrows: Euclidean distance transform + marker-controlled watershed.

    Per image and thing class ``c``:

    1. ``dist`` = Euclidean distance of every pixel of ``c`` to the nearest pixel that is not
       ``c`` (``scipy.ndimage.distance_transform_edt``). Two touching blobs become two hills
       joined by a saddle at the neck where they touch.
    2. Markers: the :func:`h_maxima` of ``dist``, tops that rise at least ``min_height``
       pixels above the saddle to any higher top, each 8-connected top one marker. Without
       the threshold every bump of a ragged outline would seed an object of its own.
    3. Flood ``-dist`` from the markers inside the class region (:func:`_flood`, the
       priority flood of ``skimage.segmentation.watershed``): each pixel joins the marker
       whose basin reaches it first, so the objects meet at the necks.

    This is the classic recipe for touching cells and coins (Beucher & Meyer 1993, "The
    morphological approach to segmentation: the watershed transformation"; Vincent & Soille
    1991, https://doi.org/10.1109/34.87344). It is a shape prior, not learned identity: it
    separates objects that touch along a narrow neck and wrongly splits one object with two
    thick parts joined by a thin one (a head on a body, a dumbbell), and it cannot separate
    two objects that overlap along a wide boundary. Panoptic-DeepLab
    (https://arxiv.org/abs/1911.10194) *learns* the centres and offsets that play the role of
    markers here.

    ``semantic``: int ``H,W`` or ``N,H,W``, class ids ``>= 0`` or ``ignore_index`` (void is
    treated as no class: it separates, and gets id 0). ``connectivity`` (4 or 8) is that of the
    flood and of each class region. Returns int64 of ``semantic``'s shape: ids ``1..K``
    unique within each image across classes, numbered in raster order of each instance's
    first pixel (as :func:`semantic_to_instances`), 0 for stuff, void and non-thing pixels.
    """
    _check_label_map(semantic, "semantic")
    things = _check_classes(thing_classes, ignore_index)
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if isinstance(min_height, bool) or not isinstance(min_height, (int, float)) or not min_height > 0:
        raise ValueError(f"min_height (pixels of distance) must be a number > 0, "
                         f"got {min_height!r}")
    sem_all = semantic.long()
    bad = (sem_all < 0) & (sem_all != ignore_index)
    if bool(bad.any()):
        raise ValueError(f"semantic contains negative class ids "
                         f"{torch.unique(sem_all[bad])[:10].tolist()}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    # scipy and the heap flood run on numpy, on the CPU
    batch = (sem_all if semantic.ndim == 3 else sem_all[None]).cpu().numpy()
    out = np.zeros(batch.shape, dtype=np.int64)
    for sem, labels in zip(batch, out):
        for c in things:
            region = sem == c
            if not region.any():
                continue
            dist = ndimage.distance_transform_edt(region)
            # one marker per connected top (a plateau top is one marker, as in scikit-image);
            # every connected piece of the region has a top, so the flood reaches all of it
            tops = ndimage.label(h_maxima(dist, min_height, region, connectivity), structure)[0]
            # flood -dist: object centres are the lowest points, necks are ridges
            basins = _flood(-dist, tops, region, connectivity)
            # offset by the largest id so far: ids stay unique across the classes of one image
            labels[basins > 0] = basins[basins > 0] + labels.max()
        labels[...] = _raster_order(labels)
    result = torch.from_numpy(out).to(semantic.device)
    return result if semantic.ndim == 3 else result[0]


def _raster_order(labels: np.ndarray) -> np.ndarray:
    """Renumber the ids ``> 0`` of ``labels`` as 1..K in raster order of their first pixel."""
    flat = labels.ravel()
    # first[k] = flat index of the first pixel holding ids[k]
    ids, first = np.unique(flat, return_index=True)
    keep = ids > 0
    ids, first = ids[keep], first[keep]
    lut = np.zeros(int(flat.max()) + 1 if flat.size else 1, dtype=np.int64)
    # lookup table old id -> new id; ids ordered by first pixel get 1..K, 0 stays 0
    lut[ids[np.argsort(first)]] = np.arange(1, len(ids) + 1)
    return lut[labels]
