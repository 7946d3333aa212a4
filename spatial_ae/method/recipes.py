"""Recipes of the pretrain step: named presets of the options that decide how much the position constraint acts.

- `paper`: the published method: raw MFCC in and out, one position = cosine distance of the power mel
  to the mean unlabelled mel, both MSE losses with weight 1 (the reconstruction loss then dwarfs the
  position loss by three orders of magnitude).
- `balanced`: MFCC standardised with unlabelled-set statistics (inside the encoder), positions = cosine
  distances of the log mel to 8 k-means centres, each z-scored, position loss scaled so that both heads
  start with equal loss.
- `dtw`: as `balanced`, but positions are dynamic-time-warping distances of the clip's MFCC frame sequence
  to 32 exemplar clips of the unlabelled set: a position that does not depend on when, or how fast, the word
  is said (cosine distances of whole spectrograms mostly do, and carry little word information).
- `raw_dtw`: as `dtw`, with the paper's raw MFCC in and out: standardising the input loses words across many
  speakers (docs/RESULTS.md), the DTW position is kept.
- Candidates on top of `paper` (raw MFCC in and out), each changing one thing: `anchors` (log-mel positions to
  8 k-means anchors, z-scored, losses balanced), `wide` (a 200-d code), `shifted` (each unlabelled clip also
  seen shifted in time), `voices` (the synthetic corpus's eSpeak voices as extra unlabelled clips).

Options given explicitly (not None) override the recipe's. The maths of the positions, their scaling and the loss
balance are in `spatial_ae.method.positions`.
"""
from __future__ import annotations

from spatial_ae.settings import RECIPE_OPTIONS, Recipe

RECIPES = {  # name -> the options it changes from the paper's (the defaults of settings.Recipe)
    "paper": {},
    "balanced": dict(standardize_inputs=True, standardize_positions=True, position_features="log_mel",
                     num_anchors=8, balance_losses=True),
    "dtw": dict(standardize_inputs=True, standardize_positions=True, position_features="mfcc_dtw", num_anchors=32,
                balance_losses=True),
    "raw_dtw": dict(standardize_positions=True, position_features="mfcc_dtw", num_anchors=32, balance_losses=True),
    "anchors": dict(standardize_positions=True, position_features="log_mel", num_anchors=8, balance_losses=True),
    "wide": dict(embedding_dim=200),
    "shifted": dict(augment_shifts=1),
    "voices": dict(extra_unlabelled="synthetic"),
}


def resolve_recipe(recipe: str, **options) -> Recipe:
    """The recipe's options, overridden by the options given (not None)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    unknown = set(options) - set(RECIPE_OPTIONS)
    if unknown:
        raise ValueError(f"not recipe options: {', '.join(sorted(unknown))}")
    given = {name: value for name, value in options.items() if value is not None}
    return Recipe(name=recipe, **RECIPES[recipe] | given)
