"""Values between assets are stored under the profile's data folder, where users can open them
too: DataFrames as Parquet, small dicts (model URIs, metrics) as JSON, model inputs as the
Parquet of their index with the array's path (relative to it, so that a project can move) in the
file's metadata. Never pickles.
A partitioned asset keeps one file per partition; a downstream asset that reads all partitions
gets the DataFrames concatenated (or a dict of partition -> value)."""

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, MultiPartitionKey, OutputContext, ResourceDependency

from galpipe.catalogs import write_parquet
from galpipe.defs.resources import GalpipeSettings
from galpipe.files import atomic_write
from galpipe.framing import field_from_text, field_text
from galpipe.preprocessing import ModelInputs

ARRAY_PATH_KEY = "galpipe.model_inputs_array"
ROLES = ("source", "target")
FIELD_KEY = "galpipe.model_field_arcsec"  # galpipe.framing.field_text


def finetuned_runs(run_dir, task: str, budget_key: str) -> pd.DataFrame:
    """The runs of a materialized finetuned_models[task x budget] partition (one row per run, with
    its per-galaxy test predictions), read from a project's run folder, as scripts that compare
    runs of two projects read them (bench/)."""
    key = MultiPartitionKey({"task": task, "budget": budget_key})  # "budget|task": dimensions by name
    return read_parquet(Path(run_dir) / "finetuned_models" / f"{key}.parquet")


class ParquetIOManager(ConfigurableIOManager):
    settings: ResourceDependency[GalpipeSettings]

    def _base(self, context) -> Path:
        """data/<project>/<key>; a survey's assets (source_catalog, target_raw_cutouts, ...) in the
        folder of their role: source/catalog, target/raw_cutouts."""
        *folders, name = context.asset_key.path
        role, _, rest = name.partition("_")
        return self.settings.run_dir.joinpath(*folders, *((role, rest) if role in ROLES and rest else (name,)))

    def handle_output(self, context: OutputContext, obj) -> None:
        base = self._base(context)
        if context.has_asset_partitions:
            base = base / context.asset_partition_key
        if isinstance(obj, ModelInputs):
            path = base.with_suffix(".parquet")
            relative = os.path.relpath(Path(obj.array_path).resolve(), path.parent.resolve())
            write_parquet(obj.index, path, {ARRAY_PATH_KEY: relative, FIELD_KEY: field_text(obj.model_field_arcsec)})
            context.add_output_metadata({"path": str(path), "rows": len(obj.index), "array": obj.array_path})
        elif isinstance(obj, pd.DataFrame):
            path = base.with_suffix(".parquet")
            write_parquet(obj, path)
            context.add_output_metadata({"path": str(path), "rows": len(obj)})
        elif isinstance(obj, dict):
            path = base.with_suffix(".json")
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, default=str)))
            context.add_output_metadata({"path": str(path)})
        else:
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a DataFrame or a dict, "
                            f"got {type(obj).__name__}")

    def _read(self, base: Path, what: str):
        for suffix, read in ((".parquet", read_parquet), (".json", lambda p: json.loads(p.read_text()))):
            if base.with_suffix(suffix).is_file():
                return read(base.with_suffix(suffix))
        raise FileNotFoundError(f"{base}.parquet/.json: not materialized yet ({what})")


    def load_input(self, context: InputContext):
        base = self._base(context)
        name = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            return self._read(base, name)
        keys = context.asset_partition_keys
        if len(keys) == 1:
            return self._read(base / keys[0], f"{name} partition {keys[0]}")
        # A reader of all partitions gets those materialized so far, and is told of the rest.
        present = [k for k in keys if any((base / k).with_suffix(s).is_file() for s in (".parquet", ".json"))]
        missing = sorted(set(keys) - set(present))
        if missing:
            context.log.warning(f"{name}: {len(missing)} partition(s) not materialized, left out: {missing}")
        values = {key: self._read(base / key, name) for key in present}
        if values and all(isinstance(v, pd.DataFrame) for v in values.values()):
            return pd.concat(values.values(), ignore_index=True)
        return values


def read_parquet(path: Path):
    """A DataFrame, or ModelInputs where the file's metadata names the array."""
    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    array_path = metadata.get(ARRAY_PATH_KEY.encode())
    frame = table.to_pandas()
    if not array_path:
        return frame
    field = field_from_text(metadata.get(FIELD_KEY.encode(), b"40.0").decode())
    return ModelInputs(os.path.normpath(Path(path).parent / array_path.decode()), frame, field)
