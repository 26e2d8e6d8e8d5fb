"""A client for the Legacy Survey viewer's FITS cutout service, which serves SDSS
(`layer=sdss`) and DES (`layer=des-dr1`) images at any position and pixel scale.

A deadline per attempt, retries with back-off on server errors and dropped connections, and an
on-disk cache (a cutout already fetched is never fetched again). A payload that is not a valid
FITS cutout is an error naming the URL.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from astropy.io import fits
from tqdm import tqdm

from galpipe.cutouts import CutoutError
from galpipe.files import atomic_write

DEFAULT_BASE_URL = "https://www.legacysurvey.org/viewer"
LAYER_BANDS = {"sdss": "gri", "des-dr1": "gri", "ls-dr9": "grz", "ls-dr10": "griz"}
RETRYABLE_HTTP_STATUS = {429, 500, 502, 503, 504}


class CutoutServiceError(RuntimeError):
    """The service could not deliver a cutout; the message names the URL."""


@dataclass
class LegacySurveyClient:
    base_url: str = DEFAULT_BASE_URL
    cache_dir: Path = Path("data/cache/legacysurvey")
    # Deadline for one attempt's whole response, body included (a server dripping bytes cannot
    # stretch it); the worst case is max_attempts * timeout_s plus the back-off sleeps.
    timeout_s: float = 30.0
    max_attempts: int = 4
    backoff_s: float = 1.0  # doubled after each failed attempt

    def cutout_url(self, ra_deg: float, dec_deg: float, layer: str, pixel_scale_arcsec: float,
                   size_pixels: int, bands: str | None = None) -> str:
        params = {"ra": f"{ra_deg:.7f}", "dec": f"{dec_deg:.7f}", "layer": layer,
                  "pixscale": f"{pixel_scale_arcsec:g}", "size": int(size_pixels),
                  "bands": bands or LAYER_BANDS.get(layer, "gri")}
        return f"{self.base_url.rstrip('/')}/fits-cutout?{urllib.parse.urlencode(params)}"

    def cache_path(self, url: str) -> Path:
        return Path(self.cache_dir) / f"{hashlib.sha256(url.encode()).hexdigest()[:24]}.fits"

    def fetch(self, ra_deg: float, dec_deg: float, layer: str, pixel_scale_arcsec: float,
              size_pixels: int, bands: str | None = None) -> Path:
        """Path of the cached FITS cutout, downloading it first if needed."""
        url = self.cutout_url(ra_deg, dec_deg, layer, pixel_scale_arcsec, size_pixels, bands)
        path = self.cache_path(url)
        if path.is_file():
            return path
        payload = self._get(url)
        _check_fits_payload(url, payload)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(payload))
        return path

    def _get(self, url: str) -> bytes:
        delay = self.backoff_s
        last_error = None
        for attempt in range(1, self.max_attempts + 1):
            deadline = time.monotonic() + self.timeout_s
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                    return _read_body(response, deadline)
            except urllib.error.HTTPError as err:
                if err.code not in RETRYABLE_HTTP_STATUS:
                    raise CutoutServiceError(f"{url}: HTTP {err.code} {err.reason}") from None
                last_error = f"HTTP {err.code} {err.reason}"
            # URLError, timeouts and resets are OSErrors; a body cut short is an HTTPException
            # (IncompleteRead). All are transient network faults, so retried.
            except (OSError, http.client.HTTPException) as err:
                reason = getattr(err, "reason", err)
                if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                    last_error = f"timed out after {self.timeout_s:g}s"
                else:
                    last_error = str(reason) or type(reason).__name__
            if attempt < self.max_attempts:
                time.sleep(delay)
                delay *= 2
        raise CutoutServiceError(f"{url}: failed after {self.max_attempts} attempts (last: {last_error})")


def _read_body(response: http.client.HTTPResponse, deadline: float) -> bytes:
    """The whole body, or TimeoutError once the deadline passes. Each socket read may only wait
    for the time left: with a fixed per-read timeout, a byte every few seconds never times out."""
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)  # http.client keeps it private
    chunks = []
    while True:
        time_left = deadline - time.monotonic()
        if time_left <= 0:
            raise TimeoutError("timed out")
        if sock is not None:
            sock.settimeout(time_left)
        chunk = response.read1(64 * 1024)  # one socket read at most, so the check above runs often
        if not chunk:
            break
        chunks.append(chunk)
    body = b"".join(chunks)
    if response.length:  # read1 answers b"" when the connection closes early, it does not raise
        raise http.client.IncompleteRead(body, response.length)
    return body


def _check_fits_payload(url: str, payload: bytes) -> None:
    try:
        with fits.open(io.BytesIO(payload)) as hdul:
            hdul.verify("exception")
            if hdul[0].data is None or hdul[0].data.ndim not in (2, 3):
                raise ValueError("no image in the primary HDU")
    except Exception as err:  # anything astropy cannot read as an image is a bad payload
        raise CutoutServiceError(f"{url}: bad payload, not a FITS cutout "
                                 f"({len(payload)} bytes starting {payload[:40]!r}): {err}") from None


def download_cutouts(catalog: pd.DataFrame, client: LegacySurveyClient, layer: str, pixel_scale_arcsec: float,
                     size_pixels: int, bands: str | None = None) -> pd.DataFrame:
    """Fetch a cutout for every catalogue row. A position the service cannot serve is recorded
    as failed with its reason; the others go on. Returns the manifest."""
    manifest = []
    for row in tqdm(catalog.itertuples(index=False), total=len(catalog), desc=f"fetching {layer}",
                    unit="cutout", disable=None):
        entry = {"object_id": row.object_id}
        try:
            path = client.fetch(row.ra_deg, row.dec_deg, layer, pixel_scale_arcsec, size_pixels, bands)
            entry.update(path=str(path), status="ok", reason="")
        except (CutoutServiceError, CutoutError) as err:
            entry.update(path="", status="failed", reason=str(err))
        manifest.append(entry)
    return pd.DataFrame(manifest, columns=["object_id", "path", "status", "reason"])
