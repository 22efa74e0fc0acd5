"""Device budgets: seeded distributions and CSV traces, MB in, bytes out."""

import pytest
from conftest import tiny_raw

from harness.config import ConfigError, FleetConfig
from harness.fleet import FLEETS, MB, build_fleet
from harness.suites import suite_from_dict, validate_fleet


def budgets_mb(cfg: FleetConfig, seed: int = 0) -> list[float]:
    return [d.budget / MB for d in build_fleet(cfg, seed)]


def test_uniform_in_range_seeded_and_in_bytes():
    cfg = FleetConfig(devices=50, low_mb=2.0, high_mb=6.0)
    a, b = build_fleet(cfg, 3), build_fleet(cfg, 3)
    assert a == b and len(a) == 50 and [d.id for d in a] == list(range(50))
    assert all(2 * MB <= d.budget <= 6 * MB and isinstance(d.budget, int) for d in a)
    assert build_fleet(cfg, 4) != a


def test_even_gives_every_seed_the_same_budgets_in_its_own_order():
    cfg = FleetConfig(devices=5, distribution="even", low_mb=2.0, high_mb=4.0)
    fleets = [build_fleet(cfg, seed) for seed in range(4)]
    assert all(sorted(d.budget for d in fleet) == [int(mb * MB) for mb in (2.0, 2.5, 3.0, 3.5, 4.0)]
               for fleet in fleets)
    assert len({tuple(d.budget for d in fleet) for fleet in fleets}) > 1  # shuffled per seed
    with pytest.raises(ConfigError, match="low_mb <= high_mb"):
        validate_fleet(FleetConfig(distribution="even", low_mb=3.0, high_mb=2.0))


def test_tiers_draw_only_the_given_budgets_by_weight():
    cfg = FleetConfig(devices=400, distribution="tiers", tiers_mb=[1.0, 8.0], tier_weights=[3.0, 1.0])
    values = budgets_mb(cfg)
    assert set(values) == {1.0, 8.0}
    assert 0.65 < values.count(1.0) / 400 < 0.85


def test_lognormal_median_near_configured():
    values = sorted(budgets_mb(FleetConfig(devices=401, distribution="lognormal", median_mb=4.0, sigma=0.5)))
    assert 3.4 < values[200] < 4.6 and min(values) > 0


def test_trace_csv_with_header_and_speeds(tmp_path):
    path = tmp_path / "fleet.csv"
    path.write_text("device_id,memory_mb,gflops,up_mbps,down_mbps\n7,512,1.5,2,8\n9,1024\n")
    fleet = build_fleet(FleetConfig(distribution="trace", trace=str(path), gflops=[20.0]), 0)
    assert [(d.id, d.budget) for d in fleet] == [(7, 512 * MB), (9, 1024 * MB)]
    assert [(d.flops, d.up, d.down) for d in fleet] == [(1.5e9, 2e6 / 8, 8e6 / 8), (20e9, 10e6 / 8, 50e6 / 8)]


def test_speeds_are_drawn_per_device_without_moving_the_budgets():
    one = FleetConfig(devices=200, low_mb=2.0, high_mb=6.0)
    many = FleetConfig(devices=200, low_mb=2.0, high_mb=6.0, gflops=[5.0, 50.0], up_mbps=[1.0, 20.0])
    a, b = build_fleet(one, 3), build_fleet(many, 3)
    assert [d.budget for d in a] == [d.budget for d in b]
    assert {d.flops for d in a} == {10e9} and {d.flops for d in b} == {5e9, 50e9}
    assert 0.35 < sum(d.flops == 5e9 for d in b) / 200 < 0.65 and {d.up for d in b} == {1e6 / 8, 20e6 / 8}
    assert {d.down for d in b} == {50e6 / 8} and build_fleet(many, 3) == b


@pytest.mark.parametrize(("text", "match"), [
    ("1,abc\n", r"fleet.csv:1: column 2 \(memory_mb\) is not a number; columns: device_id,memory_mb"),
    ("1,5\nx1,5\n", r"fleet.csv:2: column 1 \(device_id\) is not an integer"),
    ("1,5\n2,5,fast\n", r"fleet.csv:2: column 3 \(gflops\) is not a number"),
    ("1,5\n7\n", r"fleet.csv:2: 1 column\(s\); expected device_id,memory_mb"),
    ("1,-5\n", "memory positive"),
    ("1,inf\n", "memory positive"),  # not an OverflowError
    ("1,nan\n", "memory positive"),
    ("1,5,-2\n", r"speeds in \[1e-06, 1e\+09\]"),
    ("device_id,memory_mb,speed\n1,5,1.0\n", "now gflops"),
    ("1,5\n1,6\n", "repeats"),
    ("device_id,memory_mb\n", "lists no device"),
])
def test_bad_traces(tmp_path, text, match):
    path = tmp_path / "fleet.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        build_fleet(FleetConfig(distribution="trace", trace=str(path)), 0)


def test_a_trace_error_never_quotes_what_the_file_holds(tmp_path):
    """A trace may name any readable file (``fleet.trace = "/etc/passwd"``): the error names the line and
    the column, never their contents."""
    path = tmp_path / "secrets"
    path.write_text("user:hash-of-line-one\nroot:x:0:0:secret-two,/root:/bin/sh\n")
    with pytest.raises(ConfigError) as err:
        build_fleet(FleetConfig(distribution="trace", trace=str(path)), 0)
    assert str(err.value) == (f"fleet.trace: {path}:2: column 1 (device_id) is not an integer; columns: "
                              "device_id,memory_mb[,gflops[,up_mbps[,down_mbps]]]")


def test_missing_trace_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_fleet(FleetConfig(distribution="trace", trace=str(tmp_path / "nope.csv")), 0)


def test_validation_builds_the_fleet_so_each_distribution_checks_its_own_parameters(tmp_path, monkeypatch):
    """A distribution's parameters are checked where it is defined: a registered one (a plugin's) is
    checked as the built-in ones are, and a trace's length is the fleet size clients_per_round must fit."""
    def strict(cfg: FleetConfig, g: object) -> list:
        raise ConfigError("fleet: 'strict' needs sigma = 0")

    monkeypatch.setitem(FLEETS._entries, "strict", strict)  # as a plugin's @FLEETS.register("strict")
    with pytest.raises(ConfigError, match="'strict' needs sigma = 0"):
        validate_fleet(FleetConfig(distribution="strict"))
    path = tmp_path / "fleet.csv"
    path.write_text("1,5\n2,6\n")
    assert validate_fleet(FleetConfig(distribution="trace", trace=str(path), devices=50)) == 2
    with pytest.raises(ConfigError, match=r"clients_per_round \(3\) exceeds the fleet's 2 devices"):
        suite_from_dict(tiny_raw(clients_per_round=3, fleet={"distribution": "trace", "trace": str(path)}))


@pytest.mark.parametrize(("fleet", "match"), [
    ({"distribution": "tiers", "tiers_mb": [1.0, 2.0], "tier_weights": [float("nan"), 1.0]}, "tier_weights"),
    ({"distribution": "tiers", "tiers_mb": [1.0, 2.0], "tier_weights": [0.0, 0.0]}, "tier_weights"),
    ({"distribution": "lognormal", "median_mb": 4.0, "sigma": 1000.0}, "not a finite number of MB"),
    ({"distribution": "uniform", "devices": 0}, "fleet.devices must be at least 1"),
])
def test_a_distribution_refuses_parameters_it_cannot_draw_from(fleet, match):
    with pytest.raises(ConfigError, match=match):
        validate_fleet(FleetConfig(**fleet))


def test_a_trace_ignores_the_device_count(tmp_path):
    path = tmp_path / "fleet.csv"
    path.write_text("1,5\n")
    assert validate_fleet(FleetConfig(distribution="trace", trace=str(path), devices=0)) == 1
