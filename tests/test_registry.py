"""Aliases stay right when several workers register versions and move aliases at once."""
from concurrent.futures import ThreadPoolExecutor

from mlflow.tracking import MlflowClient

from spatial_ae.registry import ACCURACY_TAG, CHAMPION, NEWEST, converge_alias, update_champion

NAME = "alias-test-encoder"


def newest_version(versions) -> str:
    return str(max(int(v.version) for v in versions))


def test_a_stale_alias_write_is_corrected(sqlite_tracking):
    """A slow worker that set `newest` to its own, older version after a newer one was registered."""
    client = MlflowClient()
    client.create_registered_model(NAME)
    for accuracy in (0.5, 0.7, 0.7):
        version = client.create_model_version(NAME, source="unused").version
        client.set_model_version_tag(NAME, version, ACCURACY_TAG, str(accuracy))
    client.set_registered_model_alias(NAME, NEWEST, "1")
    client.set_registered_model_alias(NAME, CHAMPION, "1")
    assert converge_alias(NAME, NEWEST, newest_version) == "3"
    assert client.get_model_version_by_alias(NAME, NEWEST).version == 3
    assert update_champion(NAME) == "2"  # best accuracy, ties to the older version
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == 2


def test_concurrent_registrations_end_on_the_newest(sqlite_tracking):
    client = MlflowClient()
    client.create_registered_model(NAME)

    def register_one(_):
        MlflowClient().create_model_version(NAME, source="unused")
        return converge_alias(NAME, NEWEST, newest_version)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(register_one, range(8)))
    assert client.get_model_version_by_alias(NAME, NEWEST).version == 8
