"""bench/learners.py with the survey randomisation of pretraining made stronger, to take away the
simulation's sky cues (its noise and the pedestal the colour composite's clipping makes of it,
which rank simulated spirals the other way from real ones; bench/realism/cue_gap.py): noise up to
30% of the image's standard deviation instead of 15%, then a random black point (each image
minus b, clipped at 0, b ~ U(0, 0.04); the clipping also drops the noise below 0, even when b is
near 0). galpipe's own `survey` augmentation is unchanged; this
patches it in this process only. bench/results/learners-stronger-survey-cpu came from:

    .venv/bin/python bench/realism/cue_gap.py bench/realism/central_half_plus_neighbours_seeing.yaml \\
        --variant 'as is={}' --sample 'as is=/tmp/base.npz' --out /tmp/cues
    .venv/bin/python bench/learners_real/stronger_survey.py /tmp/base.npz --learners "compact, one-cycle, galaxy aug." \\
        --starts simulation --budgets 100 --epochs 100 --seeds 2 --pretrain-augmentation survey \\
        --label "base, stronger survey randomisation" --out /tmp/strong

and the same with bench/learners.py (label "base") for the reference, merged with `learners.py --merge`;
`-paired.md` is bench/learners_paired.py on the merged file with `--baseline` and
`--direct-reference` both "compact, one-cycle, galaxy aug. (base)|simulation".
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/learners.py

import galpipe.training as training  # noqa: E402

NOISE_FRACTION = (0.0, 0.3)
MAX_BLACK_POINT = 0.04
_survey_randomised = training.survey_randomised


def survey_randomised_with_black_point(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """galpipe's survey randomisation (with this file's noise), then each image's own black point."""
    x = _survey_randomised(x, generator)
    black = MAX_BLACK_POINT * torch.rand(x.shape[0], 1, 1, 1, generator=generator)
    return (x - black.to(x.dtype).to(x.device)).clamp(min=0)


if __name__ == "__main__":
    training.SURVEY_NOISE_FRACTION = NOISE_FRACTION  # read by survey_randomised at each call
    training.survey_randomised = survey_randomised_with_black_point  # augment_batch looks it up by name at each call
    import learners

    sys.exit(learners.main(sys.argv[1:]))
