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
