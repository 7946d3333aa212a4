"""Parameters are parsed and checked by us (MLflow does not), and MLproject is made from them."""
import pytest

from spatial_ae.params import STEPS, ParameterError, mlproject_text, parse_step_params
from tests.conftest import REPO


def test_defaults_are_the_papers():
    params = parse_step_params("main", {})
    assert (params["unlabeled_set_size"], params["lbl_trai_size"], params["lbl_test_size"]) == (12000, 3000, 6000)
    assert (params["embedding_dim"], params["ae_epochs"], params["batch_size"], params["optimizer"]) == (None, 500, 32, "Adamax")
    assert params["num_simulations"] == 10 and params["dataset"] == "synthetic"


@pytest.mark.parametrize("name, value, message", [
    ("num_simulations", "ten", "not a number"),
    ("num_simulations", "0", "below its minimum"),
    ("ae_epochs", "2.5", "whole number"),
    ("position_loss_weight", "nan", "finite"),
    ("position_loss_weight", "-1", "below its minimum"),
    ("optimizer", "Adagrad2", "one of"),
])
def test_bad_values_name_the_parameter(name, value, message):
    with pytest.raises(ParameterError, match=message) as error:
        parse_step_params("main", {name: value})
    assert name in str(error.value)


def test_required_and_unknown_parameters():
    with pytest.raises(ParameterError, match="featurize_run_id is required"):
        parse_step_params("pretrain", {"featurize_run_id": ""})
    with pytest.raises(ParameterError, match="unknown parameter"):
        parse_step_params("featurize", {"epochs": "3"})


def test_mlproject_matches_the_parameters():
    assert (REPO / "MLproject").read_text() == mlproject_text()
    for step, specs in STEPS.items():
        assert (REPO / "entrypoints" / f"{step}.py").is_file()


def test_settings_carry_every_parameter_of_main_and_sweep():
    """Grouped into settings (the recipe resolved), main and sweep still log every parameter they were given."""
    from spatial_ae.params import step_arguments

    main = parse_step_params("main", {"recipe": "balanced", "num_anchors": "3"})
    settings = step_arguments("main", main)["settings"]
    assert set(settings.params()) | {"spark_master"} == set(main)
    assert settings.params()["num_anchors"] == 3 and settings.params()["standardize_inputs"] is True  # balanced's
    sweep = parse_step_params("sweep", {"recipes": "paper,dtw", "labelled_per_word": "1,2", "embedding_dim": "16"})
    grid = step_arguments("sweep", sweep)["settings"]
    given = {name for name, value in sweep.items() if value is not None}
    assert set(grid.params()) | {"spark_master"} == given
    assert grid.params()["recipes"] == "paper,dtw" and grid.given == (("embedding_dim", 16),)


def test_a_recipe_option_is_a_parameter_by_its_declaration_alone():
    """settings.Recipe's fields are the recipe options: each is an optional parameter of pretrain and main, with
    the help, type and range its field declares (so a new option needs no line here)."""
    from dataclasses import fields

    from spatial_ae.settings import Recipe

    options = [spec for spec in fields(Recipe) if spec.name != "name"]
    for step in ("pretrain", "main"):
        declared = {spec.name: spec for spec in STEPS[step]}
        for option in options:
            assert declared[option.name].optional and option.metadata["help"] in declared[option.name].help
    with pytest.raises(ParameterError, match="augment_shifts"):
        parse_step_params("main", {"augment_shifts": "9"})  # the field's high=8
