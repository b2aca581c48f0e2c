"""One whole volume out of a DICOM series whose slice positions repeat.

A multi-echo, multi-b-value or dynamic (4-D) series holds every position once per
echo, b-value or time point. Keeping, at each position, whichever file sorts first
builds a volume of slices from different echoes or time points. So the files are
first told apart into volumes by the header attributes that say which volume a file
belongs to, and one volume is kept whole:

- copies of one image (same SOPInstanceUID, InstanceNumber and volume tags at one
  position) are one file;
- the volumes are the coarsest grouping by :data:`VOLUME_TAGS` (those that vary in
  the series) in which no position repeats; failing that, InstanceNumber order when
  it splits the files into blocks of one file per position (GE EPI numbers its time
  points so and says nothing else);
- a grouping counts only when its largest volume covers nearly every position
  (:data:`WHOLE_SHARE`): volumes that lie side by side along the body (a step-and-shoot
  CT's rotations, one AcquisitionNumber each) are one volume, not several;
- the kept volume is the one with the most positions, ties to the first (lowest
  echo, time point, b-value);
- repeats that no grouping tells apart at a minority of the positions (a re-sent slice,
  rotations that share a boundary slice) keep one file per position, the lowest
  AcquisitionNumber then InstanceNumber, as the note says; at most of the positions
  they are a defect: which file belongs to which volume would be a guess; and so are
  pieces a tag tells apart that overlap further than a seam (:data:`MAX_SHARED_POSITIONS`,
  :data:`MAX_SHARED_SHARE`): two acquisitions of one stretch, stitched, would change
  contrast halfway.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

# DICOM keywords, in the order they are preferred when two groupings are as coarse:
# PS3.3 C.8.3.1 MR Image (EchoNumbers, EchoTime, TemporalPositionIdentifier,
# TriggerTime), C.7.6.1 General Image (AcquisitionNumber), C.8.13.5.9 MR Diffusion
# (DiffusionBValue)
VOLUME_TAGS = ("EchoNumbers", "EchoTime", "TemporalPositionIdentifier", "TriggerTime",
               "AcquisitionNumber", "DiffusionBValue")
# share of the series' positions a grouping's largest volume must cover to be volumes
# that repeat the stack (a DWI's b=0 volume may lack an end slice or two)
WHOLE_SHARE = 0.9
# positions two pieces of one stack may share and be stitched (a step-and-shoot CT's
# rotations share a boundary slice or two); more is two scans of that stretch
MAX_SHARED_POSITIONS = 2
# ... or this share of the smaller piece (a 3 mm table overlap at 0.625 mm is 5 slices of
# a rotation's 64); more, as a third of it, is two scans of one stretch
MAX_SHARED_SHARE = 0.25


class _File(Protocol):
    path: Any
    sop_uid: str | None
    instance: int | None
    unreadable: tuple[str, str] | None
    volume_tags: dict[str, float | None]


@dataclass
class Choice:
    """The files of the kept volume (indices into the headers) and what to say about it."""

    kept: list[int]
    note: str = ""  # for the QC note; "" when no position repeats
    problem: str | None = None  # the repeats cannot be told apart into volumes


def one_volume(files: list[_File], slots: list[int]) -> Choice:
    """Keep one volume of ``files``; ``slots[i]`` is the position (index along the normal)
    of file ``i``."""
    kept, n_copies = _without_copies(files, slots)
    notes = [f"dropped {n_copies} copied file(s) (same SOPInstanceUID at one position)"
             ] if n_copies else []
    n_positions = len({slots[i] for i in kept})
    if n_positions == len(kept):
        return Choice(sorted(kept, key=lambda i: slots[i]), "; ".join(notes))
    grouped = _by_tags(files, slots, kept, n_positions) or _by_instance(files, slots, kept)
    if grouped is None:
        return _per_position(files, slots, kept, n_positions, notes)
    groups, told_by = grouped
    n_positions = [len(g) for g in groups]
    best = n_positions.index(max(n_positions))
    which = "the first" if best == 0 else (f"the first with the most positions, "
                                           f"{n_positions[best]}; {best} before it had fewer")
    chosen = groups[best]
    n_dropped = len(kept) - len(chosen)
    notes.insert(0, f"repeated positions: kept {_label(files[chosen[0]], told_by, best)} of "
                    f"{len(groups)} volumes told apart by {', '.join(told_by)} ({which}); "
                    f"dropped {n_dropped} files")
    return Choice(sorted(chosen, key=lambda i: slots[i]), "; ".join(notes))


def _without_copies(files: list[_File], slots: list[int]) -> tuple[list[int], int]:
    """Indices left when copies of one image are one file (the readable one), and how
    many copies went. A copy has the image's SOPInstanceUID, InstanceNumber and volume
    tags: a de-identification that reused one UID across echoes made echo 1 and echo 2 at
    a position "copies", and the volume alternated between them slice by slice."""
    by_image: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(files):
        by_image[(slots[i], f.sop_uid or f"#{i}", f.instance,
                  tuple(sorted(f.volume_tags.items())))].append(i)
    kept = [min(idx, key=lambda i: (files[i].unreadable is not None, str(files[i].path)))
            for idx in by_image.values()]
    return sorted(kept), len(files) - len(kept)


def _per_position(files, slots, kept, n_positions: int, notes: list[str]) -> Choice:
    """One file per position where the repeats are a minority of the positions; else a
    defect. Pieces a tag tells apart (acquisitions along the body) are stitched only where
    any two share at most :data:`MAX_SHARED_POSITIONS`, or :data:`MAX_SHARED_SHARE` of
    the smaller: two acquisitions that overlap further are two scans of that stretch,
    perhaps of two contrasts, and a volume of one then the other would change contrast
    halfway."""
    at: dict[int, list[int]] = defaultdict(list)
    for i in kept:
        at[slots[i]].append(i)
    repeated = sum(len(v) > 1 for v in at.values())
    if 2 * repeated >= n_positions:
        return Choice(kept, problem=_untold(files, slots, kept))
    pieces = _by_tags(files, slots, kept, n_positions, whole=False)
    told = "with nothing telling volumes apart (a re-sent slice)"
    # pieces of a slice or two each (a TriggerTime per slice) are no acquisitions
    if pieces is not None and 2 * len(pieces[0]) <= n_positions:
        groups, tags = pieces
        piece_of = {i: k for k, g in enumerate(groups) for i in g}
        at_slot: dict[int, set[int]] = defaultdict(set)
        for i in kept:
            at_slot[slots[i]].add(piece_of[i])
        shared = Counter(pair for held in at_slot.values() if len(held) > 1
                         for pair in itertools.combinations(sorted(held), 2))
        over = [(a, b, n) for (a, b), n in shared.items()
                if n > max(MAX_SHARED_POSITIONS,
                           MAX_SHARED_SHARE * min(len(groups[a]), len(groups[b])))]
        if over:
            a, b, n = max(over, key=lambda t: t[2])
            return Choice(kept, problem=(
                f"{len(groups)} pieces told apart by {', '.join(tags)} overlap at "
                f"{repeated} of {n_positions} positions (two of {len(groups[a])} and "
                f"{len(groups[b])} positions share {n}): two scans of that stretch, which "
                "one volume would stitch one after the other"))
        told = (f"where {len(groups)} pieces told apart by {', '.join(tags)} meet (two "
                f"share at most {max(shared.values(), default=0)})")
    chosen = [min(v, key=lambda i: _first_acquired(files[i])) for v in at.values()]
    notes.insert(0, f"{repeated} of {n_positions} positions repeated {told}: kept the "
                    "lowest AcquisitionNumber, then a readable file, then the lowest "
                    "InstanceNumber, at each; dropped "
                    f"{len(kept) - len(chosen)} files")
    return Choice(sorted(chosen, key=lambda i: slots[i]), "; ".join(notes))


def _first_acquired(file: _File) -> tuple:
    """The order in which one position's files are kept: the first acquisition (another
    one's slice would stitch two scans), then, within it, a readable file before an
    unreadable one (a slice sent again under a new SOPInstanceUID and a higher
    InstanceNumber beside a truncated first copy: the truncated copy had rejected the
    subject), then the lowest InstanceNumber."""
    acquisition = file.volume_tags.get("AcquisitionNumber")
    return (*_sortable(acquisition), file.unreadable is not None, *_sortable(file.instance),
            str(file.path))


def _by_tags(files, slots, kept, n_positions: int, whole: bool = True
             ) -> tuple[list[list[int]], tuple[str, ...]] | None:
    """The coarsest grouping by varying VOLUME_TAGS with no repeated position and (with
    ``whole``) a volume covering WHOLE_SHARE of the positions, as (groups in tag order,
    tags), or None."""
    varying = [t for t in VOLUME_TAGS if len({files[i].volume_tags.get(t) for i in kept}) > 1]
    best = None
    for r in range(1, len(varying) + 1):
        for tags in itertools.combinations(varying, r):
            groups: dict[tuple, list[int]] = defaultdict(list)
            for i in kept:
                groups[tuple(_sortable(files[i].volume_tags.get(t)) for t in tags)].append(i)
            # volumes of a few slices each (an AcquisitionNumber counting slices or
            # rotations, a TriggerTime per slice) are pieces of one stack, not repeats
            if whole and max(map(len, groups.values())) < WHOLE_SHARE * n_positions:
                continue
            if all(len({slots[i] for i in g}) == len(g) for g in groups.values()):
                # fewest groups: a tag that varies within a volume (a per-slice TriggerTime)
                # splits it into pieces
                if best is None or len(groups) < len(best[0]):
                    best = (groups, tags)
    if best is None:
        return None
    groups, tags = best
    return [groups[k] for k in sorted(groups)], tags


def _by_instance(files, slots, kept) -> tuple[list[list[int]], tuple[str, ...]] | None:
    """Volume k = the k-th file of every position by InstanceNumber, when the volumes'
    InstanceNumbers do not interleave; else None.

    Positions may hold fewer files than others only when they lack the last volume (a
    scan stopped before its last time point ended): then each volume must also number
    its slices in one direction along the stack and without a gap, which a volume pieced
    together from two time points (files missing at the first one, or a run of files
    lost across a time point's end) does not. Where every position is as deep, a block
    with a gap in its numbers is such a piece when the other blocks have none."""
    at: dict[int, list[int]] = defaultdict(list)
    for i in kept:
        if files[i].instance is None:
            return None
        at[slots[i]].append(i)
    ranked = [sorted(at[p], key=lambda i: files[i].instance) for p in sorted(at)]
    depth = max(map(len, ranked))
    groups = [[r[k] for r in ranked if len(r) > k] for k in range(depth)]  # position order
    spans = [(min(files[i].instance for i in g), max(files[i].instance for i in g))
             for g in groups]
    if any(a[1] >= b[0] for a, b in itertools.pairwise(spans)):
        return None
    gapless = [hi - lo + 1 == len(g) for g, (lo, hi) in zip(groups, spans, strict=True)]
    if len({len(r) for r in ranked}) == 1:
        # every position as deep: a run of lost files exactly one volume long, across a
        # time point's end, leaves that too, and a block pieced from two time points. A
        # scanner that numbers its series without gaps (the other blocks show it) leaves
        # a gap in that block only; one that skips numbers leaves gaps in every block
        if any(gapless) and not all(gapless):
            return None
    else:
        # only the last volume may lack positions, and only where most positions repeat
        # (a slice re-sent at a few is one file per position's case, _per_position)
        if any(len(g) < len(ranked) for g in groups[:-1]) or 2 * len(groups[1]) < len(ranked):
            return None
        steps = {d > 0 for g in groups
                 for d in (files[j].instance - files[i].instance for i, j in itertools.pairwise(g))}
        # and numbers them without a gap: a block pieced from the start of one time point
        # and the end of the next (the files between them lost) has one
        if len(steps) != 1 or not all(gapless):
            return None
    return groups, ("InstanceNumber blocks",)


def _sortable(value) -> tuple:
    return (value is None, value or 0)


def _shown(value) -> str:
    if value is None:
        return "absent"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _label(file: _File, told_by: tuple[str, ...], index: int) -> str:
    if told_by == ("InstanceNumber blocks",):
        return f"InstanceNumber block {index + 1}"
    return ", ".join(f"{t} {_shown(file.volume_tags.get(t))}" for t in told_by)


def _untold(files, slots, kept) -> str:
    at: dict[int, list[int]] = defaultdict(list)
    for i in kept:
        at[slots[i]].append(i)
    repeated = [v for v in at.values() if len(v) > 1]
    example = ", ".join(files[i].path.name for i in repeated[0][:3])
    return (f"{sum(map(len, repeated))} files at {len(repeated)} of {len(at)} positions "
            f"repeated (e.g. {example}), which neither {', '.join(VOLUME_TAGS)} nor "
            "InstanceNumber order tells apart into volumes; keeping one file per position "
            "would mix them")
