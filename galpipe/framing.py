"""How much sky a model input shows around each galaxy: the same field in arcsec for every galaxy
(`fixed`), a field proportional to each galaxy's own size (`per_galaxy`, as Galaxy Zoo framed SDSS
images), or each cutout as it comes (`whole_image`, for cutouts already framed per galaxy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FRAMINGS = ("fixed", "per_galaxy", "whole_image")
# Galaxy Zoo 2's SDSS images: 424 pixels at 0.02 x petroR90_r arcsec each (Willett et al. 2013).
GZ2_FIELD_PER_PETRO_R90 = 424 * 0.02
WHOLE_IMAGE = "whole_image"  # a model's field, as text, when its inputs were whole images


def field_text(field_arcsec: float | None) -> str:
    """A model's input field as a tag or file metadata hold it: the arcsec, or WHOLE_IMAGE."""
    return WHOLE_IMAGE if field_arcsec is None else str(field_arcsec)


def field_from_text(text: str) -> float | None:
    """The input field field_text wrote ("" too, as model inputs of this version's first days held it)."""
    return None if text in (WHOLE_IMAGE, "") else float(text)


class FramingError(ValueError):
    pass


@dataclass(frozen=True)
class Framing:
    kind: str = "fixed"
    field_arcsec: float = 40.0  # fixed: the field of every galaxy
    size_column: str = ""  # per_galaxy: the catalogue column with each galaxy's size, arcsec
    field_per_size: float = GZ2_FIELD_PER_PETRO_R90  # per_galaxy: field = field_per_size x size

    def __post_init__(self):
        if self.kind not in FRAMINGS:
            raise FramingError(f"framing {self.kind!r}: expected one of {', '.join(FRAMINGS)}")
        if self.kind == "fixed" and not self.field_arcsec > 0:
            raise FramingError(f"framing fixed: field_arcsec must be positive, got {self.field_arcsec}")
        if self.kind == "per_galaxy" and not (self.size_column and self.field_per_size > 0):
            raise FramingError("framing per_galaxy needs size_column (a catalogue column in arcsec) and a "
                               f"positive field_per_size; got {self.size_column!r}, {self.field_per_size}")

    def fields_arcsec(self, catalog: pd.DataFrame, where: str = "catalogue") -> pd.Series | None:
        """Each galaxy's field in arcsec, by object_id; None for whole images."""
        if self.kind == "whole_image":
            return None
        if self.kind == "fixed":
            return pd.Series(self.field_arcsec, index=catalog.object_id.to_numpy(), dtype=float)
        if self.size_column not in catalog:
            raise FramingError(f"{where}: framing per_galaxy: no size column {self.size_column!r}; "
                               f"has {list(catalog.columns)}")
        size = pd.to_numeric(catalog[self.size_column], errors="coerce").to_numpy()
        bad = ~(np.isfinite(size) & (size > 0))
        if bad.any():
            raise FramingError(f"{where}: column {self.size_column!r} is not a positive size in row(s) "
                               f"{list(catalog.index[bad])[:10]}")
        return pd.Series(self.field_per_size * size, index=catalog.object_id.to_numpy())

    @property
    def model_field_arcsec(self) -> float | None:
        """The field a registered model's inputs need: fixed fields are cut from any cutout; otherwise
        (None) each cutout is taken whole, so new cutouts must come framed as the training ones did."""
        return self.field_arcsec if self.kind == "fixed" else None

    def describe(self) -> str:
        return {"fixed": f"{self.field_arcsec:g} arcsec", "whole_image": "each image whole",
                "per_galaxy": f"{self.field_per_size:g} x {self.size_column}"}[self.kind]
