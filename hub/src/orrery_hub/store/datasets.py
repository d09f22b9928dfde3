"""Datasets in the store: apply (create or replace), read, delete. Called on the store
thread (``StoreRunner.tx``) by the API routes (``api/datasets.py``) and by the pass's
gather, which reads them all."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from orrery.dataset import DatasetManifest, dataset_from_data
from orrery.errors import Conflict, NotFound
from orrery_hub.store.models import DatasetRow, JobRow

FINAL = ("Succeeded", "Failed", "Cancelled")


def put(s: Session, d: DatasetManifest, *, now: float) -> DatasetRow:
    row = s.get(DatasetRow, d.name)
    data = d.model_dump(mode="json", by_alias=True, exclude_none=True)
    if row is None:
        row = DatasetRow(
            name=d.name,
            labels=dict(d.metadata.labels),
            manifest=data,
            size_bytes=d.spec.size_bytes,
            version=d.spec.version,
            created_at=now,
            updated_at=now,
        )
    else:
        row.labels = dict(d.metadata.labels)
        row.manifest = data
        row.size_bytes = d.spec.size_bytes
        row.version = d.spec.version
        row.updated_at = now
    s.add(row)
    s.commit()
    s.refresh(row)
    return row


def get(s: Session, name: str) -> DatasetRow:
    row = s.get(DatasetRow, name)
    if row is None:
        raise NotFound(f"no dataset {name!r}")
    return row


def all_(s: Session) -> list[DatasetRow]:
    return list(s.exec(select(DatasetRow).order_by(col(DatasetRow.name))).all())


def named(s: Session, names: Sequence[str]) -> dict[str, DatasetRow]:
    if not names:
        return {}
    rows = s.exec(select(DatasetRow).where(col(DatasetRow.name).in_(list(names)))).all()
    return {r.name: r for r in rows}


def manifest_of(row: DatasetRow) -> DatasetManifest:
    return dataset_from_data(row.manifest, source=f"dataset {row.name}")


def readers(s: Session, name: str) -> list[str]:
    """Jobs not yet final that read the dataset."""
    out = []
    for j in s.exec(select(JobRow).where(col(JobRow.phase).not_in(FINAL))).all():
        refs = (j.manifest.get("spec") or {}).get("datasets") or []
        if any(isinstance(r, dict) and r.get("name") == name for r in refs):
            out.append(j.id)
    return out


def delete(s: Session, name: str) -> DatasetRow:
    row = get(s, name)
    using = readers(s, name)
    if using:
        more = f" and {len(using) - 3} more" if len(using) > 3 else ""
        raise Conflict(
            f"dataset {name!r} is read by job(s) {', '.join(using[:3])}{more}: "
            "cancel them or wait for them to end"
        )
    s.delete(row)
    s.commit()
    return row
