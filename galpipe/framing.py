"""How much sky a model input shows around each galaxy: the same field in arcsec for every galaxy
(`fixed`), a field proportional to each galaxy's own size (`per_galaxy`, as Galaxy Zoo framed SDSS
images), or each cutout as it comes (`whole_image`, for cutouts already framed per galaxy), whole or
its central part (`central_fraction`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FRAMINGS = ("fixed", "per_galaxy", "whole_image")
# Galaxy Zoo 2's SDSS images: 424 pixels at 0.02 x petroR90_r arcsec each (Willett et al. 2013).
GZ2_FIELD_PER_PETRO_R90 = 424 * 0.02
WHOLE_IMAGE = "whole_image"  # a model's field, as text, when its inputs were whole images
CENTRAL_FRACTION = "central_fraction:"  # ... or the central part of each: "central_fraction:0.5"


class FramingError(ValueError):
    pass


@dataclass(frozen=True)
class CentralFraction:
    """A model input's field as the central `fraction` of each image's side, for images framed per
    galaxy with much sky around it (Galaxy Zoo's JPEGs show 8.48 x petroR90 across)."""

    fraction: float

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise FramingError(f"central_fraction must be above 0 and at most 1, got {self.fraction}")


# A model input's field: arcsec cut around each galaxy (a number), each image whole (None), or the
# central part of each image (CentralFraction). The names that hold one say `field_arcsec` since
# fields were arcsec first; the tag and file metadata keep that name.
ModelField = float | CentralFraction | None


def field_text(field_arcsec: ModelField) -> str:
    """A model's input field as a tag or file metadata hold it: the arcsec, WHOLE_IMAGE, or
    CENTRAL_FRACTION and the fraction (repr: the same number back, so the same pixels are cut)."""
    if isinstance(field_arcsec, CentralFraction):
        return f"{CENTRAL_FRACTION}{field_arcsec.fraction!r}"
    return WHOLE_IMAGE if field_arcsec is None else str(field_arcsec)


def field_from_text(text: str) -> ModelField:
    """The input field field_text wrote ("" too, as model inputs of this version's first days held it)."""
    if text.startswith(CENTRAL_FRACTION):
        return CentralFraction(float(text.removeprefix(CENTRAL_FRACTION)))
    return None if text in (WHOLE_IMAGE, "") else float(text)


@dataclass(frozen=True)
class Framing:
    kind: str = "fixed"
    field_arcsec: float = 40.0  # fixed: the field of every galaxy
    size_column: str = ""  # per_galaxy: the catalogue column with each galaxy's size, arcsec
    field_per_size: float = GZ2_FIELD_PER_PETRO_R90  # per_galaxy: field = field_per_size x size
    central_fraction: float = 1.0  # whole_image: the central fraction of each image's side (1: all)

    def __post_init__(self):
        if self.kind not in FRAMINGS:
            raise FramingError(f"framing {self.kind!r}: expected one of {', '.join(FRAMINGS)}")
        if self.kind == "fixed" and not self.field_arcsec > 0:
            raise FramingError(f"framing fixed: field_arcsec must be positive, got {self.field_arcsec}")
        if self.kind == "per_galaxy" and not (self.size_column and self.field_per_size > 0):
            raise FramingError("framing per_galaxy needs size_column (a catalogue column in arcsec) and a "
                               f"positive field_per_size; got {self.size_column!r}, {self.field_per_size}")
        CentralFraction(self.central_fraction)  # checks it
        if self.central_fraction != 1 and self.kind != "whole_image":
            raise FramingError(f"central_fraction is for framing whole_image, not {self.kind} "
                               "(per_galaxy frames tighter with a smaller field_per_size)")

    def fields_arcsec(self, catalog: pd.DataFrame, where: str = "catalogue") -> pd.Series | ModelField:
        """Each galaxy's field in arcsec, by object_id; for whole images, None or their CentralFraction."""
        if self.kind == "whole_image":
            return self.model_field_arcsec
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
    def model_field_arcsec(self) -> ModelField:
        """The field a registered model's inputs need: fixed fields are cut from any cutout; otherwise
        each cutout is taken whole (None) or its central part, so new cutouts must come framed as the
        training ones did."""
        if self.kind == "fixed":
            return self.field_arcsec
        return CentralFraction(self.central_fraction) if self.central_fraction != 1 else None

    def describe(self) -> str:
        whole = "each image whole" if self.central_fraction == 1 else f"the central {self.central_fraction:g} of each image"
        return {"fixed": f"{self.field_arcsec:g} arcsec", "whole_image": whole,
                "per_galaxy": f"{self.field_per_size:g} x {self.size_column}"}[self.kind]
