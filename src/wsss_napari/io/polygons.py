"""Label masks to valid (OGC) polygons whose edges are the pixels' edges.

Each 4-connected region of a label becomes one polygon: its outline and its holes follow the
pixel edges exactly (corners only, so the polygon's area is the region's pixel count). Where
two pixels of a region touch only at a corner, the outline does not pass through that point
twice (a self-touching ring is invalid under OGC rules): the ring is split there into the
exterior and a hole that touches it at that one point, or into two holes touching each
other, which OGC allows. Regions touching at a corner are separate polygons; in one
MultiPolygon they touch at points only, which OGC allows too.

Coordinates are mask pixel corners ``(x, y)``: pixel ``(row, col)`` is the square
``[col, col + 1] x [row, row + 1]``. Exteriors have a positive shoelace area in these
coordinates and holes a negative one (RFC 7946 orientation when y is read as north).

Simplification (Douglas-Peucker via shapely's topology-preserving simplifier, which only
removes vertices and never lets rings cross) keeps every geometry valid; a geometry that
simplification would make invalid is kept exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

#: Moves on screen (y down): 0 +x, 1 +y, 2 -x, 3 -y; turning left is ``(d + 3) % 4``.
_DX = np.array([1, 0, -1, 0], np.int64)
_DY = np.array([0, 1, 0, -1], np.int64)


@njit(nogil=True, cache=True)
def _edge_ok(p: np.ndarray, vy: int, vx: int, d: int) -> bool:  # pragma: no cover
    """Is the edge leaving vertex ``(vy, vx)`` in direction ``d`` a boundary with the
    region on its left (screen, y down) and outside on its right?"""
    # pixel (r, c) covers vertices (r, c)..(r + 1, c + 1); left/right pixel of each move
    if d == 0:    # +x along row line vy: left = above, right = below
        a, b = p[vy - 1, vx], p[vy, vx]
    elif d == 1:  # +y along column line vx: left = right-hand column, right = left column
        a, b = p[vy, vx], p[vy, vx - 1]
    elif d == 2:  # -x: left = below, right = above
        a, b = p[vy, vx - 1], p[vy - 1, vx - 1]
    else:         # -y: left = left column, right = right column
        a, b = p[vy - 1, vx - 1], p[vy - 1, vx]
    return a != 0 and b == 0


@njit(nogil=True, cache=True)
def _trace(p: np.ndarray):  # pragma: no cover
    """Every boundary ring of the nonzero pixels of the padded binary ``p``.

    Returns ``(vy, vx, starts, pinched, seed_r, seed_c)``: corner vertices of all rings
    (padded vertex coordinates) in order, the offset of each ring's first corner (plus the
    end), whether a ring passes a vertex twice, and a pixel on each ring's inner side.
    """
    hp, wp = p.shape
    nvx = wp + 1
    visited = np.zeros((hp + 1) * nvx, np.uint8)  # +x edges already traced
    seen = np.full((hp + 1) * nvx, -1, np.int64)   # last ring that turned at a vertex
    vy_out, vx_out, starts, pinched, seed_r, seed_c = [0], [0], [0], [False], [0], [0]
    vy_out.pop()
    vx_out.pop()
    pinched.pop()
    seed_r.pop()
    seed_c.pop()
    n_rings = 0
    for y0 in range(1, hp):
        for x0 in range(0, wp):
            if visited[y0 * nvx + x0] or not _edge_ok(p, y0, x0, 0):
                continue
            ring = n_rings
            n_rings += 1
            seed_r.append(y0 - 1)
            seed_c.append(x0)
            pin = False
            d = 0
            vy, vx = y0, x0
            while True:
                if d == 0:
                    visited[vy * nvx + vx] = 1
                vy += _DY[d]
                vx += _DX[d]
                # hug the region: left turn first, then straight, then right
                e = (d + 3) % 4
                if not _edge_ok(p, vy, vx, e):
                    e = d
                    if not _edge_ok(p, vy, vx, e):
                        e = (d + 1) % 4
                done = vy == y0 and vx == x0 and e == 0
                if e != d:
                    k = vy * nvx + vx
                    if seen[k] == ring:
                        pin = True
                    seen[k] = ring
                    vy_out.append(vy)
                    vx_out.append(vx)
                if done:
                    break
                d = e
            starts.append(len(vy_out))
            pinched.append(pin)
    return (np.array(vy_out, np.int64), np.array(vx_out, np.int64), np.array(starts, np.int64),
            np.array(pinched, np.bool_), np.array(seed_r, np.int64), np.array(seed_c, np.int64))


def _split_pinches(ring: np.ndarray) -> list[np.ndarray]:
    """Split a closed corner list ``(n, 2)`` into loops that visit no vertex twice (one
    linear pass: a vertex seen again closes the loop walked since its first visit)."""
    pts = ring.tolist()
    stack: list[list[int]] = []
    where: dict[tuple[int, int], int] = {}
    loops = []
    for pt in pts:
        key = (pt[0], pt[1])
        j = where.get(key)
        if j is not None:
            loop = stack[j:]
            for q in loop[1:]:
                del where[(q[0], q[1])]
            del stack[j + 1:]
            loops.append(np.asarray(loop, ring.dtype))
        else:
            where[key] = len(stack)
            stack.append(pt)
    loops.append(np.asarray(stack, ring.dtype))
    return loops


def _area2(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]) + x[-1] * y[0] - x[0] * y[-1])


def region_polygons(binary: np.ndarray) -> list[list[np.ndarray]]:
    """The polygons of the nonzero pixels of ``binary`` (one per 4-connected region).

    Returns:
        A list of polygons, each ``[exterior, *holes]``; a ring is an ``int64 (n, 2)`` array
        of ``(x, y)`` corners in mask pixels, not repeating its first point. Exteriors have
        a positive shoelace area, holes a negative one.
    """
    import cv2

    b = np.asarray(binary) != 0
    if not b.any():
        return []
    p = np.zeros((b.shape[0] + 2, b.shape[1] + 2), np.uint8)
    p[1:-1, 1:-1] = b
    vy, vx, starts, pinched, seed_r, seed_c = _trace(p)
    _, comp = cv2.connectedComponents(p, connectivity=4, ltype=cv2.CV_32S)
    # padded vertex (i, j) -> mask corner (x = j - 1, y = i - 1)
    xy = np.stack([vx - 1, vy - 1], axis=1)
    n = len(starts) - 1
    nxt = np.arange(1, len(xy) + 1)
    nxt[starts[1:] - 1] = starts[:-1]
    terms = xy[:, 0] * xy[nxt, 1] - xy[nxt, 0] * xy[:, 1]
    area2 = np.add.reduceat(terms, starts[:-1]) if n else np.zeros(0, np.int64)
    cids = comp[seed_r, seed_c]
    exterior: dict[int, np.ndarray] = {}
    holes: dict[int, list[np.ndarray]] = {}

    def add(cid: int, ring: np.ndarray, a2: float) -> None:
        # the tracer walks exteriors with a negative shoelace area: reverse every ring
        if a2 < 0:
            if cid in exterior:
                raise AssertionError("two exteriors for one 4-connected region")
            exterior[cid] = ring[::-1]
        else:
            holes.setdefault(cid, []).append(ring[::-1])

    for k in range(n):
        ring = xy[starts[k]:starts[k + 1]]
        if pinched[k]:
            for part in _split_pinches(ring):
                add(int(cids[k]), part, _area2(part))
        else:
            add(int(cids[k]), ring, area2[k])
    return [[exterior[c], *holes.get(c, [])] for c in sorted(exterior)]


def to_shapely(poly: list[np.ndarray]) -> Any:
    from shapely.geometry import Polygon

    return Polygon(poly[0], poly[1:])


def simplified(polys: list[list[np.ndarray]], tolerance: float, *,
               as_multi: bool) -> list[Any]:
    """Shapely geometries of ``polys``: one Polygon each, or one MultiPolygon of all.

    ``tolerance`` in mask px (0 keeps every corner). A geometry that the simplification
    would leave invalid (or empty) is kept exact.
    """
    from shapely.geometry import MultiPolygon

    exact = [to_shapely(p) for p in polys]
    geoms = [MultiPolygon(exact)] if as_multi and exact else exact
    if tolerance <= 0:
        return geoms
    out = []
    for g in geoms:
        s = g.simplify(tolerance, preserve_topology=True)
        out.append(s if s.is_valid and not s.is_empty and s.geom_type == g.geom_type else g)
    return out


def rings_of(geom: Any) -> list[list[np.ndarray]]:
    """``[[exterior, *holes], ...]`` coordinate arrays of a Polygon or MultiPolygon, with
    exteriors positive and holes negative (shoelace), each ring closed (first == last)."""
    parts = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
    out = []
    for poly in parts:
        rings = []
        for k, ring in enumerate([poly.exterior, *poly.interiors]):
            xy = np.asarray(ring.coords, np.float64)
            if (_area2(xy[:-1]) < 0) != (k > 0):
                xy = xy[::-1]
            rings.append(xy)
        out.append(rings)
    return out
