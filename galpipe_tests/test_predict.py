"""`galpipe predict` on the real DECaLS sample: a registered colour-mode model, real PNGs, bad
images named and counted while the rest are classified, and one-line errors for user mistakes."""

import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from galpipe.cli import main
from galpipe.cutouts import write_cutout_fits, write_cutout_stack
from galpipe.models import build_model
from galpipe.prediction import _TableWriter, list_cutouts, load_classifier, predict_cutouts
from galpipe.tracking import ModelRegistryError, Tracker


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """An MLflow store holding a colour-mode `ring` model (alias champion) and a band-mode one."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    tracker = Tracker(uri, str(root / "artifacts"), "predict-test")
    example = np.zeros((1, 3, 69, 69), np.float32)
    for mode in ("colour", "bands"):
        with tracker.run(f"ring-{mode}", {}, {}) as run_id:
            version = tracker.log_and_register_model(run_id, build_model("compact", seed=0), example,
                                                        f"galpipe-ring-{mode}",
                                                        {"task": "ring", "input_mode": mode, "field_arcsec": 40}).version
        tracker.set_alias(f"galpipe-ring-{mode}", "champion", version)
    return uri


def _predict(registry, *args):
    return main(["predict", "--tracking-uri", registry, "--pixel-scale", "0.262", "--experiment", "galpipe", *args])


def test_predicts_the_whole_decals_sample_from_its_catalogue(registry, decals_folder, tmp_path):
    out = tmp_path / "decals_morphology.parquet"
    (tmp_path / "decals_morphology.parquet.failed.csv").write_text("object_id,path,reason\nold,old.png,left by an earlier run\n")
    exit_code = _predict(registry, "--model", "champion", "--tasks", "ring", "--survey", "colour",
                         "--catalog", str(decals_folder / "catalog.csv"), "--id-column", "iauname",
                         "--image-column", "image", "--out", str(out))
    assert exit_code == 0
    catalog = pd.read_csv(decals_folder / "catalog.csv")
    predicted = pd.read_parquet(out)
    assert list(predicted.object_id) == list(catalog.iauname)  # every galaxy, in catalogue order
    assert predicted.p_ring.between(0, 1).all() and set(predicted.ring) <= {0, 1}
    assert predicted.p_ring.std() > 0  # the images reached the model, not one constant input
    assert not (tmp_path / "decals_morphology.parquet.failed.csv").exists()


def test_bad_images_are_named_and_the_rest_still_classified(registry, decals_folder, tmp_path, capsys):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    good = sorted((decals_folder / "images").glob("*.png"))[:12]
    for path in good:
        shutil.copy(path, folder / path.name)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png" * 50)
    (folder / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "tiny.png")  # wrong shape: 4x4 pixels
    nan_cube = np.ones((3, 64, 64), np.float32)
    nan_cube[1, 5, 5] = np.nan
    write_cutout_fits(folder / "nan.fits", nan_cube, "gri", 10.0, 0.0, 0.262)
    (folder / "notes").mkdir()
    (folder / "notes" / "galaxy.tif").write_bytes(b"II*\x00")  # not a kind galpipe reads: named, not passed over
    (folder / ".DS_Store").write_bytes(b"")  # hidden: not a user's data
    (folder / ".ipynb_checkpoints").mkdir()
    shutil.copy(good[0], folder / ".ipynb_checkpoints" / "copy.png")  # in a hidden folder: neither
    out = tmp_path / "morphology.csv"

    exit_code = _predict(registry, "--model", "models:/galpipe-ring-colour@champion", "--folder", str(folder),
                         "--out", str(out), "--batch-size", "5")  # several batches appended to the CSV

    assert exit_code == 0
    predicted = pd.read_csv(out)
    assert sorted(predicted.object_id) == sorted(p.stem for p in good)
    failed = pd.read_csv(tmp_path / "morphology.csv.failed.csv", dtype=str, keep_default_na=False)
    tif = str(folder / "notes" / "galaxy.tif")
    assert sorted(failed.object_id) == sorted(["corrupt", "empty", "nan", tif, "tiny"])
    reasons = dict(zip(failed.object_id, failed.reason))
    assert "corrupt" in reasons["corrupt"] and "too small" in reasons["tiny"] and "non-finite" in reasons["nan"]
    assert reasons[tif] == "not a FITS, JPEG or PNG file: not read"
    err = capsys.readouterr().err
    for name in ("corrupt.png", "empty.jpg", "tiny.png", "nan.fits"):
        assert f"skipped {folder / name}" in err
    assert f"skipped {tif}: not a FITS, JPEG or PNG file" in err
    assert "wrote 12 rows" in err and "skipped 5" in err


def test_threads_and_reader_processes_give_the_same_catalogue_in_the_same_order(registry, decals_folder, tmp_path,
                                                                                monkeypatch):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for path in sorted((decals_folder / "images").glob("*.png"))[:23]:
        shutil.copy(path, folder / path.name)
    (folder / "corrupt.png").write_bytes(b"not a png")
    cutouts = list_cutouts(folder=str(folder))
    classifier = load_classifier(registry, "models:/galpipe-ring-colour@champion")
    threads_before = torch.get_num_threads()
    tables = {}
    # One thread; three threads on 5 batches (more threads than this machine may have cores, and
    # batches finishing out of turn); reader processes.
    for name, threads, workers in (("1 thread", 1, 0), ("3 threads", 3, 0), ("2 readers", None, 2)):
        out = tmp_path / f"{name}.parquet"
        summary = predict_cutouts([classifier], cutouts, out, batch_size=5, pixel_scale_arcsec=0.262,
                                  progress=False, workers=workers, threads=threads)
        assert [f["object_id"] for f in summary.failures] == ["corrupt"]
        tables[name] = pd.read_parquet(out)
        assert torch.get_num_threads() == threads_before  # the threads' one core each is given back
    assert len(tables["1 thread"]) == 23 and list(tables["1 thread"].object_id) == sorted(tables["1 thread"].object_id)
    pd.testing.assert_frame_equal(tables["1 thread"], tables["3 threads"])
    pd.testing.assert_frame_equal(tables["1 thread"], tables["2 readers"])
    # Written a few rows at a time (appended CSV pieces, several Parquet row groups): the same catalogue.
    monkeypatch.setattr(_TableWriter, "ROWS_PER_WRITE", 4)
    for out in (tmp_path / "pieces.parquet", tmp_path / "pieces.csv"):
        predict_cutouts([classifier], cutouts, out, batch_size=5, pixel_scale_arcsec=0.262, progress=False, threads=3)
        pieces = pd.read_parquet(out) if out.suffix == ".parquet" else pd.read_csv(out, dtype={"object_id": str})
        pd.testing.assert_frame_equal(pieces, tables["1 thread"], check_dtype=out.suffix == ".parquet", atol=1e-6)
    # 24 images in 5 batches, each of 4 good rows or more: a row group each.
    assert pq.ParquetFile(tmp_path / "pieces.parquet").num_row_groups == 5


@pytest.mark.parametrize("args, message", [
    (["--model", "models:/galpipe-ring-colour@nope"], "no registered model 'models:/galpipe-ring-colour@nope'"),
    (["--model", "models:/no-such-model/1"], "no registered model 'models:/no-such-model/1'"),
    (["--model", "champion", "--model", "models:/galpipe-ring-colour/1", "--tasks", "ring", "--survey", "colour"],
     "two models for task(s) ['ring']"),
    (["--model", "champion", "--tasks", "ring", "--survey", "colour", "--workers", "-1"], "--workers -1: give 0"),
    (["--model", "champion", "--tasks", "ring", "--survey", "colour", "--out-format"], None),
])
def test_user_errors_exit_non_zero_with_one_line(registry, decals_folder, tmp_path, capsys, args, message):
    if message is None:  # an unknown option: argparse's usage error, status 2
        with pytest.raises(SystemExit) as exit_info:
            _predict(registry, *args, "--folder", str(decals_folder / "images"), "--out", str(tmp_path / "p.csv"))
        assert exit_info.value.code == 2
        return
    exit_code = _predict(registry, *args, "--folder", str(decals_folder / "images"), "--out", str(tmp_path / "p.csv"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_code == 2 and err[-1].startswith("galpipe predict: error: ") and message in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "p.csv").exists()


def test_missing_folder_wrong_suffix_and_a_model_that_cannot_read_colour_images(registry, decals_folder, tmp_path,
                                                                                  capsys):
    assert _predict(registry, "--model", "champion", "--tasks", "ring", "--survey", "colour",
                    "--folder", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.csv")) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert _predict(registry, "--model", "champion", "--tasks", "ring", "--survey", "colour",
                    "--folder", str(decals_folder / "images"), "--out", str(tmp_path / "p.txt")) == 2
    assert "must end in .parquet or .csv" in capsys.readouterr().err
    # A model trained on FITS bands cannot read colour PNGs: every image is named, then one line.
    folder = tmp_path / "three"
    folder.mkdir()
    for path in sorted((decals_folder / "images").glob("*.png"))[:3]:
        shutil.copy(path, folder / path.name)
    assert _predict(registry, "--model", "models:/galpipe-ring-bands/1", "--folder", str(folder),
                    "--out", str(tmp_path / "p.csv")) == 2
    err = capsys.readouterr().err
    assert err.count("skipped") >= 3 and "no cutout could be classified" in err
    assert "only feed a model in mode 'colour'" in err.strip().splitlines()[-1]


def test_a_folder_of_stacks_predicts_as_the_same_cutouts_one_file_each(registry, tmp_path):
    """Stacked cutouts (galpipe.cutouts) give each galaxy the probability its own file gives; a
    damaged stack is named and counted, the others classified."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:64, :64] - 32
    cubes = [(np.exp(-np.hypot(x, y) / rng.uniform(2, 8))[None] * rng.uniform(20, 200, (3, 1, 1))
              + rng.normal(0, 1, (3, 64, 64))).astype(np.float32) for _ in range(11)]
    ids = [f"g{k:02d}" for k in range(11)]
    singles, stacks = tmp_path / "singles", tmp_path / "stacks"
    singles.mkdir()
    stacks.mkdir()
    for object_id, cube in zip(ids, cubes):
        write_cutout_fits(singles / f"{object_id}.fits", cube, "gri", 10.0, 0.0, 0.262)
    write_cutout_stack(stacks / "a.stack.fits", ids[:6], cubes[:6], "gri", [10.0] * 6, [0.0] * 6, 0.262)
    write_cutout_stack(stacks / "b.stack.fits", ids[6:], cubes[6:], "gri", [10.0] * 5, [0.0] * 5, 0.262)
    (stacks / "broken.stack.fits").write_bytes(b"SIMPLE  =" + b" " * 100)
    classifier = load_classifier(registry, "models:/galpipe-ring-bands@champion")
    tables = {}
    for name, folder in (("singles", singles), ("stacks", stacks)):
        summary = predict_cutouts([classifier], list_cutouts(folder=str(folder)), tmp_path / f"{name}.parquet",
                                  batch_size=4, progress=False, threads=3)  # stacks read by 3 threads at once
        tables[name] = pd.read_parquet(tmp_path / f"{name}.parquet")
        failures = summary.failures
    assert [f["object_id"] for f in failures] == ["broken"] and "truncated cutout stack" in failures[0]["reason"]
    # A manifest older than its stack (another galaxy now in row 1) is caught where the pipeline asks.
    stale = list_cutouts(folder=str(stacks)).replace({"object_id": {"g01": "g99"}})
    summary = predict_cutouts([classifier], stale, tmp_path / "stale.parquet", progress=False, check_object_ids=True)
    assert [f["object_id"] for f in summary.failures] == ["g99", "broken"]
    assert "holds galaxy g01, not g99" in summary.failures[0]["reason"] and summary.n_written == 10
    # A catalogue names galaxies of a stack by their address, relative to the catalogue's folder.
    pd.DataFrame({"name": ["x", "y"], "image": ["stacks/b.stack.fits#4", "stacks/a.stack.fits#0"]}).to_csv(
        tmp_path / "sample.csv", index=False)
    listed = list_cutouts(catalog=str(tmp_path / "sample.csv"), id_column="name", image_column="image")
    predict_cutouts([classifier], listed, tmp_path / "sample.parquet", progress=False, workers=0)
    # (batches of another size: the model's float sums may differ in the last bits)
    assert pd.read_parquet(tmp_path / "sample.parquet").p_ring.tolist() == pytest.approx(
        [tables["singles"].p_ring[10], tables["singles"].p_ring[0]], rel=1e-5)
    assert list(tables["stacks"].object_id) == ids and tables["stacks"].path[7].endswith("b.stack.fits#1")
    np.testing.assert_array_equal(tables["stacks"].p_ring, tables["singles"].p_ring)
    assert tables["stacks"].p_ring.std() > 0


def test_a_colour_model_gets_its_inputs_rendered_as_its_version_says(tmp_path):
    """A colour-mode model trained on viewer-rendered FITS (colour_rendering tag) is given FITS
    cutouts rendered that way by galpipe predict, not as Lupton composites."""
    from galpipe.preprocessing import model_input
    from galpipe.training import predict_proba

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, str(tmp_path / "artifacts"), "rendering-test")
    model = build_model("compact", seed=0)
    with torch.no_grad():  # an untrained network answers ~0.5 to anything: make its answer depend on the input
        [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].weight.mul_(1000)
    with tracker.run("viewer", {}, {}) as run_id:
        tracker.log_and_register_model(run_id, model, np.zeros((1, 3, 69, 69), np.float32), "galpipe-ring-viewer",
                                       {"task": "ring", "input_mode": "colour", "field_arcsec": 20,
                                        "colour_rendering": "sdss_viewer"})
    classifier = load_classifier(uri, "models:/galpipe-ring-viewer/1")
    assert classifier.inputs == ("colour", 20.0, "sdss_viewer")
    with tracker.run("unknown", {}, {}) as run_id:  # a rendering this galpipe does not know: said before any work
        tracker.log_and_register_model(run_id, model, np.zeros((1, 3, 69, 69), np.float32), "galpipe-ring-viewer",
                                       {"task": "ring", "input_mode": "colour", "colour_rendering": "infrared_dream"})
    with pytest.raises(ModelRegistryError, match="colour_rendering 'infrared_dream' is not one this galpipe knows"):
        load_classifier(uri, "models:/galpipe-ring-viewer/2")
    rng = np.random.default_rng(0)
    for k in range(3):
        write_cutout_fits(tmp_path / f"g{k}.fits", rng.gamma(2, 0.5, (3, 64, 64)).astype(np.float32), "gri", 1, 0, 0.396)
    predict_cutouts([classifier], list_cutouts(folder=str(tmp_path)), tmp_path / "out.parquet", progress=False, workers=0)
    expected = {mode: predict_proba(classifier.module, np.stack([
        model_input(tmp_path / f"g{k}.fits", 20.0, "colour", colour_rendering=mode) for k in range(3)]))
        for mode in ("sdss_viewer", "lupton")}
    predicted = pd.read_parquet(tmp_path / "out.parquet").p_ring.to_numpy()
    np.testing.assert_allclose(predicted, expected["sdss_viewer"], rtol=1e-4, atol=1e-6)
    assert np.abs(predicted - expected["lupton"]).max() > 0.01


def test_models_of_two_input_modes_classify_the_galaxies_both_can_use(tmp_path):
    """Two models, one on bands and one on colour composites: a galaxy only one mode can use (no
    positive signal at the centre is a bands-mode failure) is skipped, with its reason, and both
    models classify the same other galaxies, in order."""
    from galpipe.cutouts import read_cutouts
    from galpipe.prediction import _CutoutBatches
    from galpipe.preprocessing import NO_SIGNAL, model_inputs

    rng = np.random.default_rng(0)
    paths = []
    for k in range(5):
        cube = rng.gamma(2, 0.5, (3, 64, 64)).astype(np.float32)
        if k == 1:
            cube[:] = -1.0
        paths.append(str(tmp_path / f"g{k}.fits"))
        write_cutout_fits(paths[-1], cube, "gri", 1, 0, 0.396)
    paths.append(str(tmp_path / "absent.fits"))
    modes = [("bands", 20.0, "lupton"), ("colour", 20.0, "lupton")]
    reasons, inputs = _CutoutBatches(paths, modes, None, batch_size=64)[0]
    assert reasons[1] == NO_SIGNAL and "not found" in reasons[5] and reasons.count("") == 4
    usable = [p for p, reason in zip(paths, reasons) if not reason]
    for mode, field, rendering in modes:
        expected = np.stack(model_inputs(read_cutouts(usable), field, mode, colour_rendering=rendering))
        np.testing.assert_array_equal(inputs[(mode, field, rendering)], expected)
