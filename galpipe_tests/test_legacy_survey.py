"""The Legacy Survey cutout client against a real HTTP server on 127.0.0.1 serving FITS files
the test makes: success and caching, retries on 500, timeouts, bad payloads, 404."""

import io
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from galpipe.cutouts import read_cutout
from galpipe.sources.legacy_survey import CutoutServiceError, LegacySurveyClient, download_cutouts


def _fits_bytes(size: int, bands: str) -> bytes:
    hdu = fits.PrimaryHDU(np.ones((len(bands), size, size), dtype=np.float32))
    hdu.header["BANDS"] = bands
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return buffer.getvalue()


class FakeViewer(BaseHTTPRequestHandler):
    """Behaves by declination: dec=1 fails twice with 500 then works, dec=2 is slow, dec=3
    answers HTML, dec=4 is 404, dec=5 always 500; anything else works."""

    requests: list[str] = []
    failures_left: dict[str, int] = {}

    def do_GET(self):
        FakeViewer.requests.append(self.path)
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        dec = round(float(query["dec"][0]))
        if dec == 1 and FakeViewer.failures_left.setdefault(self.path, 2) > 0:
            FakeViewer.failures_left[self.path] -= 1
            return self._send(500, b"busy", "text/plain")
        if dec == 2:
            time.sleep(1.0)
        if dec == 3:
            return self._send(200, b"<html>no such layer</html>", "text/html")
        if dec == 4:
            return self._send(404, b"not found", "text/plain")
        if dec == 5:
            return self._send(500, b"down", "text/plain")
        self._send(200, _fits_bytes(int(query["size"][0]), query["bands"][0]), "application/fits")

    def _send(self, code, body, content_type):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # the client gave up (timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def viewer():
    FakeViewer.requests = []
    FakeViewer.failures_left = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeViewer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/viewer"
    server.shutdown()
    server.server_close()


def _client(url, tmp_path, **kwargs):
    return LegacySurveyClient(base_url=url, cache_dir=tmp_path / "cache", timeout_s=0.3, backoff_s=0.01, **kwargs)


def test_fetch_writes_a_valid_cutout_and_caches_it(viewer, tmp_path):
    client = _client(viewer, tmp_path)
    path = client.fetch(30.0, 0.0, "des-dr1", 0.263, 41)
    cutout = read_cutout(path, expected_bands="gri", expected_shape=(41, 41))
    assert cutout.pixels.shape == (3, 41, 41)
    assert "layer=des-dr1" in FakeViewer.requests[0] and "pixscale=0.263" in FakeViewer.requests[0]
    assert client.fetch(30.0, 0.0, "des-dr1", 0.263, 41) == path
    assert len(FakeViewer.requests) == 1  # the second call came from the cache


def test_server_errors_are_retried(viewer, tmp_path):
    path = _client(viewer, tmp_path).fetch(30.0, 1.0, "sdss", 0.396, 21)
    assert path.is_file() and len(FakeViewer.requests) == 3


def test_persistent_500_gives_up_naming_the_url(viewer, tmp_path):
    with pytest.raises(CutoutServiceError, match=r"dec=5\.0+.*failed after 3 attempts.*HTTP 500"):
        _client(viewer, tmp_path, max_attempts=3).fetch(30.0, 5.0, "sdss", 0.396, 21)


def test_timeout_is_reported_with_the_url(viewer, tmp_path):
    with pytest.raises(CutoutServiceError, match=r"127\.0\.0\.1.*dec=2\.0+.*timed out after 0\.3s"):
        _client(viewer, tmp_path, max_attempts=2).fetch(30.0, 2.0, "sdss", 0.396, 21)


def test_bad_payload_is_rejected_and_not_cached(viewer, tmp_path):
    client = _client(viewer, tmp_path)
    with pytest.raises(CutoutServiceError, match=r"dec=3\.0+.*bad payload, not a FITS cutout.*<html>"):
        client.fetch(30.0, 3.0, "sdss", 0.396, 21)
    assert not list((tmp_path / "cache").glob("*.fits"))


def test_client_errors_are_not_retried(viewer, tmp_path):
    with pytest.raises(CutoutServiceError, match="HTTP 404"):
        _client(viewer, tmp_path).fetch(30.0, 4.0, "sdss", 0.396, 21)
    assert len(FakeViewer.requests) == 1


def test_download_cutouts_records_failures_and_goes_on(viewer, tmp_path):
    catalog = pd.DataFrame({"object_id": ["ok1", "html", "ok2", "gone"], "ra_deg": [30.0, 30.0, 31.0, 30.0],
                            "dec_deg": [0.0, 3.0, 0.0, 4.0]})
    manifest = download_cutouts(catalog, _client(viewer, tmp_path), "sdss", 0.396, 21)
    assert manifest.status.tolist() == ["ok", "failed", "ok", "failed"]
    assert "bad payload" in manifest.reason[1] and "HTTP 404" in manifest.reason[3]


def test_legacy_survey_as_the_target_of_the_pipeline(viewer, tmp_path):
    """The raw_cutouts asset fetches through the client; a position the service cannot serve
    is counted as failed and named, the rest are validated at DES's size."""
    from dagster import AssetKey, materialize

    from galpipe.catalogs import write_parquet
    from galpipe.defs.assets import ASSETS
    from galpipe.defs.resources import SurveySource
    from galpipe.definitions import build_resources

    positions = tmp_path / "positions.parquet"
    write_parquet(pd.DataFrame({"object_id": ["a", "b", "c"], "ra_deg": [30.0, 30.1, 30.2],
                                "dec_deg": [0.0, 4.0, -0.5]}), positions)
    target = SurveySource(kind="legacy_survey", instrument="des", layer="des-dr1", base_url=viewer,
                          catalog_path=str(positions), timeout_s=2.0)
    result = materialize(ASSETS, resources=build_resources("tiny", data_dir=str(tmp_path / "data"), target=target),
                         selection=[AssetKey(["target", "catalog"]), AssetKey(["target", "raw_cutouts"])])
    manifest = result.output_for_node("target__raw_cutouts")
    assert manifest.status.tolist() == ["ok", "failed", "ok"]
    assert "HTTP 404" in manifest.reason[1] and "dec=4.0" in manifest.reason[1]
    assert set(manifest.height_px[manifest.status == "ok"]) == {153}  # 40" at 0.263"/px
    assert all("layer=des-dr1" in r and "pixscale=0.263" in r for r in FakeViewer.requests)
