"""DataFrames between assets are stored as Parquet files under the profile's data folder, where
users can open them too (never pickles)."""

from pathlib import Path

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext, ResourceDependency

from galpipe.catalogs import write_parquet
from galpipe.defs.resources import GalpipeSettings


class ParquetIOManager(ConfigurableIOManager):
    settings: ResourceDependency[GalpipeSettings]

    def _path(self, context) -> Path:
        return self.settings.run_dir.joinpath(*context.asset_key.path).with_suffix(".parquet")

    def handle_output(self, context: OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a DataFrame, got {type(obj).__name__}")
        path = self._path(context)
        write_parquet(obj, path)
        context.add_output_metadata({"path": str(path), "rows": len(obj)})

    def load_input(self, context: InputContext) -> pd.DataFrame:
        path = self._path(context)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not materialized yet ({context.asset_key.to_user_string()})")
        return pd.read_parquet(path)
