"""The Legacy Survey cutout client against a real HTTP server on 127.0.0.1 serving FITS files
the test makes: success and caching, retries on 500 and on bodies cut short, timeouts (also for
a server that drips bytes), bad payloads, 404."""

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
    y, x = np.mgrid[:size, :size] - size // 2
    galaxy = 1.0 + 10.0 * np.exp(-0.5 * (x**2 + y**2) / 4.0**2)  # a sky of 1 and a galaxy in the middle
    hdu = fits.PrimaryHDU(np.repeat(galaxy[None], len(bands), axis=0).astype(np.float32))
    hdu.header["BANDS"] = bands
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return buffer.getvalue()


class FakeViewer(BaseHTTPRequestHandler):
    """Behaves by declination: dec=1 fails twice with 500 then works, dec=2 is slow, dec=3
    answers HTML, dec=4 is 404, dec=5 always 500, dec=6 cuts the body once then works, dec=7
    always cuts the body, dec=8 drips a byte every 0.2 s; anything else works."""

    requests: list[str] = []
    failures_left: dict[str, int] = {}
    stopping = threading.Event()  # set at teardown so slow handlers end and can be joined

    def do_GET(self):
        FakeViewer.requests.append(self.path)
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        dec = round(float(query["dec"][0]))
        if dec == 1 and FakeViewer.failures_left.setdefault(self.path, 2) > 0:
            FakeViewer.failures_left[self.path] -= 1
            return self._send(500, b"busy", "text/plain")
        if dec == 2:
            FakeViewer.stopping.wait(1.0)
        if dec == 3:
            return self._send(200, b"<html>no such layer</html>", "text/html")
        if dec == 4:
            return self._send(404, b"not found", "text/plain")
        if dec == 5:
            return self._send(500, b"down", "text/plain")
        if dec == 8:
            return self._drip()
        payload = _fits_bytes(int(query["size"][0]), query["bands"][0])
        if dec == 6 and FakeViewer.failures_left.setdefault(self.path, 1) > 0:
            FakeViewer.failures_left[self.path] -= 1
            return self._send(200, payload, "application/fits", cut_after=len(payload) // 3)
        if dec == 7:
            return self._send(200, payload, "application/fits", cut_after=len(payload) // 3)
        self._send(200, payload, "application/fits")

    def _send(self, code, body, content_type, cut_after=None):
        """Announces the full length; with cut_after, closes the connection after that many bytes."""
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body[:cut_after])
        except BrokenPipeError:  # the client gave up (timeout test)
            pass

    def _drip(self):
        """A megabyte announced, one byte sent every 0.2 s: each read is quick, the body endless."""
        self.send_response(200)
        self.send_header("Content-Type", "application/fits")
        self.send_header("Content-Length", str(10**6))
        self.end_headers()
        give_up = time.monotonic() + 30  # so a client without a deadline fails instead of hanging
        while not FakeViewer.stopping.wait(0.2) and time.monotonic() < give_up:
            try:
                self.wfile.write(b"S")
            except (BrokenPipeError, ConnectionResetError):  # the client gave up
                return

    def log_message(self, *args):
        pass


@pytest.fixture
def viewer():
    FakeViewer.requests = []
    FakeViewer.failures_left = {}
    FakeViewer.stopping.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeViewer)
    server.daemon_threads = False  # so server_close() joins the handler threads
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/viewer"
    FakeViewer.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join()


def _client(url, tmp_path, **kwargs):
    # A generous timeout, so that a slow answer on a busy machine is not retried and the request
    # counts below hold; the timeout tests set their own.
    settings = {"timeout_s": 5.0, "backoff_s": 0.01} | kwargs
    return LegacySurveyClient(base_url=url, cache_dir=tmp_path / "cache", **settings)


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
        _client(viewer, tmp_path, max_attempts=2, timeout_s=0.3).fetch(30.0, 2.0, "sdss", 0.396, 21)


def test_a_body_cut_short_is_retried(viewer, tmp_path):
    path = _client(viewer, tmp_path).fetch(30.0, 6.0, "sdss", 0.396, 21)
    assert len(FakeViewer.requests) == 2
    assert read_cutout(path, expected_bands="gri", expected_shape=(21, 21)).pixels.shape == (3, 21, 21)


def test_bodies_always_cut_short_fail_each_galaxy_and_the_rest_go_on(viewer, tmp_path):
    catalog = pd.DataFrame({"object_id": ["a", "b", "c"], "ra_deg": [30.0, 31.0, 32.0],
                            "dec_deg": [7.0, 7.0, 7.0]})
    manifest = download_cutouts(catalog, _client(viewer, tmp_path, max_attempts=2), "sdss", 0.396, 21)
    assert manifest.object_id.tolist() == ["a", "b", "c"]
    assert manifest.status.tolist() == ["failed"] * 3
    assert all("failed after 2 attempts" in r and "IncompleteRead" in r for r in manifest.reason)
    assert len(FakeViewer.requests) == 6
    assert not list((tmp_path / "cache").glob("*.fits"))


def test_a_dripping_server_times_out_within_the_deadline_per_attempt(viewer, tmp_path):
    client = _client(viewer, tmp_path, timeout_s=1, max_attempts=2, backoff_s=0)
    start = time.monotonic()
    with pytest.raises(CutoutServiceError, match=r"dec=8\.0+.*failed after 2 attempts.*timed out after 1s"):
        client.fetch(30.0, 8.0, "sdss", 0.396, 21)
    # 2 attempts of 1 s; with a timeout per read it runs until the server gives up (30 s)
    assert time.monotonic() - start < 15
    assert len(FakeViewer.requests) == 2


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
    from galpipe.definitions import all_assets, build_resources
    from galpipe.defs.surveys import LegacySurvey

    positions = tmp_path / "positions.parquet"
    write_parquet(pd.DataFrame({"object_id": ["a", "b", "c"], "ra_deg": [30.0, 30.1, 30.2],
                                "dec_deg": [0.0, 4.0, -0.5]}), positions)
    target = LegacySurvey(instrument="des", layer="des-dr1", base_url=viewer,
                          catalog_path=str(positions), timeout_s=2.0)
    result = materialize(all_assets("tiny"), resources=build_resources("tiny", data_dir=str(tmp_path / "data"), target=target),
                         selection=[AssetKey("target_catalog"), AssetKey("target_raw_cutouts"),
                                    AssetKey("target_model_inputs")])
    manifest = result.output_for_node("target_raw_cutouts")
    # The viewer's FITS carry no PIXSCALE (as the real one's): the scale asked for frames them.
    inputs = result.output_for_node("target_model_inputs")
    assert inputs.index.status.tolist() == ["ok", "failed", "ok"], inputs.index.reason.tolist()
    assert manifest.status.tolist() == ["ok", "failed", "ok"]
    assert "HTTP 404" in manifest.reason[1] and "dec=4.0" in manifest.reason[1]
    assert set(manifest.height_px[manifest.status == "ok"]) == {153}  # 40" at 0.263"/px
    assert all("layer=des-dr1" in r and "pixscale=0.263" in r for r in FakeViewer.requests)
