"""The embedded default survey: catalogues of the simulated sky and their cutouts, rendered in
parallel over all cores and written as stacks of FITS cutouts with WCS (galpipe.cutouts), a stack
per chunk of the catalogue."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from galpipe.cutouts import STACK_SUFFIX, Cutout, stack_address, validate_cutout, write_cutout_stack
from galpipe.instruments import get_instrument
from galpipe.simulation.population import (
    SkyConfig,
    observe_catalog,
    simulate_sky,
    sky_footprint_deg,
    target_footprint_deg,
    volunteer_votes,
)

# Galaxies per stack file, and per task sent to a worker: at most this many; a small catalogue is
# cut into about SMALL_CATALOGUE_STACKS, so that every core has work. A function of the catalogue
# alone, so that the same catalogue gives the same files on any machine.
MAX_GALAXIES_PER_STACK = 256
SMALL_CATALOGUE_STACKS = 16
FIELD_KEY = "_field_arcsec"  # each row's field, as render_cutouts hands it to the workers


def simulated_catalog(instrument_name: str, sky_config: SkyConfig, footprint: str, r_mag_limit: float,
                      volunteer_labels: bool, label_false_positive_fraction: float = 0.0) -> pd.DataFrame:
    """What `instrument_name` catalogues of the simulated sky.

    footprint: 'full' (the whole simulated sky) or 'target' (the strip the target survey covers).
    volunteer_labels: add Galaxy-Zoo-like labels made on this survey's images.
    """
    instrument = get_instrument(instrument_name)
    area = {"full": sky_footprint_deg, "target": target_footprint_deg}[footprint](sky_config)
    prefix = f"{instrument.name}_"
    catalog = observe_catalog(simulate_sky(sky_config), instrument, area, r_mag_limit, sky_config.seed, prefix)
    if volunteer_labels:
        catalog = pd.concat([catalog, volunteer_votes(catalog, sky_config.seed, instrument,
                                                      label_false_positive_fraction)], axis=1)
    return catalog


def _truth(row: dict) -> dict:
    return {k.removeprefix("true_"): v for k, v in row.items() if k.startswith("true_")}


def _one_thread_per_worker() -> None:
    # GalSim's OpenMP would otherwise start a thread per core in every worker, and the workers
    # would fight over the cores (measured: 2 workers ran no faster than 1). Runs before the
    # worker first imports GalSim.
    os.environ["OMP_NUM_THREADS"] = "1"


def galaxies_per_stack(n_galaxies: int) -> int:
    return int(np.clip(np.ceil(n_galaxies / SMALL_CATALOGUE_STACKS), 1, MAX_GALAXIES_PER_STACK))


def _render_chunk(rows: list[dict], instrument_name: str, stack_path: str, neighbours: bool = False,
                  seeing_spread: float = 0.0, source_noise: bool = False) -> list[dict]:
    # Imported here so that worker processes pay for GalSim only when they render.
    from galpipe.simulation.render import render_galaxy, seeing_scale

    instrument = get_instrument(instrument_name)
    manifest, rendered = [], []
    for row in rows:
        size = instrument.cutout_size_pixels(row[FIELD_KEY])
        truth = _truth(row)
        # The cutout is centred on the catalogue position; the galaxy sits at its true position.
        offset_x = -(truth["ra_deg"] - row["ra_deg"]) * np.cos(np.radians(row["dec_deg"])) * 3600
        offset_y = (truth["dec_deg"] - row["dec_deg"]) * 3600
        entry = {"object_id": row["object_id"], "path": ""}
        try:
            cube = render_galaxy(truth, instrument, size, (offset_x / instrument.pixel_scale_arcsec,
                                                          offset_y / instrument.pixel_scale_arcsec),
                                 neighbours=neighbours, seeing_spread=seeing_spread, source_noise=source_noise)
            fwhm_scale = seeing_scale(truth["structure_seed"], instrument, seeing_spread)
            address = stack_address(stack_path, len(rendered))
            # Checked here, in memory, so that nobody has to read the file back to check it.
            validate_cutout(address, Cutout(Path(address), cube, instrument.band_names), instrument.band_names,
                            (size, size))
            keywords = {}
            for k, band in enumerate(instrument.bands):
                keywords[f"PSFFWHM{k}"] = band.psf_fwhm_arcsec * fwhm_scale  # arcsec
                keywords[f"SKYSIG{k}"] = instrument.sky_sigma_per_pixel(band.name)  # flux units per pixel
            rendered.append((row, cube, keywords))
            entry.update(path=address, status="ok", reason="", bands=instrument.band_names, height_px=size,
                         width_px=size, validated=True)
        except Exception as err:  # a galaxy GalSim cannot draw is reported, the rest go on
            entry.update(status="failed", reason=f"render failed: {err}")
        manifest.append(entry)
    if rendered:
        done, cubes, keywords = zip(*rendered)
        write_cutout_stack(Path(stack_path), [r["object_id"] for r in done], cubes, instrument.band_names,
                           [r["ra_deg"] for r in done], [r["dec_deg"] for r in done], instrument.pixel_scale_arcsec,
                           {"SURVEY": instrument.name, "BUNIT": instrument.flux_unit,
                            "MAGZERO": instrument.zeropoint_mag, "SIMULATD": True},
                           {key: [k[key] for k in keywords] for key in keywords[0]})
    return manifest


def render_cutouts(catalog: pd.DataFrame, instrument_name: str, field_arcsec: float | pd.Series, out_dir: Path,
                   n_workers: int | None = None, progress=None, neighbours: bool = False,
                   seeing_spread: float = 0.0, source_noise: bool = False) -> pd.DataFrame:
    """Render every galaxy of `catalog` as `instrument_name` sees it, into stacks of FITS cutouts, over
    `field_arcsec`: one field for all, or each galaxy's own (a Series by object_id); with the
    field objects around each (`neighbours`), seeing that varies by `seeing_spread`, and the
    sources' own Poisson noise (`source_noise`).

    Returns the manifest (object_id, path, status, reason). `progress(done, total)` is called as
    chunks finish (for Dagster logs); a tqdm bar shows the same on the terminal.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_workers = n_workers or os.cpu_count() or 1
    rows = catalog.to_dict("records")
    fields = field_arcsec.loc[catalog.object_id].to_numpy() if isinstance(field_arcsec, pd.Series) \
        else np.full(len(rows), float(field_arcsec))
    for row, field in zip(rows, fields):
        row[FIELD_KEY] = float(field)
    # One function for both branches (picklable for the spawned workers): a chunk in, its manifest out.
    render = functools.partial(_render_chunk, instrument_name=instrument_name, neighbours=neighbours,
                               seeing_spread=seeing_spread, source_noise=source_noise)
    per_stack = galaxies_per_stack(len(rows))
    chunks = [rows[i:i + per_stack] for i in range(0, len(rows), per_stack)]
    stack_paths = [str(out_dir / f"cutouts-{k:05d}{STACK_SUFFIX}") for k in range(len(chunks))]
    manifest: list[dict] = []
    with tqdm(total=len(rows), desc=f"rendering {instrument_name}", unit="galaxy", disable=None) as bar:
        if n_workers == 1:
            results = (render(chunk, stack_path=path) for chunk, path in zip(chunks, stack_paths))
            for part in results:
                manifest += part
                bar.update(len(part))
                if progress:
                    progress(len(manifest), len(rows))
        else:
            # spawn, not fork: the parent may hold threads (Dagster, torch) that fork would copy.
            context = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(n_workers, mp_context=context, initializer=_one_thread_per_worker) as pool:
                futures = [pool.submit(render, chunk, stack_path=path) for chunk, path in zip(chunks, stack_paths)]
                for future in cf.as_completed(futures):
                    part = future.result()
                    manifest += part
                    bar.update(len(part))
                    if progress:
                        progress(len(manifest), len(rows))
    order = {object_id: i for i, object_id in enumerate(catalog.object_id)}
    return pd.DataFrame(manifest).sort_values("object_id", key=lambda s: s.map(order)).reset_index(drop=True)
