"""Named jobs, one per stage of the experiment, which `galpipe run` launches and the UI lists, so
that the Runs page says what each run was: data, pretraining, fine-tuning, evaluation,
prediction (and `reevaluation_job`, the daily schedule's). The partitioned ones take their
partitions from the assets they select, which are the project's (galpipe.definitions)."""

from dagster import AssetKey, AssetSelection, define_asset_job

from galpipe.defs.assets import ASSETS
from galpipe.defs.prediction_assets import prediction_chunks
from galpipe.defs.reevaluation import reevaluation_job

DATA_KEYS = [key for a in ASSETS for key in a.keys] + [AssetKey(f"{role}_model_inputs") for role in ("source", "target")]

data_job = define_asset_job("data_job", selection=AssetSelection.assets(*DATA_KEYS),
                            description="Both surveys' catalogues, cutouts and model inputs, the matched "
                                        "catalogue and the gallery, with their checks.")
pretraining_job = define_asset_job("pretraining_job", selection=AssetSelection.assets("pretrained_model"),
                                   description="One task's classifier trained on the source survey.")
finetuning_job = define_asset_job("finetuning_job", selection=AssetSelection.assets("finetuned_models"),
                                  description="One task x label budget: every strategy, seed and selection.")
evaluation_job = define_asset_job("evaluation_job", selection=AssetSelection.assets("evaluation_table"),
                                  description="The evaluation table, learning curves and champions.")
prediction_job = define_asset_job("prediction_job", selection=AssetSelection.assets(AssetKey("target_morphology")),
                                  partitions_def=prediction_chunks,
                                  description="One chunk of the target survey classified by the champions.")

JOBS = [data_job, pretraining_job, finetuning_job, evaluation_job, prediction_job, reevaluation_job]
