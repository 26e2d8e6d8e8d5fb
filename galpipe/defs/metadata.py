"""Asset metadata that reads well in the Dagster UI: pictures and short tables as markdown, and
the MLflow tags that tie a run to the Dagster run, asset and partition that made it."""

import base64
import io
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue
from PIL import Image

PREVIEW_WIDTH_PX = 900  # pictures are stored in the event log on every materialization: keep them small


def image_md(path: Path) -> MetadataValue:
    """The picture, shrunk to PREVIEW_WIDTH_PX, inline (the full-size file stays at `path`)."""
    with Image.open(path) as image:
        image.thumbnail((PREVIEW_WIDTH_PX, PREVIEW_WIDTH_PX * 4))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    return MetadataValue.md(f"![{Path(path).name}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})")


def table_md(df: pd.DataFrame, rows: int = 5) -> MetadataValue:
    return MetadataValue.md(df.head(rows).to_markdown(index=False))


def run_tags(context: AssetExecutionContext) -> dict:
    return {"dagster.run_id": context.run.run_id, "dagster.asset": context.asset_key.to_user_string(),
            "dagster.partition": context.partition_key if context.has_partition_key else ""}
