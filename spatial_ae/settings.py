"""The steps' settings: frozen dataclasses built once from the parameters (params.py) and passed down whole.

`params()` gives the flat name -> value dict a run logs and its reuse key is made of; the names are the
parameters' own, so a setting reads the same on the command line, in MLflow and here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

POSITION_FEATURES = ("power_mel", "log_mel", "mfcc_dtw")
EXTRA_UNLABELLED = ("none", "synthetic")


def option(help: str, **check) -> dict:
    """A recipe option's declaration (help, and low/high/choices as params.Param takes them): params.py makes
    the parameter from it, so a new option is a field here and the code that uses it."""
    return {"help": help, **check}


def position_option(help: str, **check) -> dict:
    """`option` of one that acts only through the position head: it does not decide a plain auto-encoder."""
    return option(help, **check) | {"position": True}


@dataclass(frozen=True)
class Recipe:
    """A recipe resolved: the preset's options with the explicitly given ones on top. Defaults are the paper's."""
    name: str = "paper"
    standardize_inputs: bool = field(default=False, metadata=option(
        "standardise the MFCC with unlabelled-set statistics, inside the encoder (the reconstruction target is then "
        "the standardised MFCC)"))
    standardize_positions: bool = field(default=False, metadata=position_option(
        "z-score each position target over the unlabelled set"))
    position_features: str = field(default="power_mel", metadata=position_option(
        "position target: cosine distance of the power_mel (the paper) or log_mel to the anchors, or mfcc_dtw: "
        "dynamic-time-warping distance of the MFCC frames (c1-c19, standardised) to exemplar clips",
        choices=POSITION_FEATURES))
    num_anchors: int = field(default=1, metadata=position_option(
        "1 = the paper's mean anchor; k > 1 = k-means centres of the unlabelled position features (k distances as "
        "target; for mfcc_dtw the k clips nearest the centres)", low=1))
    position_loss_weight: float = field(default=1.0, metadata=option(
        "weight of the position loss; 0 trains the plain auto-encoder (the ablation)", low=0.0))
    balance_losses: bool = field(default=False, metadata=position_option(
        "scale the position loss so that both heads start equal (each loss divided by the MSE of predicting its "
        "target's mean)"))
    embedding_dim: int = field(default=75, metadata=option(
        "size of the embedding (75, the paper's, in every recipe but wide: 200)", low=1))
    augment_shifts: int = field(default=0, metadata=option(
        "time-shifted copies of each unlabelled training clip added to the auto-encoder's training set (MFCC and "
        "mel frames moved by 1-4 frames, 32-128 ms)", low=0, high=8))
    extra_unlabelled: str = field(default="none", metadata=option(
        "'synthetic' adds as many clips of the synthetic eSpeak NG corpus's voices as there are unlabelled "
        "training clips to the auto-encoder's training set; 'none'", choices=EXTRA_UNLABELLED))

    @property
    def with_position(self) -> bool:
        return self.position_loss_weight > 0

    def params(self) -> dict:
        """The options as logged: `recipe` (the preset's name) and every option."""
        values = asdict(self)
        return {"recipe": values.pop("name"), **values}

    def identity(self) -> dict:
        """The options that decide the encoder: without a position head (weight 0) the recipe's name and its
        position options do not, so the plain auto-encoders of `balanced` and `dtw` are one and the same."""
        values = self.params()
        if self.with_position:
            return values
        return {name: value for name, value in values.items() if name not in POSITION_OPTIONS}


RECIPE_OPTIONS = tuple(spec.name for spec in fields(Recipe) if spec.name != "name")


class _Flat:
    """Settings whose fields are all parameters: `params()` is their name -> value dict."""

    def params(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FeaturizeSettings(_Flat):
    """Which clips of which corpus are featurized."""
    dataset: str
    unlabeled_set_size: int
    lbl_trai_size: int
    lbl_test_size: int
    synthetic_clips_per_word: int = 100
    seed: int = 0
    include_unknown_silence: bool = False


@dataclass(frozen=True)
class PretrainSettings:
    """How an auto-encoder is trained: the loop's settings and the resolved recipe."""
    ae_epochs: int
    ae_min_epochs: int
    patience: int
    optimizer: str
    batch_size: int
    recipe: Recipe = Recipe()

    def loop(self) -> dict:
        """The training loop's settings: all but the recipe."""
        return {spec.name: getattr(self, spec.name) for spec in fields(self) if spec.name != "recipe"}

    def params(self) -> dict:
        return self.loop() | self.recipe.params()

    def identity(self) -> dict:
        """The settings that decide the encoder (see `Recipe.identity`)."""
        return self.loop() | self.recipe.identity()


POSITION_OPTIONS = ("recipe", *(spec.name for spec in fields(Recipe) if spec.metadata.get("position")))


@dataclass(frozen=True)
class EvaluateSettings(_Flat):
    """How the classifiers are trained on each simulation's labelled sample."""
    dnn_epochs: int
    cnn_epochs: int
    patience: int
    lbl_trai_size: int
    labelled_per_word: int = 0


@dataclass(frozen=True)
class MainSettings:
    """The main workflow: featurize once, then `num_simulations` x (pretrain, evaluate), then summarize."""
    featurize: FeaturizeSettings
    pretrain: PretrainSettings
    evaluate: EvaluateSettings
    num_simulations: int = 10
    parallel_simulations: int = 0
    results_path: str = "results"

    def params(self) -> dict:
        return (self.featurize.params() | self.pretrain.params() | self.evaluate.params()
                | {"num_simulations": self.num_simulations, "parallel_simulations": self.parallel_simulations,
                   "results_path": self.results_path})


@dataclass(frozen=True)
class SweepSettings:
    """The sweep's grid: recipes x position loss weights x labelled clips per word, `num_simulations` each.
    `pretrain` and `evaluate` hold what the cells share (their recipe and labelled_per_word are the cells'); the
    recipe options given explicitly (`given`, name-value pairs) override every recipe's."""
    featurize: FeaturizeSettings
    pretrain: PretrainSettings
    evaluate: EvaluateSettings
    recipes: tuple[str, ...]
    position_loss_weights: tuple[float, ...]
    labelled_per_word: tuple[int, ...]
    given: tuple[tuple[str, object], ...] = ()
    num_simulations: int = 3
    parallel_simulations: int = 0
    results_path: str = "results/sweep"

    def params(self) -> dict:
        """As logged on the sweep's run: the shared settings, the grid's lists as given (`a,b,c`), the options
        given explicitly."""
        evaluate = {name: value for name, value in self.evaluate.params().items() if name != "labelled_per_word"}
        grid = {"recipes": self.recipes, "position_loss_weights": self.position_loss_weights,
                "labelled_per_word": self.labelled_per_word}
        return (self.featurize.params() | self.pretrain.loop() | evaluate | {name: _listed(values) for name, values in grid.items()}
                | dict(self.given) | {"num_simulations": self.num_simulations,
                                      "parallel_simulations": self.parallel_simulations,
                                      "results_path": self.results_path})


def _listed(values: tuple) -> str:
    """A list parameter's value as written on the command line: `a,b,c`, numbers in their shortest form."""
    return ",".join(f"{value:g}" if isinstance(value, float) else str(value) for value in values)
