"""Asset metadata that reads well in the Dagster UI: tables as typed Dagster tables (shown inline,
with their schema), pictures as inline markdown images, and the MLflow tags that tie a run to the
Dagster run, asset and partition that made it, with links to them."""

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, TableColumn, TableRecord, TableSchema
from PIL import Image

from galpipe.links import dagster_asset_url, dagster_run_url

PREVIEW_WIDTH_PX = 900  # pictures are stored in the event log on every materialization: keep them small
COLUMN_TYPES = {"i": "int", "u": "int", "f": "float", "b": "bool"}  # numpy dtype kind -> Dagster column type


def image_md(path: Path) -> MetadataValue:
    """The picture, shrunk to PREVIEW_WIDTH_PX, inline (the full-size file stays at `path`)."""
    with Image.open(path) as image:
        image.thumbnail((PREVIEW_WIDTH_PX, PREVIEW_WIDTH_PX * 4))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    return MetadataValue.md(f"![{Path(path).name}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})")


def _cell(value, column_type: str):
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None  # an empty cell, not the text "nan"
    if column_type == "float":
        return round(float(value), 4)
    if column_type in ("int", "bool"):
        return int(value) if column_type == "int" else bool(value)
    return str(value)


def as_table(df: pd.DataFrame, rows: int | None = None) -> MetadataValue:
    """`df` (its first `rows`) as a Dagster table: a schema with each column's type, and the rows."""
    df = df if rows is None else df.head(rows)
    types = {str(c): COLUMN_TYPES.get(df[c].dtype.kind, "string") for c in df.columns}
    schema = TableSchema(columns=[TableColumn(name=name, type=kind) for name, kind in types.items()])
    records = [TableRecord({name: _cell(value, types[name]) for name, value in zip(types, row)})
               for row in df.itertuples(index=False)]
    return MetadataValue.table(records=records, schema=schema)


def run_tags(context: AssetExecutionContext) -> dict:
    """Tags for every MLflow run an asset makes: the Dagster run, asset and partition, with links,
    and a note (the run page's description in MLflow) with the same links, clickable."""
    partition = context.partition_key if context.has_partition_key else ""
    asset = context.asset_key.to_user_string()
    run_url, asset_url = dagster_run_url(context.run.run_id), dagster_asset_url(context.asset_key.path, partition)
    shown = f"{asset}[{partition}]" if partition else asset
    return {"dagster.run_id": context.run.run_id, "dagster.asset": asset, "dagster.partition": partition,
            "dagster.run_url": run_url, "dagster.asset_url": asset_url,
            "mlflow.note.content": f"Made by Dagster run [{context.run.run_id[:8]}]({run_url}) ({context.run.job_name}), "
                                   f"asset [{shown}]({asset_url})."}
