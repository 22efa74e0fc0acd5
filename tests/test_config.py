"""Strict config validation: one clear error, naming the key, before anything trains."""

import os
import subprocess
import sys

import pytest
from conftest import REPO, tiny_raw, tiny_suite

from harness.config import ConfigError, SuiteConfig
from harness.methods import METHODS
from harness.suites import load_suite, suite_from_dict


def error_of(**over) -> str:
    with pytest.raises(ConfigError) as info:
        suite_from_dict(tiny_raw(**over))
    return str(info.value)


def test_quick_suite_loads_with_its_methods():
    suite = load_suite(REPO / "suites" / "quick.toml")
    assert isinstance(suite, SuiteConfig)
    assert suite.data.name == "digits" and suite.model.name == "resnet34"
    built_in = {"fedavg", "exclusive", "allsmall", "fedprox", "heterofl", "fedrolex", "fjord", "depthfl", "neulite",
                "microbatch", "checkpoint"}
    methods = [m.method for m in suite.methods]
    assert set(methods) == built_in and len(methods) == len(built_in)  # every built-in method, once
    assert built_in <= set(METHODS.names())
    assert suite.seeds == [0, 1, 2]


def test_unknown_top_level_key_names_key_and_allowed():
    msg = error_of(roundz=3)
    assert "'roundz'" in msg and "rounds" in msg and "allowed" in msg


def test_unknown_nested_key_names_its_table():
    msg = error_of(data={"nmae": "digits"})
    assert "'nmae'" in msg and "[data]" in msg


def test_wrong_type_names_key():
    assert "rounds" in error_of(rounds="ten")
    assert "fleet.low_mb" in error_of(fleet={"low_mb": "big"})
    assert "seeds" in error_of(seeds=0)


def test_bool_is_not_an_int():
    assert "rounds" in error_of(rounds=True)


def test_int_widens_to_float():
    assert tiny_suite(model={"width": 1}).model.width == 1.0


@pytest.mark.parametrize(("over", "key"), [
    ({"rounds": 0}, "rounds"),
    ({"batch_size": -1}, "batch_size"),
    ({"model": {"width": 1.5}}, "model.width"),
    ({"data": {"alpha": 0}}, "data.alpha"),
    ({"fleet": {"low_mb": -1.0}}, "low_mb"),
    ({"fleet": {"low_mb": 0.0}}, "low_mb"),
    ({"fleet": {"distribution": "tiers", "tiers_mb": [1.0, -2.0]}}, "tiers_mb"),
    ({"fleet": {"distribution": "lognormal", "median_mb": 0.0}}, "median_mb"),
    ({"optimizer": {"momentum": 1.0}}, "momentum"),
    ({"clients_per_round": 7}, "clients_per_round"),
    ({"seeds": []}, "seeds"),
    ({"seeds": [1, 1]}, "seeds"),
    ({"report": {"target": 0.0}}, "report.target"),
    ({"report": {"target": 90}}, "report.target"),
])
def test_out_of_range_values(over, key):
    assert key in error_of(**over)


def test_unknown_names_list_allowed_values():
    msg = error_of(data={"name": "imagenet"})
    assert "imagenet" in msg and "digits" in msg and "cifar10" in msg
    msg = error_of(model={"name": "resnet50"})
    assert "resnet50" in msg and "resnet18" in msg
    msg = error_of(methods=[{"method": "fedprocs"}])
    assert "fedprocs" in msg and "fedavg" in msg
    msg = error_of(data={"partition": "random"})
    assert "data.partition: unknown partition 'random'; allowed: dirichlet, iid, shards" in msg
    msg = error_of(fleet={"distribution": "zipf"})
    assert "fleet.distribution: unknown distribution 'zipf'; allowed: even, lognormal, tiers, trace, uniform" in msg


def test_a_plugin_may_register_what_a_suite_names(tmp_path):
    """The registries own the names: a partition, fleet distribution, data set and model that an
    ``FL_HARNESS_PLUGINS`` module registers are usable from a suite file."""
    (tmp_path / "my_parts.py").write_text(
        "from harness.data import PARTITIONS, register_dataset\n"
        "from harness.data.datasets import digits\n"
        "from harness.fleet import FLEETS\n"
        "from harness.models import MODELS\n"
        "PARTITIONS.register('halves')(PARTITIONS['iid'])\n"
        "FLEETS.register('flat')(FLEETS['even'])\n"
        "register_dataset('my_digits')(digits)\n"
        "MODELS.register('my_cnn')(MODELS['cnn'])\n")
    suite = tmp_path / "suite.toml"
    suite.write_text((REPO / "suites" / "quick.toml").read_text())
    probe = (f"from harness.suites import load_suite; s = load_suite({str(suite)!r}, ['data.partition=halves', "
             "'fleet.distribution=flat', 'data.name=my_digits', 'model.name=my_cnn']); "
             "print(s.data.partition, s.fleet.distribution, s.data.name, s.model.name)")
    env = {**os.environ, "FL_HARNESS_PLUGINS": "my_parts", "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["halves", "flat", "my_digits", "my_cnn"]


def test_method_params_are_validated():
    msg = error_of(methods=[{"method": "fedavg", "weighted": "yes"}])
    assert "weighted" in msg
    msg = error_of(methods=[{"method": "fedavg", "lr": 0.1}])
    assert "'lr'" in msg and "weighted" in msg
    msg = error_of(methods=[{"method": "allsmall", "widths": [0.5, 2.0]}])
    assert "widths" in msg


def test_duplicate_labels_rejected_and_default_label():
    assert "twice" in error_of(methods=[{"method": "fedavg"}, {"method": "fedavg"}])
    suite = tiny_suite(methods=[{"method": "fedavg"}, {"method": "fedavg", "label": "fedavg-b"}])
    assert [m.label for m in suite.methods] == ["fedavg", "fedavg-b"]


def test_no_methods_is_an_error():
    assert "methods" in error_of(methods=[])


def test_overrides_reach_nested_keys_and_methods(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text((REPO / "suites" / "quick.toml").read_text())
    suite = load_suite(path, ["rounds=3", "data.shards_per_client=2", "seeds=[4]", "fleet.distribution=tiers",
                              "methods.allsmall.widths=[0.5, 0.25]", "name=other"])
    assert suite.rounds == 3 and suite.data.shards_per_client == 2 and suite.seeds == [4]
    assert suite.fleet.distribution == "tiers" and suite.name == "other"
    assert next(m for m in suite.methods if m.label == "allsmall").params["widths"] == [0.5, 0.25]


def test_bad_override_and_bad_files(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text((REPO / "suites" / "quick.toml").read_text())
    with pytest.raises(ConfigError, match="key=value"):
        load_suite(path, ["rounds"])
    with pytest.raises(ConfigError, match="no method labelled 'nope'"):
        load_suite(path, ["methods.nope.x=1"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("rounds = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_suite(tmp_path / "broken.toml")


@pytest.mark.parametrize("name", ["quick", "baselines", "neulite", "cifar10"])
def test_every_shipped_suite_validates(name):
    suite = load_suite(REPO / "suites" / f"{name}.toml")
    assert suite.methods and suite.rounds >= 1
