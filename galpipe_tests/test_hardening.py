"""Hostile and careless input: planted pickles never run, bf16 never reaches probabilities, one
bad image never ends a job, concurrent and killed runs leave nothing broken, a copied project
keeps to its own files, and argument mistakes end in one line before any work."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits
from mlflow import MlflowClient
from PIL import Image

import galpipe.hardware
from galpipe.cli import main
from galpipe.cutouts import CutoutError
from galpipe.experiment.protocol import Recorder
from galpipe.hardware import autocast
from galpipe.models import build_model
from galpipe.prediction import Classifier, predict_cutouts
from galpipe.preprocessing import build_model_inputs, model_input
from galpipe.tracking import ModelRegistryError, Tracker, fail_stale_runs, load_registered_model
from galpipe.training import TrainConfig, _save_checkpoint, predict_proba, train_classifier
from galpipe.transfer import LabelledSample

PYTHON = sys.executable
EXAMPLE = np.zeros((1, 3, 69, 69), np.float32)


class Payload:
    """Unpickling this creates `marker`: harmless, but proof that the file's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _tracker(root: Path, experiment="hardening") -> Tracker:
    return Tracker(f"sqlite:///{root}/mlruns/mlflow.db", str(root / "mlruns" / "artifacts"), experiment)


def _register(tracker: Tracker, name="galpipe-t-des", seed=0) -> str:
    with tracker.run("model", {}, {}) as run_id:
        uri = tracker.log_and_register_model(run_id, build_model("compact", seed=seed), EXAMPLE, name).uri
    return uri


def _images(n, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (n, 3, 69, 69)).astype(np.float32)


# 1. No code execution from model files

def test_models_round_trip_without_pickle_and_still_load_in_mlflow_pyfunc(tmp_path):
    tracker = _tracker(tmp_path)
    uri = _register(tracker)
    x = _images(20)
    expected = predict_proba(build_model("compact", seed=0), x)
    np.testing.assert_array_equal(predict_proba(load_registered_model(tracker.tracking_uri, uri), x), expected)
    stored = {p.name for p in (tmp_path / "mlruns").rglob("*") if p.is_file()}
    assert {"weights.safetensors", "architecture.json"} <= stored
    assert not {n for n in stored if n.endswith((".pth", ".pkl", ".pt"))}
    served = mlflow.pyfunc.load_model(uri).predict(x)  # MLflow's own loader, as `mlflow models serve` uses
    np.testing.assert_allclose(served, expected, atol=1e-6)


def test_logging_a_model_shows_no_mlflow_warning_about_what_galpipe_leaves_out_on_purpose(tmp_path):
    # No input example (its check cost 0.09 s a run) and no type hints (an array is all it takes): the
    # signature says what the model takes. MLflow warned of both for every model, two lines each.
    for seed in range(2):  # each model logged, not just the first (MLflow's own filter is "once")
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            _register(_tracker(tmp_path), seed=seed)
        texts = [str(w.message) for w in shown]
        assert not [t for t in texts if "input example was not provided" in t or "Add type hints" in t], texts


def test_a_planted_pickle_in_a_registered_model_never_runs(tmp_path):
    tracker = _tracker(tmp_path)
    marker = tmp_path / "payload-ran"
    # A model logged the old way (a pickled module), then its file replaced by a payload.
    with tracker.run("old-style", {}, {}) as run_id, mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(build_model("compact"), name="model", serialization_format="pickle",
                                        pip_requirements=["torch"])
    old = mlflow.register_model(info.model_uri, "galpipe-old-des")
    pickled = next((tmp_path / "mlruns").rglob("model.pth"))
    torch.save(Payload(marker), pickled)
    with pytest.raises(ModelRegistryError, match="does not unpickle"):
        load_registered_model(tracker.tracking_uri, f"models:/galpipe-old-des/{old.version}")
    # A galpipe model whose weights file was replaced by a pickle.
    uri = _register(tracker)
    weights = next(p for p in (tmp_path / "mlruns").rglob("weights.safetensors"))
    torch.save(Payload(marker), weights)
    with pytest.raises(ModelRegistryError, match="weights.safetensors: cannot load the weights of compact"):
        load_registered_model(tracker.tracking_uri, uri)
    assert not marker.exists()
    torch.load(pickled, weights_only=False)  # the control: the planted file does run code when unpickled
    assert marker.exists()


def test_a_planted_pickle_as_a_checkpoint_never_runs(tmp_path):
    marker, checkpoint = tmp_path / "payload-ran", tmp_path / "run.pt"
    torch.save({"model": Payload(marker), "fingerprint": "x"}, checkpoint)
    x = _images(40)
    y = np.arange(40) % 2
    config = TrainConfig(max_epochs=1, batch_size=16, device="cpu")
    with pytest.warns(UserWarning, match="checkpoint not loaded"):
        history = train_classifier(build_model("compact", seed=0), x, np.arange(30), y[:30], np.arange(30, 40),
                                   y[30:], config, checkpoint)
    assert len(history) == 1 and not marker.exists()


# 2. bf16 only where it is asked for, never in probabilities

@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    monkeypatch.setattr(galpipe.hardware, "cpu_has_native_bf16", lambda: native)  # whatever this CPU has
    assert TrainConfig(device="cpu").precision == ("bf16" if native else "fp32")
    assert TrainConfig(device="cpu", precision="fp32").precision == "fp32"  # an explicit choice is kept


def test_probabilities_are_fp32_even_where_bf16_is_native(monkeypatch, tmp_path):
    monkeypatch.setattr(galpipe.hardware, "cpu_has_native_bf16", lambda: True)  # whatever this CPU has
    assert TrainConfig(device="cpu").precision == "bf16"  # training would use it
    model = build_model("compact", seed=0).eval()
    x = _images(470)
    with torch.no_grad():
        reference = torch.sigmoid(model(torch.from_numpy(x))).numpy()
        with autocast("cpu", "bf16"):
            quantised = torch.sigmoid(model(torch.from_numpy(x)).float()).numpy()
    # Through the test evaluation every fine-tuning run makes, not predict_proba's own default.
    recorder = Recorder(_tracker(tmp_path), {}, tmp_path, log=lambda line: None)
    sample = LabelledSample(np.array([f"g{i}" for i in range(470)]), np.arange(470), np.arange(470) % 2)
    with recorder.tracker.run("evaluation", {}, {}) as run_id:
        probability = recorder.evaluate(run_id, model, x, sample, "test", "bf16 check")["probability"]
    np.testing.assert_allclose(probability, reference, atol=1e-5)
    # The control: bf16 outputs of an untrained model fall on a few values; fp32 keeps them apart.
    assert len(np.unique(quantised)) < 50 < len(np.unique(probability))


def test_training_runs_the_bf16_path_on_any_cpu():
    x = _images(64)
    y = np.arange(64) % 2
    x[y == 1, :, 30:39, 30:39] += 3.0  # something to learn
    config = TrainConfig(max_epochs=2, batch_size=16, device="cpu", precision="bf16", augment=False)
    model = build_model("compact", seed=0)
    seen = set()  # what the first convolution computes in, while training
    hook = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_hook(
        lambda module, inputs, output: seen.add(output.dtype))
    history = train_classifier(model, x, np.arange(48), y[:48], np.arange(48, 64), y[48:], config)
    hook.remove()
    assert torch.bfloat16 in seen and all(np.isfinite(r["train_loss"]) for r in history)
    fp32 = build_model("compact", seed=0)
    fp32_history = train_classifier(fp32, x, np.arange(48), y[:48], np.arange(48, 64), y[48:],
                                    TrainConfig(max_epochs=2, batch_size=16, device="cpu", precision="fp32", augment=False))
    assert [r["train_loss"] for r in history] != [r["train_loss"] for r in fp32_history]  # bf16's rounding shows


# 3. One bad image never ends a job

def _fits(path, planes, bands):
    pixels = np.random.default_rng(0).normal(0, 1, (planes, 101, 101)).astype(np.float32)
    pixels[:, 45:56, 45:56] += 50
    header = fits.Header({"BANDS": bands, "PIXSCALE": 0.396})
    fits.PrimaryHDU(pixels, header=header).writeto(path)
    return path


def test_bad_images_are_named_and_the_rest_become_model_inputs(tmp_path):
    good = _fits(tmp_path / "good.fits", 3, "gri")
    two_bands = _fits(tmp_path / "two_bands.fits", 2, "gr")
    mislabelled = _fits(tmp_path / "header_says_gri.fits", 2, "gri")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (14000, 14000)).save(bomb)  # 196 Mpixel: Pillow refuses to decode it
    warned = tmp_path / "warned.png"
    Image.new("1", (10000, 10000)).save(warned)  # 100 Mpixel: Pillow only warns; galpipe refuses it
    grey16 = tmp_path / "grey16.png"
    Image.fromarray(np.full((64, 64), 30000, np.uint16)).save(grey16)
    for path, reason in ((two_bands, "missing band"), (mislabelled, "names 3 band"), (bomb, "too large"),
                         (warned, "too large")):
        with pytest.raises(CutoutError, match=reason) as caught:
            model_input(path, 40.0, "bands" if path.suffix == ".fits" else "colour", pixel_scale_arcsec=0.4)
        assert str(path) in str(caught.value)
    grey = model_input(grey16, 25.0, "colour", pixel_scale_arcsec=0.4)
    assert grey.mean() == pytest.approx(30000 / 65535, abs=0.01)  # scaled, not clipped to white
    manifest = pd.DataFrame({"object_id": ["good", "two", "mislabelled"], "status": "ok",
                             "path": [str(good), str(two_bands), str(mislabelled)]})
    index = build_model_inputs(manifest, tmp_path / "inputs.npy", 40.0)
    assert list(index.status) == ["ok", "failed", "failed"]
    assert np.load(tmp_path / "inputs.npy").shape == (1, 3, 69, 69)


def test_prediction_skips_a_cube_without_the_bands_and_classifies_the_rest(tmp_path):
    good = _fits(tmp_path / "good.fits", 3, "gri")
    bad = _fits(tmp_path / "two_bands.fits", 2, "gr")
    cutouts = pd.DataFrame({"object_id": ["a", "b", "c"], "path": [str(good), str(bad), str(good)]})
    classifier = Classifier("featured", "models:/none/1", build_model("compact", seed=0))
    summary = predict_cutouts([classifier], cutouts, tmp_path / "out.parquet", workers=0, progress=False)
    assert summary.n_written == 2 and [f["object_id"] for f in summary.failures] == ["b"]
    assert "missing band" in summary.failures[0]["reason"]
    assert list(pd.read_parquet(tmp_path / "out.parquet").object_id) == ["a", "c"]


# 5. Concurrency and interruption

def test_two_runs_saving_one_checkpoint_at_once_do_not_collide(tmp_path):
    model = build_model("compact", seed=0)
    optimiser = torch.optim.Adam(model.parameters())
    errors = []

    def save_many():
        try:
            for epoch in range(15):
                _save_checkpoint(tmp_path / "same.pt", model, optimiser, None, [], {"epoch": epoch}, epoch,
                                 np.random.default_rng(0), torch.Generator(), "f")
        except Exception as err:  # noqa: BLE001 - any error is the failure this test looks for
            errors.append(err)

    threads = [threading.Thread(target=save_many) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert torch.load(tmp_path / "same.pt", weights_only=True)["epoch"] == 14
    assert [p.name for p in tmp_path.iterdir()] == ["same.pt"]  # no temporary left behind


def _start_and_kill(script: str, ready: Path, cwd: Path) -> None:
    """Run `script` in a new Python process, wait until it writes `ready`, then kill -9 it."""
    process = subprocess.Popen([PYTHON, "-c", textwrap.dedent(script)], cwd=cwd)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert process.poll() is None, f"the script exited early with code {process.returncode}"
        assert time.monotonic() < deadline, "the script never got ready"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_runs_of_a_killed_process_are_marked_failed_on_the_next_start(tmp_path):
    from dagster import DagsterInstance, DagsterRunStatus

    from galpipe.recovery import fail_stale_runs as fail_stale_project_runs

    home = tmp_path / ".dagster_home"
    home.mkdir()
    ready = tmp_path / "ready"
    _start_and_kill(f"""
        import time
        from pathlib import Path
        from dagster import DagsterInstance, asset, materialize
        from galpipe.liveness import process_token
        from galpipe.tracking import Tracker

        @asset
        def slow():
            tracker = Tracker("sqlite:///mlruns/mlflow.db", "mlruns/artifacts", "hardening")
            with tracker.run("killed", {{}}, {{}}):
                Path({str(ready)!r}).touch()
                time.sleep(600)

        materialize([slow], instance=DagsterInstance.from_config({str(home)!r}),
                    tags={{"galpipe/process": process_token()}})
    """, ready, tmp_path)
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    live = _tracker(tmp_path)
    with live.run("alive", {}, {}) as alive_run:  # this process's own run is not touched
        with DagsterInstance.from_config(str(home)) as instance:
            (killed,) = instance.get_runs()
            assert killed.status == DagsterRunStatus.STARTED
            found = fail_stale_project_runs(instance, uri)
            assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
        assert len(found) == 2
        client = MlflowClient(uri)
        runs = {r.info.run_name: r for r in client.search_runs([live.experiment_id])}
        assert runs["killed"].info.status == "FAILED" and "killed?" in runs["killed"].data.tags["error"]
        assert client.get_run(alive_run).info.status == "RUNNING"
        assert fail_stale_runs(client) == []  # nothing more on the next start


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killing_predict_ends_its_reader_processes(tmp_path, decals_folder):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for k, path in enumerate(sorted((decals_folder / "images").glob("*.png"))[:5] * 60):
        shutil.copy(path, folder / f"{k:03d}.png")
    script = f"""
        import os, sys
        from galpipe.models import build_model
        from galpipe.prediction import Classifier, list_cutouts, predict_cutouts
        classifier = Classifier("ring", "models:/none/1", build_model("compact", seed=0), "colour", 40.0)
        def stall(record):  # hold the models back so the readers fill their pipes and block
            import time; time.sleep(600)
        cutouts = list_cutouts({str(folder)!r})
        cutouts.loc[3, "path"] = ""  # a failure in the first batch calls `stall`
        print(os.getpid(), flush=True)
        predict_cutouts([classifier], cutouts, {str(tmp_path / 'out.csv')!r}, batch_size=4,
                        pixel_scale_arcsec=0.262, on_failure=stall, progress=False, workers=2)
    """
    process = subprocess.Popen([PYTHON, "-c", textwrap.dedent(script)], cwd=tmp_path)
    deadline = time.monotonic() + 120
    while len(readers := [c for c in _children(process.pid) if _alive(c)]) < 2:
        assert process.poll() is None and time.monotonic() < deadline, "the readers never started"
        time.sleep(0.2)
    time.sleep(2)  # let them fill their pipes
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in readers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in readers if _alive(pid)]
    assert not (tmp_path / "out.csv").exists()


# 7. A project copied or moved keeps to its own files

def test_a_copied_project_writes_and_reads_only_its_own_mlruns(tmp_path):
    original = tmp_path / "original"
    first = _register(_tracker(original))
    before = sorted(p.relative_to(original) for p in (original / "mlruns").rglob("*"))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    tracker = _tracker(copy)
    second = _register(tracker, seed=1)
    assert sorted(p.relative_to(original) for p in (original / "mlruns").rglob("*")) == before
    client = MlflowClient(tracker.tracking_uri)
    for run in client.search_runs([tracker.experiment_id]):
        assert run.info.artifact_uri.startswith((copy / "mlruns").as_uri())
    moved = tmp_path / "moved"
    copy.rename(moved)
    shutil.rmtree(original)  # nothing of the original is left to read from
    moved_uri = f"sqlite:///{moved}/mlruns/mlflow.db"
    for uri, seed in ((first, 0), (second, 1)):
        np.testing.assert_array_equal(predict_proba(load_registered_model(moved_uri, uri), _images(5)),
                                      predict_proba(build_model("compact", seed=seed), _images(5)))


# 9. Argument mistakes end in one line, before any work

@pytest.mark.parametrize("args, message", [
    (["--threshold", "5"], "--threshold 5: a probability threshold lies in [0, 1]"),
    (["--batch-size", "0"], "--batch-size 0: give at least 1"),
    (["--threads", "0"], "--threads 0: give at least 1"),
    (["--pixel-scale", "-1"], "--pixel-scale -1: give a positive"),
    (["--tracking-uri", "sqlite:///mlrun/mlflow.db"], "no MLflow store at"),
])
def test_argument_mistakes_are_one_line_errors_before_any_work(tmp_path, capsys, decals_folder, args, message,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)  # restored after: later tests must not run in this folder
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").write_bytes(b"")
    argv = ["predict", "--model", "champion", "--folder", str(decals_folder / "images"), "--out", "out.csv", *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "mlrun").exists()  # no empty store made by mistake


def test_a_path_that_cannot_be_written_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "a_file"))  # the instance's folder cannot be made there
    monkeypatch.delenv("GALPIPE_PROJECT", raising=False)  # `galpipe run` sets it: put back as it was after
    assert main(["run", "--profile", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(tmp_path / "a_file") in err and len(err.splitlines()) == 1


def test_out_naming_a_folder_fails_before_any_work(tmp_path, capsys, decals_folder):
    (tmp_path / "catalogue.csv").mkdir()
    argv = ["predict", "--model", "champion", "--folder", str(decals_folder / "images"),
            "--out", str(tmp_path / "catalogue.csv"), "--tracking-uri", "sqlite:///nowhere.db"]
    assert main(argv) == 2
    assert "is a folder" in capsys.readouterr().err
