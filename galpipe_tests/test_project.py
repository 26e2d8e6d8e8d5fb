"""Project files: the shipped ones load as the built-in profiles were, and every mistake in one is
an error naming the file and the key before any work."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from galpipe.framing import CentralFraction, Framing, FramingError, field_from_text, field_text
from galpipe.preprocessing import build_model_inputs, model_input
from galpipe.project import ProjectError, load_project, shipped_projects
from galpipe_tests.conftest import galpipe_in, write_project


def test_the_shipped_projects_load_with_their_experiments_and_partitions():
    from galpipe.definitions import build_definitions

    assert {"tiny", "small", "adapt", "paper", "gz2_spirals"} <= set(shipped_projects())
    small = load_project("small")
    assert (small.experiment, small.tasks, small.source.name, small.target.name) == \
        ("galpipe-small", ("featured", "edge_on", "bar"), "sdss", "des")
    gz2 = load_project("gz2_spirals")
    assert gz2.tasks == ("spiral",) and gz2.target.name == "gz2" and gz2.profile.input_mode == "colour"
    assert gz2.source.get_framing().kind == "per_galaxy" and gz2.target.get_framing().kind == "whole_image"
    # Both show the central half of Galaxy Zoo 2's 8.48 R90 (chosen on the development split).
    assert (gz2.target.central_fraction, gz2.source.field_per_size, gz2.profile.finetune_max_epochs) == (0.5, 4.24, 100)
    # The partitions are the project's own tasks and budgets, not every profile's.
    job = build_definitions("gz2_spirals").resolve_job_def("finetuning_job")
    assert sorted(job.partitions_def.get_partition_keys()) == sorted(f"{b}|spiral" for b in gz2.profile.label_budgets)


def test_the_shipped_transfer_project_is_the_one_checked_on_the_test_galaxies():
    """gz2_spirals_transfer quotes the results of the check declared in bench/learners_real: the two
    must resolve to the same settings, apart from the names."""
    from dataclasses import replace

    shipped = load_project("gz2_spirals_transfer")
    checked = load_project(Path(__file__).resolve().parents[1] / "bench/learners_real/gz2_resnet_neighbours_seeing_survey.yaml")
    assert (shipped.profile.architecture, shipped.profile.pretraining_augmentation) == ("resnet18_w32", "survey")
    assert shipped.profile.sky.neighbours and shipped.source.seeing_spread == 0.15
    renamed = replace(shipped, name=checked.name, experiment=checked.experiment, path=checked.path,
                      profile=replace(shipped.profile, name=checked.profile.name))
    assert renamed == checked


@pytest.mark.parametrize("changes, message", [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"sky": {"n_galaxies": 10, "colour": 3}}, "unknown key 'sky.colour'"),
    ({"target": {"kind": "simulated", "instrument": "des", "pixel_size": 1}}, "unknown key 'target.pixel_size'"),
    ({"source": {"kind": "telescope"}}, "source.kind: unknown 'telescope'"),
    ({"tasks": ["merger"]}, "unknown task 'merger'"),
    ({"label_budgets": [0, 7]}, "label_budgets: unknown '7'"),
    ({"strategies": ["full", "magic"]}, "strategies: unknown 'magic'"),
    ({"seeds": 3}, "seeds: expected a list"),
    ({"target": {"framing": "zoomed"}}, "target.framing: framing 'zoomed'"),
    ({"source": {"framing": "whole_image"}}, "a simulated survey can be framed fixed or per_galaxy"),
    ({"source": {"framing": "per_galaxy", "size_column": "radius"}}, "source.size_column: no column 'radius'"),
    ({"target": {"field_arcsec": "wide"}}, "target.field_arcsec: Input should be a valid number"),
    ({"target": {"instrument": "hsc"}}, "target.instrument: unknown instrument 'hsc'"),
    ({"name": "../elsewhere"}, "name: '../elsewhere': letters, digits"),
    ({"sky": {"n_galaxies": "160"}}, "sky.n_galaxies: expected a whole number, got '160'"),
    ({"patience": 2.5}, "patience: expected a whole number, got 2.5"),
    ({"seeds": [0, 0.5]}, "seeds: expected whole numbers"),
    ({"tasks": ["bar", "bar"]}, "tasks: ['bar', 'bar'] names one twice"),
    ({"label_budgets": [0, 25, 25]}, "label_budgets: [0, 25, 25] names one twice"),
    ({"seeds": []}, "seeds: give at least one"),
    ({"test_fraction": 1.5}, "test_fraction: must be between 0 and 1"),
    ({"batch_size": 0}, "batch_size: must be at least 1"),
    ({"precision": "fp8"}, "precision: unknown 'fp8'"),
    ({"schedule": "cosine"}, "schedule: unknown 'cosine'"),
    ({"pretraining_augmentation": "mirror"}, "pretraining_augmentation: unknown 'mirror'"),
    ({"colour_rendering": "hubble_palette"}, "colour_rendering: unknown 'hubble_palette'"),
    ({"sky": {"n_galaxies": 10, "neighbours": "yes"}}, "sky.neighbours: expected true or false"),
    ({"sky": {"n_galaxies": 10, "merger_fraction": 1.5}}, "sky.merger_fraction: must be between 0 and 1"),
    ({"source": {"seeing_spread": -0.1}}, "source.seeing_spread: must be 0 or more"),
    ({"source": {"label_false_positive_fraction": 1.5}}, "source.label_false_positive_fraction: must be between 0 and 1"),
    ({"learning_rate": 0}, "learning_rate: must be positive"),
    ({"adaptation_budgets": [0, 50]}, "adaptation_budgets: ['50'] not among label_budgets"),
    ({"strategies": ["head_only"], "adaptation_strategies": ["self_training"], "selection_strategies": ["head_only"]},
     "strategies: strategy 'self_training' learns from 'full'"),
    ({"strategies": ["full", "self_training_scratch"]}, "strategies: strategy 'self_training_scratch' learns from 'scratch'"),
])
def test_every_mistake_in_a_project_file_is_named(tmp_path, changes, message):
    path = write_project(tmp_path, "tiny", **changes)
    with pytest.raises(ProjectError) as caught:
        load_project(path)
    assert path in str(caught.value) and message in str(caught.value)


def test_an_empty_pretraining_augmentation_is_the_fine_tunings(tmp_path):
    chosen = lambda value: load_project(write_project(tmp_path, "tiny", pretraining_augmentation=value))  # noqa: E731
    assert chosen(None).profile.pretraining_augmentation == chosen("").profile.pretraining_augmentation == ""
    assert chosen("survey").profile.pretraining_augmentation == "survey"


def test_a_project_extends_another_and_sets_only_what_differs(tmp_path):
    # The shipped confirmation sky is `small` on another sky seed: nothing else differs.
    small, confirmation = load_project("small"), load_project("small_confirmation")
    assert confirmation.profile.sky.seed != small.profile.sky.seed
    assert confirmation.profile == type(small.profile)(**{**vars(small.profile), "name": "small_confirmation",
                                                          "sky": confirmation.profile.sky})
    assert (confirmation.tasks, confirmation.source, confirmation.target) == (small.tasks, small.source, small.target)
    assert confirmation.experiment == "galpipe-small_confirmation"  # name and experiment are never inherited
    # Mappings merge key by key; a base's relative folder stays relative to the base's own folder.
    (tmp_path / "base").mkdir()
    folder = _jpeg_folder(tmp_path / "base", n=2)
    base = write_project(tmp_path / "base", "tiny", tasks=["spiral"],
                         target=_folder_target("jpegs", survey_name="mine"))
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {base}\nsky: {{seed: 5}}\ntarget: {{survey_name: theirs}}\n")
    project = load_project(child)
    assert (project.name, project.profile.sky.seed, project.target.survey_name) == ("child", 5, "theirs")
    assert project.profile.sky.n_galaxies == load_project(base).profile.sky.n_galaxies
    assert Path(project.target.folder) == folder
    # An edit of the base is seen by the file that extends it.
    base_text = Path(base).read_text()
    Path(base).write_text(base_text.replace("n_galaxies: 160", "n_galaxies: 170"))
    assert "n_galaxies: 160" in base_text and load_project(child).profile.sky.n_galaxies == 170
    for text, message in ((f"extends: {tmp_path / 'nope.yaml'}", "extends: .*no such project file"),
                          (f"extends: {child}", "extends: .* extends this file again"),
                          (f"extends: {base}\nbogus: 1", "unknown key 'bogus'")):
        loop = tmp_path / "loop.yaml"
        loop.write_text(text.replace(str(child), str(loop)))
        with pytest.raises(ProjectError, match=f"{loop}: {message}"):
            load_project(loop)


def _jpeg_folder(tmp_path, n=40, **columns):
    """A folder of JPEGs framed per galaxy, labelled `spiral`, without positions."""
    folder = tmp_path / "jpegs"
    (folder / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        y, x = np.mgrid[:64, :64] - 32
        spiral = i % 2
        disc = np.exp(-np.hypot(x, y) / (6 + 4 * spiral)) * (1 + 0.5 * spiral * np.cos(2 * np.arctan2(y, x)))
        pixels = np.clip(disc[..., None] * [200, 180, 150] + rng.normal(0, 3, (64, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "img" / f"{i}.jpg")
        rows.append({"gal": f"g{i}", "file": f"img/{i}.jpg", "is_spiral": spiral})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


def _folder_target(folder, **changes):
    return {"kind": "folder", "survey_name": "myjpegs", "folder": str(folder), "catalog_file": "labels.csv",
            "id_column": "gal", "image_column": "file", "ra_column": "", "dec_column": "",
            "label_columns": {"spiral": "is_spiral"}, "framing": "whole_image", **changes}


def test_a_folder_project_names_missing_columns_and_unlabelled_tasks(tmp_path, capsys):
    folder = _jpeg_folder(tmp_path, n=2)
    cases = [(_folder_target(folder, id_column="galaxy_id"), "target.id_column: no column 'galaxy_id'"),
             (_folder_target(folder, label_columns={"spiral": "arms"}), "target.label_columns.spiral: no column 'arms'"),
             (_folder_target(folder, label_columns={}), "'spiral': the target survey has no label column for it"),
             (_folder_target(folder, catalog_file="nope.csv"), "no catalogue file"),
             (_folder_target(folder, framing="per_galaxy"), "a folder survey can be framed fixed or whole_image")]
    for target, message in cases:
        path = write_project(tmp_path, "tiny", tasks=["spiral"], target=target)
        with pytest.raises(ProjectError, match=message):
            load_project(path)
        # The command line says it in one line, before any work.
        capsys.readouterr()
        assert galpipe_in(tmp_path, ["run", "--config", path]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"galpipe run: error: {path}: ") and message in line


def test_a_jpeg_folder_without_positions_goes_end_to_end_by_configuration(tmp_path, capsys):
    """Source: the tiny simulated SDSS framed per galaxy (task spiral, in colour); target: JPEGs
    framed per galaxy, their central half taken (both at 4.24 R90 across); then galpipe predict
    serves that experiment's champion, framing new JPEGs as its inputs were. With
    gz2_spirals_transfer's network, colour balance and pretraining augmentation (the ResNet, the
    viewers' band weights, the survey randomised while pretraining; not its optimiser settings)."""
    folder = _jpeg_folder(tmp_path)
    path = write_project(tmp_path, "tiny", name="jpegs", experiment="jpeg-spirals", tasks=["spiral"],
                         input_mode="colour", label_budgets=[0, "full"], strategies=["full"], adaptation_strategies=[],
                         selections=["random"], class_balanced_tasks=["spiral"], architecture="resnet18_w32",
                         colour_rendering="lupton_balanced", pretraining_augmentation="survey",
                         source={"framing": "per_galaxy", "size_column": "petro_r90_arcsec", "field_per_size": 4.24},
                         target=_folder_target(folder, central_fraction=0.5))
    assert galpipe_in(tmp_path, ["run", "--config", path]) == 0
    run_dir = tmp_path / "data" / "jpegs"
    table = pd.read_parquet(run_dir / "evaluation_table.parquet")
    assert set(table.task) == {"spiral"} and len(set(table.label_budget)) == 2 and 0 in set(table.label_budget)
    index = pd.read_parquet(run_dir / "target" / "model_inputs.parquet")
    assert (index.status == "ok").all() and len(index) == 40  # whole images: no pixel scale needed
    metadata = pq.read_schema(run_dir / "target" / "model_inputs.parquet").metadata
    assert metadata[b"galpipe.model_field_arcsec"] == b"central_fraction:0.5"
    assert (run_dir / "gallery.png").is_file()  # a colour gallery for a colour-only survey
    out = tmp_path / "predicted.csv"
    capsys.readouterr()
    assert galpipe_in(tmp_path, ["predict", "--config", path, "--model", "champion", "--folder",
                                 str(folder / "img"), "--out", str(out)]) == 0
    assert "experiment jpeg-spirals" in capsys.readouterr().err
    assert len(pd.read_csv(out)) == 40
    from galpipe.prediction import load_classifier, model_uris

    [uri] = model_uris("champion", ["spiral"], "myjpegs", "jpeg-spirals")
    tracking = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert load_classifier(tracking, uri).field_arcsec == CentralFraction(0.5)
    # The learner went through the assets and MLflow as configured.
    import mlflow

    client = mlflow.MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("jpeg-spirals").experiment_id], max_results=100)
    pretrained = [r.data.params for r in runs if r.data.params.get("role") == "pretrained"]
    assert pretrained and all((p["architecture"], p["augmentation"]) == ("resnet18_w32", "survey") for p in pretrained)
    versions = client.search_model_versions("name = 'jpeg-spirals-spiral-myjpegs'")
    assert versions and all((v.tags["architecture"], v.tags["colour_rendering"]) == ("resnet18_w32", "lupton_balanced")
                            for v in versions)


def test_per_galaxy_framing_cuts_each_galaxy_by_its_own_size(tmp_path):
    """One image, two sizes: the galaxy framed by the smaller one fills more of the input."""
    from galpipe.cutouts import write_cutout_fits

    y, x = np.mgrid[:101, :101] - 50
    cube = np.repeat(np.exp(-np.hypot(x, y) / 5.0)[None], 3, axis=0).astype(np.float32) + 0.01
    write_cutout_fits(tmp_path / "g.fits", cube, "gri", 30.0, 0.0, 0.4)
    catalog = pd.DataFrame({"object_id": ["near", "far"], "petro_r90_arcsec": [2.0, 4.0]})
    fields = Framing("per_galaxy", size_column="petro_r90_arcsec", field_per_size=5.0).fields_arcsec(catalog)
    assert fields.to_dict() == {"near": 10.0, "far": 20.0}
    manifest = pd.DataFrame({"object_id": ["near", "far"], "path": [str(tmp_path / "g.fits")] * 2, "status": "ok"})
    build_model_inputs(manifest, tmp_path / "x.npy", fields)
    near, far = np.load(tmp_path / "x.npy")
    bright = [(image.sum(axis=0) > 0.5 * image.sum(axis=0).max()).mean() for image in (near, far)]
    # Twice the field, a quarter of the area: ~4x (less, as the sky level is taken at the near frame's border).
    assert 2 < bright[0] / bright[1] < 6
    whole = model_input(tmp_path / "g.fits", None)  # whole image: the 40" cube as it is
    assert np.allclose(whole, model_input(tmp_path / "g.fits", 40.4))
    with pytest.raises(FramingError, match="row"):
        Framing("per_galaxy", size_column="petro_r90_arcsec").fields_arcsec(catalog.assign(petro_r90_arcsec=[1.0, -1]))


def test_whole_image_framing_can_keep_the_central_part_of_each_image(tmp_path):
    """Galaxy Zoo's JPEGs show 8.48 x R90 across: their central half shows the galaxy at twice the
    resolution. The field is kept with the models, so galpipe predict frames new images the same way."""
    from galpipe.cutouts import write_cutout_fits

    y, x = np.mgrid[:100, :100] - 49.5
    cube = np.repeat(np.exp(-np.hypot(x, y) / 5.0)[None], 3, axis=0).astype(np.float32) + 0.01
    write_cutout_fits(tmp_path / "g.fits", cube, "gri", 30.0, 0.0, 0.4)
    framing = Framing("whole_image", central_fraction=0.5)
    field = framing.fields_arcsec(pd.DataFrame({"object_id": ["g"]}))
    assert field == framing.model_field_arcsec == CentralFraction(0.5) == field_from_text(field_text(field))
    assert framing.describe() == "the central 0.5 of each image" and field_from_text(field_text(None)) is None
    half, whole = model_input(tmp_path / "g.fits", field), model_input(tmp_path / "g.fits", None)
    assert np.allclose(half, model_input(tmp_path / "g.fits", 20.0))  # the central 50 of 100 pixels of 0.4"
    bright = [(image.sum(axis=0) > 0.5 * image.sum(axis=0).max()).mean() for image in (half, whole)]
    assert 3 < bright[0] / bright[1] < 5  # half the side: the galaxy covers ~4x the pixels
    for kind, fraction, message in [("fixed", 0.5, "central_fraction is for framing whole_image, not fixed"),
                                    ("whole_image", 0.0, "above 0 and at most 1"),
                                    ("whole_image", 1.5, "above 0 and at most 1")]:
        with pytest.raises(FramingError, match=message):
            Framing(kind, central_fraction=fraction)


def test_the_real_gz2_folder_becomes_model_inputs(tmp_path, gz2_folder, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the shipped file finds ../shared from its own folder, wherever galpipe runs
    project = load_project("gz2_spirals")
    assert Path(project.target.folder) == gz2_folder.resolve()
    catalog = project.target.load_catalog(project.profile).head(30)
    manifest = project.target.build_cutouts(catalog, project.profile, tmp_path, 1)
    index = build_model_inputs(manifest, tmp_path / "x.npy", project.target.get_framing().fields_arcsec(catalog),
                               "colour")
    assert (index.status == "ok").all() and np.load(tmp_path / "x.npy").shape == (30, 3, 69, 69)


def test_galpipe_run_refuses_a_budget_the_project_lacks(tmp_path, capsys):
    assert galpipe_in(tmp_path, ["run", "--profile", "tiny", "--budgets", "300"]) == 2
    assert "one of the project's label budgets, 0, 25, full" in capsys.readouterr().err


def test_the_project_files_bench_measured_with_still_load(gz2_folder):
    """bench/ keeps the project file of every table it made; each must still load, and the realism
    ablation's keep the frame and epochs their table was measured with."""
    files = sorted((Path(__file__).resolve().parents[1] / "bench").rglob("*.yaml"))
    projects = {path: load_project(path) for path in files}
    assert len(projects) >= 19 and {"gz2_spirals_resnet", "gz2_spirals_resnet_seeds"} <= {p.stem for p in projects}
    for path, project in projects.items():
        if path.parent.name == "realism" and path.stem.startswith("gz2_"):
            assert (project.target.central_fraction, project.source.field_per_size,
                    project.profile.finetune_max_epochs) == (1.0, 8.48, 50), path.stem


def _readme_projects() -> dict[str, dict]:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    return {b["name"]: b for b in blocks if isinstance(b, dict) and "name" in b}


def test_the_readme_project_files_are_the_shipped_one_and_a_valid_one(tmp_path):
    projects = _readme_projects()
    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "galpipe/projects/gz2_spirals.yaml").read_text())
    assert projects["gz2_spirals"] == shipped  # the README shows the file as it ships
    # The Stripe 82 example, on a catalogue with the columns of Hart et al. (2016)'s table.
    hart16 = pd.DataFrame({"dr7objid": [587722981742084144, 587722981742149770], "ra": [0.5, 1.0], "dec": [0.1, -0.2],
                           "t01_smooth_or_features_a02_features_or_disk_debiased": [0.8, 0.1],
                           "t02_edgeon_a04_yes_debiased": [0.1, 0.0], "t03_bar_a06_bar_debiased": [0.6, 0.0]})
    hart16.to_parquet(tmp_path / "gz2_stripe82.parquet")
    stripe82 = projects["stripe82"]
    for role in ("source", "target"):
        stripe82[role]["catalog_path"] = str(tmp_path / "gz2_stripe82.parquet")
    path = tmp_path / "stripe82.yaml"
    path.write_text(yaml.safe_dump(stripe82))
    project = load_project(path)
    assert (project.source.name, project.target.name) == ("sdss", "des")
    labelled = project.source.load_catalog(project.profile)
    assert labelled.object_id.tolist() == ["587722981742084144", "587722981742149770"]
    assert labelled.featured.tolist() == [1, 0] and labelled.bar.tolist() == [1, 0]
