"""The ``bcnb`` adapter: BCNB (Early Breast Cancer Core-Needle Biopsy WSI) as downloaded.

Layout under ``root``:

- ``WSIs/<id>.jpg``: one core-needle biopsy slide per patient, a large JPEG without a
  pyramid (read for tiling as a plain image: :mod:`mmpipe.io.slide`, at the resolution
  ``preprocess.slide.mpp_when_missing`` gives); the ``<id>.json`` tumour annotations
  beside them are not read;
- ``patient-clinical-data.xlsx``: one row per patient, ``Patient ID``, ``Age(years)``,
  ``Tumour Size(cm)``, ``Tumour Type``, ``ER``, ``PR``, ``HER2``, ``HER2 Expression``,
  ``Histological grading``, ``Surgical``, ``Ki67``, ``Molecular subtype``,
  ``Number of lymph node metastases``, ``ALN status``; its columns can be fields of a
  ``table`` modality;
- ``dataset-splitting/{train,val,test}_id.txt``: the release's split, one patient ID a
  line. ``bcnb.split: official`` (the default) fixes the three parts for every seed, as
  published results use them; ``none`` draws splits per seed.

Modalities: ``wsi`` (kind ``slide``) and any ``table`` modality of spreadsheet columns.
Labels: ``aln_status`` (the release's ``N0``, ``N+(1-2)``, ``N+(>2)``) and
``aln_metastasis`` (``negative`` for N0, ``positive`` otherwise), the axillary
lymph-node status the bidirectional-distillation paper predicts. ``Number of lymph node
metastases`` determines that status, and ``Surgical`` follows it (an axillary dissection
after a positive sentinel node, where the task is the status before surgery), so
neither can be a field (a config error says so).

What the adapter does with what it finds: a slide without a spreadsheet row is kept
unlabelled (QC row); a row without a slide keeps its clinical record; an ``ALN status``
outside the three values leaves the labels blank with a QC row naming it; a patient ID
twice in the spreadsheet stops the manifest, naming it; a file of ``WSIs/`` that is not
``<number>.jpg`` (or the annotations) is skipped with a QC row.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path
from typing import Any

import polars as pl

from mmpipe.cohorts.manifest import (
    ABSENT,
    LABEL_QC,
    REJECTED,
    SKIPPED,
    AdapterOutput,
    QCRecord,
    UserSplit,
    cohort_labels,
    dataset_root,
    flat_folder_qc,
    folder_files,
    layout_modalities,
    modality_specs,
    refuse_label_sources,
)
from mmpipe.cohorts.manifest_files import ALL_SUBJECTS, SUBJECT
from mmpipe.cohorts.source_csv import read_utf8_text, refuse_columns_named_twice
from mmpipe.errors import ConfigError, InputError

log = logging.getLogger(__name__)

SPREADSHEET = "patient-clinical-data.xlsx"
SPLIT_FOLDER = "dataset-splitting"
SPLIT_FILES = {"train": "train_id.txt", "val": "val_id.txt", "test": "test_id.txt"}
ID_COLUMN = "Patient ID"
ALN_COLUMN = "ALN status"
# the label's sources besides the status: the count of metastases, and the surgery, whose
# axillary dissection follows a positive sentinel node (the task is the status before
# surgery, from the biopsy: BALNMP, "preoperatively")
LEAKS = ("Number of lymph node metastases", "Surgical")
ALN_VALUES = ("N0", "N+(1-2)", "N+(>2)")
LABELS = ("aln_status", "aln_metastasis")
SLIDE_NAME = re.compile(r"^(?P<id>\d+)\.(jpe?g)$", re.IGNORECASE)


def _aln_text(value: Any) -> str | None:
    """An ``ALN status`` cell in :data:`ALN_VALUES`' spelling. The release's sheet spells
    them so; the BALNMP repository names its sample images with a fullwidth sign,
    ``N+(＞2)``, and a sheet retyped that way is the same class (NFKC makes it ``>``)."""
    text = _text(value)
    return None if text is None else unicodedata.normalize("NFKC", text).replace(" ", "")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _patient_id(value: Any) -> str | None:
    """A patient ID as the slides name it: a number without leading zeros (``001.jpg``
    is patient 1), whether the cell holds the number 1 or the text "001"."""
    text = _text(value)
    return str(int(text)) if text is not None and text.isdigit() else text


def read_clinical(path: Path) -> tuple[list[str], dict[str, dict[str, Any]], list[int]]:
    """The spreadsheet's header, its rows by patient ID (first sheet), and the numbers of
    the rows that hold values but no ID (a note or a total below the table, or a
    patient's row whose ID was deleted: no subject can own them)."""
    if not path.is_file():
        raise InputError("BCNB clinical spreadsheet not found", path=path)
    import openpyxl  # the .xlsx reader; only this adapter needs it

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises zipfile, KeyError and its own types
        raise InputError(f"not a readable .xlsx workbook: {type(e).__name__}: {e}",
                         path=path) from e
    try:
        sheet = book.worksheets[0]
        # read-only mode stops at the sheet's recorded <dimension>; a writer that records
        # it short (some tools do) lost the rows below it without a word
        sheet.reset_dimensions()
        rows = list(sheet.iter_rows(values_only=True))
    finally:
        book.close()
    if not rows:
        raise InputError("the first sheet is empty", path=path)
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    refuse_columns_named_twice(header, path)
    missing = [c for c in (ID_COLUMN, ALN_COLUMN) if c not in header]
    if missing:
        raise InputError(f"lacks column(s) {missing} (has {header})", path=path)
    table: dict[str, dict[str, Any]] = {}
    twice, nameless = [], []
    for number, values in enumerate(rows[1:], start=2):
        row = dict(zip(header, values, strict=False))
        sid = _patient_id(row.get(ID_COLUMN))
        if sid is None:
            # an empty row is formatting; a row with values is a patient without an ID
            if any(_text(v) is not None for v in values):
                nameless.append(number)
            continue
        if sid in table:
            twice.append(sid)
        table[sid] = row
    if twice:
        raise InputError(f"patient ID(s) on two rows: {sorted(set(twice))[:20]}; each "
                         "patient must appear once (mmpipe never de-duplicates silently)",
                         path=path)
    return header, table, nameless


def official_split(root: Path, ids: list[str]) -> UserSplit:
    """The release's ``dataset-splitting/`` files as the cohort's split."""
    parts: dict[str, str | None] = dict.fromkeys(ids)
    known = set(ids)
    for part, name in SPLIT_FILES.items():
        path = root / SPLIT_FOLDER / name
        if not path.is_file():
            raise InputError(f"split file {name} not found (bcnb.split: official reads "
                             f"{SPLIT_FOLDER}/; set it to none to draw splits)", path=path)
        for line in read_utf8_text(path).splitlines():  # a BOM is no ID
            sid = _patient_id(line)
            if sid is None:
                continue
            if sid not in known:
                raise InputError(f"patient {sid!r} is in no slide and no spreadsheet row",
                                 path=path)
            if parts[sid] is not None:
                raise InputError(f"patient {sid!r} is in the {parts[sid]} and the {part} "
                                 "split files", path=path)
            parts[sid] = part
    return UserSplit(parts, "files", f"the release's split ({SPLIT_FOLDER}/)")


def check_config(cohort_cfg: dict) -> None:
    """What the layout fixes: the labels the adapter derives, the one slide modality, the
    split mode; a :class:`ConfigError` on the first thing wrong."""
    split_mode = (cohort_cfg.get("bcnb") or {}).get("split", "official")
    if split_mode not in ("official", "none"):
        raise ConfigError(f"bcnb.split is 'official' or 'none', not {split_mode!r}")
    labels = cohort_labels(cohort_cfg)
    unknown = [lab for lab in labels if lab not in LABELS]
    if unknown:
        raise ConfigError(f"bcnb labels {unknown}: the adapter derives {list(LABELS)}")
    specs = modality_specs(cohort_cfg)
    layout_modalities(specs, "bcnb", ("wsi",), "slide", SPREADSHEET)
    # both labels are the lymph-node status; LEAKS tell it too
    refuse_label_sources("bcnb", specs, labels, {lab: (ALN_COLUMN, *LEAKS) for lab in LABELS})


def adapt(cohort_cfg: dict, *, out_dir: Path, base_dir: Path) -> AdapterOutput:
    check_config(cohort_cfg)
    root = dataset_root(cohort_cfg, base_dir, "bcnb", f"WSIs/, {SPREADSHEET}, {SPLIT_FOLDER}/")
    cfg = cohort_cfg.get("bcnb") or {}
    split_mode = cfg.get("split", "official")
    labels = cohort_labels(cohort_cfg)
    specs = modality_specs(cohort_cfg)
    fields = list(dict.fromkeys(f for s in specs.values() for f in s.fields))
    sheet = root / SPREADSHEET
    header, table, nameless = read_clinical(sheet)
    absent = [f for f in fields if f not in header]
    if absent:
        raise ConfigError(f"{sheet}: column(s) {absent} not in the spreadsheet (has {header})")

    slides: dict[str, Path] = {}
    rejected: dict[str, str] = {}
    source_qc: list[QCRecord] = [
        QCRecord(ALL_SUBJECTS, LABEL_QC, SKIPPED, f"row {number} of {SPREADSHEET} holds "
                 f"values but no {ID_COLUMN!r}: skipped", str(sheet)) for number in nameless]
    wsi_dir = root / "WSIs"
    if "wsi" in specs:
        if not wsi_dir.is_dir():
            raise InputError("folder WSIs/ not found", path=wsi_dir)
        named: dict[str, list[Path]] = {}
        files = folder_files(wsi_dir)
        source_qc += flat_folder_qc(wsi_dir, "wsi", "<number>.jpg slide",
                                    any(SLIDE_NAME.match(path.name) for path in files))
        for path in files:
            m = SLIDE_NAME.match(path.name)
            if m is not None:
                named.setdefault(str(int(m["id"])), []).append(path)
            elif path.suffix.lower() != ".json":  # the tumour annotations are not read
                source_qc.append(QCRecord(ALL_SUBJECTS, "wsi", SKIPPED,
                                          "not a <number>.jpg slide", str(path)))
        for sid, paths in named.items():
            if len(paths) == 1:
                slides[sid] = paths[0]
            else:  # 1.jpg and 01.jpg: one patient's two files, not ours to choose
                rejected[sid] = (f"{len(paths)} slides of patient {sid}: "
                                 + ", ".join(q.name for q in paths))
    ids = sorted(set(table) | set(slides) | set(rejected), key=lambda s: (len(s), s))
    frame: dict[str, list[Any]] = {SUBJECT: ids}
    qc: list[QCRecord] = []
    if "wsi" in specs:
        frame[specs["wsi"].column] = [str(slides[s]) if s in slides else None for s in ids]
        qc += [QCRecord(s, "wsi", REJECTED, rejected[s], str(wsi_dir)) if s in rejected
               else QCRecord(s, "wsi", ABSENT, f"no WSIs/{s}.jpg")
               for s in ids if s not in slides]
    status, metastasis = [], []
    for sid in ids:
        value = _aln_text(table.get(sid, {}).get(ALN_COLUMN))
        if sid not in table:
            source_qc.append(QCRecord(sid, LABEL_QC, ABSENT, f"no row in {SPREADSHEET}"))
        elif value not in ALN_VALUES:
            source_qc.append(QCRecord(sid, LABEL_QC, ABSENT, f"{ALN_COLUMN} {value!r} is not "
                                      f"one of {list(ALN_VALUES)}", str(sheet)))
            value = None
        status.append(value)
        metastasis.append(None if value is None else
                          "negative" if value == "N0" else "positive")
    chosen = {"aln_status": status, "aln_metastasis": metastasis}
    for lab in labels:
        frame[lab] = chosen[lab]
    for f in fields:
        frame[f] = [_text(table.get(s, {}).get(f)) for s in ids]
    split = official_split(root, ids) if split_mode == "official" else None
    return AdapterOutput(
        frame=pl.DataFrame(frame, schema_overrides={c: pl.Utf8 for c in frame if c != SUBJECT}),
        modalities=specs,
        labels=labels,
        qc=qc,
        source=str(sheet),
        root=str(root),
        split=split,
        unused_columns=[(SPREADSHEET, c) for c in header
                        if c not in {ID_COLUMN, ALN_COLUMN, *fields}],
        source_qc=source_qc,
    )
