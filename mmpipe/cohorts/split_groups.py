"""Subjects that every split keeps in one part: the manifest's ``split_group`` column.

A subject is one row of the manifest, but two rows can be one patient's: BreakHis's
folders ``14-22549AB`` and ``14-22549CD`` (one accession number), or a CSV cohort with
two visits of a patient as two subjects. Splitting them apart puts a patient's tissue in
training and in test, and the test score then measures recognition, not prediction. An
adapter that knows such rows writes one group name to each of them in ``split_group``
(a blank: the subject is its own group) and lists the column in the manifest's
``extra_columns``; :func:`mmpipe.bench.splits.stratified_split` then draws each group
as one unit, and cross-validation's folds inside the training part keep each group in
one fold (:func:`mmpipe.bench.selection.stratified_folds`). Group names that differ only
in case ("P0", "p0") stop the manifest, as subject IDs that do
(:func:`mmpipe.cohorts.manifest.check_split_groups`).
"""

from __future__ import annotations

SPLIT_GROUP = "split_group"
