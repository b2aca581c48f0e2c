"""A one-modality csv cohort for the preprocessing shards' tests."""

from __future__ import annotations

from pathlib import Path

from mmpipe.cohorts import build_manifest


def one_modality_cohort(root: Path, kind: str, files: dict[str, str]) -> Path:
    """The built cohort folder (``root/results/toy``) of ``files`` (subject -> path under
    ``root``), one ``kind`` modality named ``ct`` (dicom) or ``wsi`` (slide), labels
    alternating 0 and 1."""
    modality = {"dicom": "ct", "slide": "wsi"}[kind]
    rows = [f"id,{modality},y"] + [f"{sid},{path},{k % 2}"
                                   for k, (sid, path) in enumerate(files.items())]
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    cohort = {"adapter": "csv", "csv": str(root / "cohort.csv"), "subject_column": "id",
              "labels": ["y"], "modalities": {modality: {"kind": kind, "column": modality}}}
    build_manifest("toy", cohort, root / "results" / "toy", base_dir=root)
    return root / "results" / "toy"
