"""Pathfinder: are the two dots the two ends of one dashed curve? Pixels as a token sequence.

Papers: Linsley et al. 2018, "Learning long-range spatial dependencies with horizontal gated
recurrent units" (arXiv:1805.08315), whose `snakes2` generator this follows in spirit; Tay et al.
2020, "Long Range Arena" (arXiv:2011.04006), whose Pathfinder-32 flattens 32 × 32 images.
Tests: long-range spatial integration — whether two far-apart marks are joined can only be told
by following a curve made of separate dashes, across hundreds of tokens; 2-way classification.

Scene: two main contours of `contour_length` dashes and `num_distractors` distractor contours of
`distractor_length` dashes on a black image_size × image_size canvas. A contour is a walk of
dashes from a uniform start point and heading: each dash is a straight stroke of `dash_length`
pixels, followed by `gap` empty pixels along the same heading, and the next dash turns by a
uniform angle in [-max_turn, max_turn]. Like snakes2 the walk is grown dash by dash and steers:
each step draws 16 turns and takes the first whose dash stays on the canvas, off the other
contours and clear of the walk itself (below); a walk left without one is dropped and redrawn.
Two dots (discs of `marker_radius`) mark contour ends: label 1 — both ends of one main contour
(either, at random); label 0 — one end of each main contour. The scene is drawn before the label,
so both classes have the same contours and statistics; only which ends carry dots differs.
LRA's levels at size 32 (snakes2 with paddle_length 2, paddle_margin 1, paddle_thickness 0.5,
marker_radius 1.5: the defaults here) are contour_length 6 / 9 / 14 = easy / intermediate / hard
(LRA's reported "Pathfinder" is hard), with LRA's distractors: distractor_length =
contour_length // 3 dashes, num_distractors = 20 // distractor_length (the -1 defaults). As in
the original, a positive pair of dots is at most a contour length apart while a negative pair
can be anywhere, so dot distance is a weak (not a decisive) cue.

Connectivity, the definition the label obeys: a contour's *solid* pixels are those whose centre
lies within r_s = sqrt(r² + 1/4) of its polyline (dashes and gaps), where r = thickness/2 + 1/2
is how far a dash's anti-aliasing reaches — so every lit pixel of a dash is a solid pixel, and
as r_s > 1/√2 each solid contour is 4-connected. A dot's pixels are those within
marker_radius + 1/2 of its centre. Contours are placed one at a time (the main ones first, with
room for dots at both ends, the ends >= 2·marker_radius + 3 apart) and a segment (a dash and its
gap) is accepted only if none of its solid pixels is in or 8-adjacent to an earlier contour's; it
also keeps 2·r_s (3/4 of the straight distance, if less) from the walk's earlier non-adjacent
segments. So in the union of solid contours and dots every contour is its own 8-connected
piece, and the two dots are connected iff label 1 (tests/test_pathfinder.py flood-fills it).
`generate_with_masks` returns that mask, the float image and the dot centres with the batch.
Fallback: an image whose next contour fails 8 rounds in a row (2, 4, ... 32 walks per round)
starts over with an empty canvas; a batch needing more than 64 rounds per contour raises
RuntimeError (settings that crowd the canvas: fewer or shorter contours or a larger image).

Rendering: a dash is an anti-aliased stroke — intensity 0.75 · clip(r - distance from its axis)
· (box-filtered coverage of [0, dash_length] along it) — and a dot a disc of intensity
clip(marker_radius + 1/2 - distance) (1.0 at the centre), combined by max: only dots exceed 0.75.
Tokens: the image row-major, seq_len = image_size², each pixel quantised to
round(intensity · (num_levels - 1)) in [0, num_levels) = vocab; padding_mask all True.
`with_length` (config `eval_lengths`, which are image sizes here, not token counts) changes
image_size only: the same strokes on a larger canvas.

Implementation: numpy, vectorised over the batch and the walks: each placement round grows
walks for every image still missing a contour, one dash per step for all of them, testing a
dash first on the pixels nearest its axis and then exactly on its small pixel window against a
dilated occupancy map. CPU time on one core at size 32, batch 64: ~46 ms easy (~1,400 images/s),
~64 ms intermediate (~1,000/s), ~170 ms hard (~370/s; ~450/s at batch 256).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from attnjax.registry import ConfigError
from attnjax.tasks import _draw
from attnjax.tasks.base import ClassificationTask, with_defaults

PATH_INTENSITY = 0.75  # peak of a dash
MARKER_INTENSITY = 1.0  # peak of a dot
TURN_TRIES = 16  # turns drawn per dash; a walk where none fits is dropped
WALKS = 2  # walks grown per image and placement round (doubled after each failed round)
MAX_DOUBLINGS = 4  # walks per image and round grow to WALKS · 2^MAX_DOUBLINGS after failures
MAX_FAILS = 8  # rounds without room for a contour before an image starts over
MAX_ROUNDS_PER_CONTOUR = 64  # a batch needing more rounds raises RuntimeError


@dataclasses.dataclass(frozen=True)
class Pathfinder(ClassificationTask):
    """Pathfinder (LRA Pathfinder-32's geometry; easy by default). Format in the docstring."""

    length_field = "image_size"  # eval_lengths are image sizes; seq_len = image_size²

    image_size: int = 32  # side of the square image (LRA: 32; Path-X: 128)
    contour_length: int = 6  # dashes per main contour (LRA at 32: 6 easy, 9 medium, 14 hard)
    distractor_length: int = -1  # dashes per distractor; -1: contour_length // 3 (LRA), >= 1
    num_distractors: int = -1  # distractor contours; -1: 20 // distractor_length (LRA)
    dash_length: float = 2.0  # pixels per dash (LRA's paddle_length at 32: 2)
    gap: float = 1.0  # empty pixels between dashes (LRA's paddle_margin at 32: 1)
    thickness: float = 0.5  # stroke width in pixels (LRA's paddle_thickness at 32: 0.5)
    max_turn: float = 1.0  # largest turn between dashes, radians (uniform in [-max, max])
    marker_radius: float = 1.5  # dot radius in pixels (LRA's marker_radius at 32: 1.5)
    num_levels: int = 256  # grey levels = vocab_size

    def __post_init__(self):
        problems = []
        if self.contour_length < 1:
            problems.append(f"contour_length must be >= 1 (got {self.contour_length})")
        if self.distractor_length == 0 or self.distractor_length < -1:
            problems.append(f"distractor_length must be >= 1 or -1 (got {self.distractor_length})")
        if self.num_distractors < -1:
            problems.append(f"num_distractors must be >= 0 or -1 (got {self.num_distractors})")
        if not self.dash_length > 0:
            problems.append(f"dash_length must be > 0 (got {self.dash_length})")
        if not self.gap >= 0:
            problems.append(f"gap must be >= 0 (got {self.gap})")
        if not 0.5 <= self.thickness <= 4:
            problems.append(f"thickness must be in [0.5, 4] pixels (got {self.thickness})")
        if not 0 <= self.max_turn <= math.pi / 2:
            problems.append(f"max_turn must be in [0, pi/2] radians (got {self.max_turn})")
        if not self.marker_radius >= 0.5:
            problems.append(f"marker_radius must be >= 0.5 (got {self.marker_radius})")
        if self.num_levels < 2:
            problems.append(f"num_levels must be >= 2 (got {self.num_levels})")
        if not problems:
            straight = (self.contour_length - 1) * (self.dash_length + self.gap) + self.dash_length
            if straight < self._end_distance:  # even a straight contour's dots would touch
                problems.append(
                    f"a main contour must span >= {self._end_distance:g} pixels to keep its "
                    f"dots apart, but contour_length={self.contour_length} dashes span at most "
                    f"{straight:g}; use a longer contour_length, dash_length or gap"
                )
            # the dots of one contour must fit on the canvas at their required distance
            room = self.image_size - 1 - 2 * self._margin
            if room < max(self._end_distance, 2 * self.dash_length + self.gap):
                problems.append(
                    f"image_size={self.image_size} is too small for these strokes and dots; "
                    f"use image_size >= {math.ceil(2 * self._margin + 1 + self._end_distance)}"
                )
        if problems:
            raise ConfigError("pathfinder: " + "; ".join(problems))

    # ------------------------------------------------------------------ derived geometry

    @property
    def _distractors(self) -> tuple[int, int]:
        """(number, dashes each) of distractor contours, with LRA's rules for -1."""
        length = self.distractor_length
        if length == -1:
            length = max(self.contour_length // 3, 1)
        number = 20 // length if self.num_distractors == -1 else self.num_distractors
        return number, length

    @property
    def _stroke_reach(self) -> float:  # r: a dash lights pixels up to r from its axis
        return self.thickness / 2 + 0.5

    @property
    def _solid_radius(self) -> float:  # r_s: solid pixels lie within r_s of the polyline
        return math.hypot(self._stroke_reach, 0.5)

    @property
    def _dot_reach(self) -> float:  # a dot lights pixels up to this far from its centre
        return self.marker_radius + 0.5

    @property
    def _margin(self) -> float:  # every vertex stays this far inside the canvas
        return max(self.marker_radius, self._solid_radius)

    def _self_clearance(self, apart: np.ndarray) -> np.ndarray:
        """Least distance between two segments of a contour `apart` (>= 2) segments apart:
        2·r_s, or 3/4 of the length of the straight path between them if shorter (so that a
        straight walk always passes)."""
        straight = (apart - 1) * (self.dash_length + self.gap)
        return np.minimum(2 * self._solid_radius, 0.75 * straight)

    @property
    def _end_distance(self) -> float:  # least distance between the two ends of a main contour
        return 2 * self._dot_reach + 2

    # ------------------------------------------------------------------ contract

    @property
    def vocab_size(self) -> int:
        return self.num_levels

    @property
    def num_classes(self) -> int:
        return 2

    @classmethod
    def chance_accuracy(cls, settings):
        """1/2: two balanced classes."""
        return 0.5

    @classmethod
    def input_length(cls, settings):
        """image_size² pixels."""
        return int(with_defaults(cls, settings)["image_size"]) ** 2

    @property
    def max_length(self) -> int:
        return self.image_size * self.image_size

    def generate(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        out = self._generate(rng, batch_size, with_mask=False)
        return {k: out[k] for k in ("inputs", "targets", "padding_mask")}

    def generate_with_masks(self, rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
        """`generate`'s batch (same rng, same batch) plus, per example: "image" float32 [B, S, S]
        (intensities before quantisation), "mask" bool [B, S, S] (solid contours and the two
        dots: the connectivity mask of the module docstring), "dots" float [B, 2, 2] (the dot
        centres, (row, col))."""
        return self._generate(rng, rows, with_mask=True)

    def _generate(self, rng: np.random.Generator, rows: int, with_mask: bool):
        main, distractors = self._place(rng, rows)  # [B, 2, m+1, 2], [B, D, d+1, 2]
        m = self.contour_length
        label = rng.integers(0, 2, rows)
        both = rng.integers(0, 2, rows)  # label 1: the main contour marked at both ends
        ends = rng.integers(0, 2, (2, rows)) * m  # label 0: the marked end of each contour
        contour = np.where(label[:, None] == 1, both[:, None], [[0, 1]])  # [B, 2]
        vertex = np.where(label[:, None] == 1, [[0, m]], ends.T)  # [B, 2]
        dots = main[np.arange(rows)[:, None], contour, vertex]  # [B, 2, 2]
        image, mask = self._render([main, distractors], dots, with_mask)
        s = self.image_size
        inputs = np.rint(image * (self.num_levels - 1)).astype(np.int32).reshape(rows, s * s)
        out = {
            "inputs": inputs,  # [B, S²]
            "targets": label.astype(np.int32),  # [B]
            "padding_mask": np.ones((rows, s * s), np.bool_),  # [B, S²]
        }
        if with_mask:
            out.update(image=image, mask=mask, dots=dots)
        return out

    # ------------------------------------------------------------------ contours

    def _segment_window(self) -> int:  # side of the pixel window around one segment
        return math.ceil(self.dash_length + self.gap + 2 * self._solid_radius) + 1

    def _dot_window(self) -> int:  # side of the pixel window around one dot
        return math.ceil(2 * self._dot_reach) + 1

    def _segment_geometry(self, a: np.ndarray, b: np.ndarray):
        """Windows around segments a -> b ([..., 2]): pixel rows [..., ws, 1] and cols
        [..., 1, ws], and per pixel the coordinate along the segment, the distance from its line
        and the distance from the segment ([..., ws, ws])."""
        rows, cols = _draw.window(np.minimum(a, b) - self._solid_radius, self._segment_window())
        return (rows, cols, *_draw.segment_frame(a, b, rows, cols))

    def _segment_pixels(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flat indices [..., ws²] of the solid pixels of segments a -> b ([..., 2])."""
        rows, cols, _, _, dist = self._segment_geometry(a, b)
        return _draw.flat_index(rows, cols, dist < self._solid_radius, self.image_size)

    def _dot_pixels(self, centres: np.ndarray) -> np.ndarray:
        """Flat indices [..., w²] of the pixels of dots at centres ([..., 2])."""
        reach = self._dot_reach
        rows, cols = _draw.window(centres - reach, self._dot_window())
        near = _draw.disc_distance(centres, rows, cols) < reach
        return _draw.flat_index(rows, cols, near, self.image_size)

    def _grow(self, rng, blocked: np.ndarray, owner: np.ndarray, dashes: int, dots: bool):
        """Grows one contour of `dashes` dashes in image owner[i] for each i, dash by dash:
        each step draws TURN_TRIES turns and takes the first whose segment stays inside the
        canvas, has no blocked solid pixel and keeps 2·r_s from the contour's earlier,
        non-adjacent segments (with `dots`, the start and end dots must be free and far enough
        apart too). Returns vertices [n, dashes + 1, 2] (dash k runs from vertex k towards
        vertex k + 1; the last vertex ends the last dash) and ok [n] (grown to the end)."""
        n, tries, s = len(owner), TURN_TRIES, self.image_size
        lo, hi = self._margin, s - 1 - self._margin
        verts = np.zeros((n, dashes + 1, 2), np.float32)
        heading = np.zeros(n, np.float32)
        live = np.arange(n)  # walks still growing
        flat = blocked.reshape(-1)  # blocked[i, j] == flat[offset of i + j]
        offset = owner * blocked.shape[1]

        def first_fit(valid, exact):
            """Per live walk, the first option that is `valid` and passes `exact(rows, option)`
            (the costly check: first on each walk's first valid option, then on all the
            remaining valid options of the walks where that failed); -1 where none does."""
            chosen = np.full(len(valid), -1)
            rows = np.flatnonzero(valid.any(1))
            option = valid[rows].argmax(1)
            good = exact(rows, option)
            chosen[rows[good]] = option[good]
            valid[rows[~good], option[~good]] = False
            rows = rows[~good][valid[rows[~good]].any(1)]
            if len(rows):
                which, option = np.nonzero(valid[rows])  # row-major: options in order
                good = exact(rows[which], option)
                first, at = np.unique(which[good], return_index=True)
                chosen[rows[first]] = option[good][at]
            return chosen

        def free(rows, index):  # no blocked pixel among index [p, F] of the walks live[rows]
            return ~flat[offset[live[rows]][:, None] + index].any(1)

        def step(chosen, points, angle):
            nonlocal live
            found = chosen >= 0
            rows, option = np.flatnonzero(found), chosen[found]
            live = live[found]
            return points[rows, option], (None if angle is None else angle[rows, option])

        # the start: a free pixel (and, with dots, a free dot)
        start = rng.uniform(lo, hi, (n, tries, 2)).astype(np.float32)
        pixel = np.rint(start).astype(np.int64)
        valid = ~flat[offset[:, None] + pixel[..., 0] * s + pixel[..., 1]]
        if dots:
            chosen = first_fit(valid, lambda r, o: free(r, self._dot_pixels(start[r, o])))
        else:
            chosen = np.where(valid.any(1), valid.argmax(1), -1)
        first_point = step(chosen, start, None)[0]
        verts[live, 0] = first_point
        for k in range(dashes):
            m = len(live)
            if m == 0:
                break
            if k == 0:
                angle = rng.uniform(-np.pi, np.pi, (m, tries))
            else:
                turn = rng.uniform(-self.max_turn, self.max_turn, (m, tries))
                angle = heading[live, None] + turn
            angle = angle.astype(np.float32)
            length = self.dash_length + self.gap if k < dashes - 1 else self.dash_length
            a = verts[live, k]  # [m, 2]
            b = a[:, None] + length * np.stack([np.sin(angle), np.cos(angle)], -1)  # [m, T, 2]
            valid = ((b >= lo) & (b <= hi)).all(-1)
            # quick test: the pixels nearest to points 1 px apart along the segment (solid
            # pixels: within 1/√2 < r_s of it) must be free
            frac = np.arange(1, math.ceil(length) + 1, dtype=np.float32) / math.ceil(length)
            points = np.rint(a[:, None, None] + frac[:, None] * (b - a[:, None])[:, :, None])
            points = np.clip(points, 0, s - 1).astype(np.int64)  # [m, T, P, 2]
            valid &= ~flat[offset[live, None, None] + points[..., 0] * s + points[..., 1]].any(-1)
            last_dot = dots and k == dashes - 1
            if last_dot:  # the end dot is far enough from the start dot
                apart = b - verts[live, None, 0]
                valid &= np.hypot(apart[..., 0], apart[..., 1]) >= self._end_distance

            def exact(rows, option, a=a, b=b, k=k, last_dot=last_dot):
                """No blocked solid pixel (nor dot pixel), and clear of segments 0 .. k-2."""
                end = b[rows, option]  # [p, 2]
                index = self._segment_pixels(a[rows], end)  # [p, ws²]
                if last_dot:
                    index = np.concatenate([index, self._dot_pixels(end)], 1)
                good = free(rows, index)
                if k >= 2:
                    earlier = verts[live[rows]]  # [p, dashes + 1, 2]
                    near = _draw.segment_distances(
                        a[rows, None], end[:, None], earlier[:, : k - 1], earlier[:, 1:k]
                    )  # [p, k-1]
                    good &= (near >= self._self_clearance(k - np.arange(k - 1))).all(1)
                return good

            end, angle = step(first_fit(valid, exact), b, angle)
            verts[live, k + 1], heading[live] = end, angle
        ok = np.zeros(n, np.bool_)
        ok[live] = True
        return verts, ok

    def _solid_pixels(self, verts: np.ndarray, dots: bool) -> np.ndarray:
        """Flat indices [n, F] of the solid pixels of contours verts [n, m+1, 2] (and of dots at
        both ends if `dots`); size² (the sentinel) pads."""
        n = len(verts)
        index = self._segment_pixels(verts[:, :-1], verts[:, 1:])  # [n, m, ws²]
        index = index.reshape(n, index.shape[1] * index.shape[2])
        if dots:
            ends = self._dot_pixels(verts[:, [0, -1]])  # [n, 2, w²]
            ends = ends.reshape(n, ends.shape[1] * ends.shape[2])
            index = np.concatenate([index, ends], 1)
        return index

    def _place(self, rng: np.random.Generator, rows: int):
        """Non-touching contours for `rows` images: main [B, 2, m+1, 2], distractors
        [B, D, d+1, 2]. Each round grows one contour (2^fails after failures) for every image
        still missing one; the first that grows fully is kept and its pixels, grown by one
        (8-neighbourhood), are blocked for later contours."""
        s, m = self.image_size, self.contour_length
        num_distractors, d = self._distractors
        total = 2 + num_distractors
        main = np.zeros((rows, 2, m + 1, 2), np.float32)  # float32 like the walks, so the
        distractors = np.zeros((rows, num_distractors, d + 1, 2), np.float32)  # pixels agree
        blocked = np.zeros((rows, s * s + 1), np.bool_)  # last column: the sentinel, never set
        slot = np.zeros(rows, np.int64)  # next contour of each image (0, 1 main; then distractors)
        fails = np.zeros(rows, np.int64)
        for _ in range(MAX_ROUNDS_PER_CONTOUR * total):
            for is_main in (True, False):
                images = np.flatnonzero((slot < total) & ((slot < 2) == is_main))
                if not len(images):
                    continue
                owner = np.repeat(images, WALKS << np.minimum(fails[images], MAX_DOUBLINGS))
                verts, ok = self._grow(rng, blocked, owner, m if is_main else d, is_main)
                done, chosen = np.unique(owner[ok], return_index=True)
                chosen = np.flatnonzero(ok)[chosen]  # the first full contour of each image
                if is_main:
                    main[done, slot[done]] = verts[chosen]
                else:
                    distractors[done, slot[done] - 2] = verts[chosen]
                taken = np.zeros((len(done), s * s + 1), np.bool_)
                pixels = self._solid_pixels(verts[chosen], is_main)  # [done, F]
                taken[np.arange(len(done))[:, None], pixels] = True
                grown = _draw.dilate8(taken[:, :-1].reshape(-1, s, s)).reshape(len(done), s * s)
                blocked[done, :-1] |= grown
                slot[done] += 1
                fails[done] = 0
                missed = np.setdiff1d(images, done)
                fails[missed] += 1
                restart = missed[fails[missed] > MAX_FAILS]
                blocked[restart], slot[restart], fails[restart] = False, 0, 0
            if (slot == total).all():
                return main, distractors
        raise RuntimeError(
            f"pathfinder: could not fit 2 contours of {m} dashes and {num_distractors} "
            f"distractors of {d} dashes apart from each other in a {s}x{s} image; use fewer or "
            "shorter contours (contour_length, num_distractors, distractor_length), shorter "
            "dash_length/gap, or a larger image_size"
        )

    # ------------------------------------------------------------------ rendering

    def _render(self, contours: list[np.ndarray], dots: np.ndarray, with_mask: bool):
        """Image float32 [B, S, S] (max of dashes and dots) and, if with_mask, the solid mask
        bool [B, S, S] (solid contours and the two dots), from contours [B, C, m+1, 2] and dots
        [B, 2, 2]. A lit pixel is always a solid one."""
        rows_b, s = len(dots), self.image_size
        stride = s * s + 1  # one sentinel column per image
        image = np.zeros(rows_b * stride, np.float32)
        mask = np.zeros(rows_b * stride, np.bool_) if with_mask else None
        base = (np.arange(rows_b) * stride)[:, None]  # [B, 1]

        def draw(rows, cols, value, solid):  # value, solid [B, ..., w, w]
            index = _draw.flat_index(rows, cols, value > 0, s).reshape(rows_b, -1) + base
            value = value.reshape(rows_b, -1)
            keep = value > 0
            np.maximum.at(image, index[keep], value[keep])
            if with_mask:
                mask[_draw.flat_index(rows, cols, solid, s).reshape(rows_b, -1) + base] = True

        r, dash = self._stroke_reach, self.dash_length
        for verts in contours:
            if verts.shape[1] == 0:
                continue
            rows, cols, t, perp, dist = self._segment_geometry(verts[:, :, :-1], verts[:, :, 1:])
            solid = dist < self._solid_radius  # [B, C, m, ws, ws], as in _segment_pixels
            across = np.clip(r - perp, 0.0, 1.0)
            along = np.clip(np.minimum(np.minimum(t + 0.5, dash + 0.5 - t), dash), 0.0, 1.0)
            draw(rows, cols, np.where(solid, PATH_INTENSITY * across * along, 0.0), solid)
        rows, cols = _draw.window(dots - self._dot_reach, self._dot_window())
        dist = _draw.disc_distance(dots, rows, cols)  # [B, 2, w, w]
        solid = dist < self._dot_reach  # as in _dot_pixels
        value = MARKER_INTENSITY * np.clip(self._dot_reach - dist, 0.0, 1.0)
        draw(rows, cols, np.where(solid, value, 0.0), solid)
        image = image.reshape(rows_b, stride)[:, :-1].reshape(rows_b, s, s)
        if with_mask:
            mask = mask.reshape(rows_b, stride)[:, :-1].reshape(rows_b, s, s)
        return image, mask


TASK = Pathfinder
