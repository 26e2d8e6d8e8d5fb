"""Asset checks on the data: cutouts usable, cross-match healthy, classes present in each split,
nearly every cutout made into a model input."""

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, asset_check

from galpipe.catalogs import class_balance
from galpipe.cutouts import CutoutError, read_cutout
from galpipe.defs.metadata import as_table
from galpipe.defs.resources import GalpipeSettings
from galpipe.preprocessing import ModelInputs

CUTOUTS_REOPENED = 200


def cutout_check(role: str):
    @asset_check(asset=AssetKey(f"{role}_raw_cutouts"), name="cutouts_are_valid",
                 required_resource_keys={"settings", f"{role}_survey"},
                 description="Cutouts marked ok have the survey's bands and shape (all, from the manifest), "
                             f"and a random {CUTOUTS_REOPENED} of them still open, finite and complete.")
    def cutouts_are_valid(context, raw_cutouts: pd.DataFrame) -> AssetCheckResult:
        survey = getattr(context.resources, f"{role}_survey")
        shape = survey.expected_shape()
        ok = raw_cutouts[raw_cutouts.status == "ok"]
        invalid = []
        if survey.bands:
            invalid += [f"{p}: bands {b!r}, expected {survey.bands!r}"
                        for p, b in zip(ok.path, ok.bands) if not set(survey.bands) <= set(b)]
        if shape:
            invalid += [f"{p}: shape ({h}, {w}), expected {shape}"
                        for p, h, w in zip(ok.path, ok.height_px, ok.width_px) if (h, w) != shape]
        # Every cutout was opened when the asset was built; re-open a sample to catch later damage.
        for path in ok.path.sample(min(CUTOUTS_REOPENED, len(ok)), random_state=0):
            try:
                read_cutout(path, survey.bands, shape)
            except CutoutError as err:
                invalid.append(str(err))
        return AssetCheckResult(passed=not invalid and len(ok) > 0, metadata={
            "n_ok": len(ok), "n_invalid": len(invalid),
            "n_quarantined": int((raw_cutouts.status == "quarantined").sum()),
            "n_failed": int((raw_cutouts.status == "failed").sum()),
            "first_invalid": "\n".join(invalid[:10]),
        })

    return cutouts_are_valid


@asset_check(asset="matched_catalog", description="Fraction of target objects with a unique source match.")
def match_rate_above_threshold(settings: GalpipeSettings, matched_catalog: pd.DataFrame) -> AssetCheckResult:
    if (matched_catalog.match_status == "own_labels").all():
        return AssetCheckResult(passed=True, metadata={"note": "target carries its own labels; no matching"})
    rate = float((matched_catalog.match_status == "matched").mean())
    return AssetCheckResult(passed=rate >= settings.min_match_rate,
                            metadata={"match_rate": rate, "threshold": settings.min_match_rate})


@asset_check(asset="matched_catalog", description="Both classes of every task in the pool and the test set.")
def class_balance_per_split(settings: GalpipeSettings, matched_catalog: pd.DataFrame) -> AssetCheckResult:
    metadata, one_class = {}, []
    for split in ("pool", "test"):
        for task, values in class_balance(matched_catalog[matched_catalog.split == split], settings.tasks).items():
            metadata[f"{split}/{task}/positive_fraction"] = values["positive_fraction"]
            metadata[f"{split}/{task}/n_labelled"] = values["n_labelled"]
            if not 0 < values["positive_fraction"] < 1:
                one_class.append(f"{split}/{task}")
    metadata["single_class"] = ", ".join(one_class) or "none"
    return AssetCheckResult(passed=not one_class, severity=AssetCheckSeverity.WARN, metadata=metadata)


def model_input_check(role: str):
    @asset_check(asset=AssetKey(f"{role}_model_inputs"), name="model_inputs_are_complete",
                 description="Fails when more than the settings' max_failed_input_fraction (5%) of the "
                             f"{role} survey's cutouts have no model input; counts them by reason.")
    def model_inputs_are_complete(settings: GalpipeSettings, model_inputs: ModelInputs) -> AssetCheckResult:
        index = model_inputs.index
        failed = index[index.status != "ok"]
        share = len(failed) / len(index) if len(index) else 1.0
        by_reason = failed.reason.value_counts()
        return AssetCheckResult(passed=share <= settings.max_failed_input_fraction, metadata={
            "n_cutouts": len(index), "n_failed": len(failed), "failed_fraction": round(share, 4),
            "threshold": settings.max_failed_input_fraction,
            "failed_by_reason": as_table(by_reason.head(10).rename_axis("reason").reset_index(name="n"))})

    return model_inputs_are_complete


CHECKS = [cutout_check("source"), cutout_check("target"), match_rate_above_threshold, class_balance_per_split]
MODEL_CHECKS = [model_input_check("source"), model_input_check("target")]
