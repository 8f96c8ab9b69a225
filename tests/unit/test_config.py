"""The topology's loading: unknown keys refused with the closest valid one, environment overrides, sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from bookstore.cli import app
from bookstore.config import Topology, load_with_sources
from bookstore.kernel.settings import SettingsError


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.toml"
    path.write_text(text)
    return path


def test_a_typo_in_the_file_is_refused_naming_the_key_and_the_closest_valid_one(tmp_path: Path) -> None:
    path = _file(tmp_path, '[storage]\ntable = "dynamodb"\n')
    with pytest.raises(SettingsError) as refused:
        Topology.load(path, environ={})
    assert refused.value.problems == ["unknown key [storage] 'table'; did you mean 'tables'?"]
    assert str(path) in str(refused.value)


def test_unknown_keys_are_found_at_every_depth_and_in_the_regions(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        'home_regoin = "eu-west-1"\n[edge.health]\npth = "/x"\n'
        '[[regions]]\nid = "eu-west-1"\nname = "I"\nflag = "x"\naddress = "127.0.1.1"\napi_prt = 1\n',
    )
    with pytest.raises(SettingsError) as refused:
        Topology.load(path, environ={})
    assert refused.value.problems == [
        "unknown key 'home_regoin'; did you mean 'home_region'?",
        "unknown key [edge.health] 'pth'; did you mean 'path'?",
        "unknown key [regions[0]] 'api_prt'; did you mean 'api_port'?",
    ]


def test_a_key_like_none_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="valid keys: tables, ranking, redis_url"):
        Topology.load(_file(tmp_path, "[storage]\nzzzzzz = 1\n"), environ={})


def test_the_model_itself_forbids_unknown_keys() -> None:
    # What builds a topology in code (a tool, a test) gets no silent default either.
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Topology.model_validate({"storage": {"table": "dynamodb"}})


def test_environment_variables_override_the_file_and_the_defaults(tmp_path: Path) -> None:
    path = _file(tmp_path, '[storage]\ntables = "sqlite"\nranking = "redis"\n')
    environ = {
        "BOOKSTORE_STORAGE__TABLES": "dynamodb",
        "BOOKSTORE_CONTROL_PORT": "7171",
        "BOOKSTORE_ACTIVE": "eu-west-1,us-east-1",
        "BOOKSTORE_EDGE__HEALTH__PATH": "/health",
        "BOOKSTORE_EDGE__RETRY": "false",
        # Other settings of ours share the prefix: they are not topology keys and are left alone.
        "BOOKSTORE_DATA_DIR": "/somewhere",
        "BOOKSTORE_OPERATOR_TOKEN": "x",
    }
    loaded = load_with_sources(path, environ)
    topology = loaded.topology
    assert topology.storage.tables == "dynamodb"
    assert topology.storage.ranking == "redis"
    assert topology.control_port == 7171
    assert topology.active == ("eu-west-1", "us-east-1")
    assert topology.edge.health is not None and topology.edge.health.path == "/health"
    assert topology.edge.retry is False
    assert loaded.sources["storage.tables"] == "env:BOOKSTORE_STORAGE__TABLES"
    assert loaded.sources["storage.ranking"] == "file"
    assert loaded.sources["storage.durability"] == "default"
    assert loaded.sources["edge.health.path"] == "env:BOOKSTORE_EDGE__HEALTH__PATH"
    assert loaded.sources["edge.health.interval_s"] == "default"
    assert loaded.sources["regions[2].id"] == "default"


def test_a_json_value_sets_a_whole_list(tmp_path: Path) -> None:
    loaded = load_with_sources(None, {"BOOKSTORE_ACTIVE": '["eu-west-1"]'})
    assert loaded.topology.active == ("eu-west-1",)


def test_a_mistyped_variable_is_refused_naming_the_closest_key() -> None:
    with pytest.raises(SettingsError) as refused:
        Topology.load(None, environ={"BOOKSTORE_STORAGE__TABLE": "dynamodb"})
    assert refused.value.problems == [
        "BOOKSTORE_STORAGE__TABLE: unknown key [storage] 'table'; did you mean 'tables'?"
    ]
    with pytest.raises(SettingsError, match="'storag'; did you mean 'storage'"):
        Topology.load(None, environ={"BOOKSTORE_STORAG__TABLES": "dynamodb"})


def test_a_bad_value_from_a_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOKSTORE_STORAGE__TABLES", "oracle")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "storage.tables: Input should be 'sqlite' or 'dynamodb' (from BOOKSTORE_STORAGE__TABLES)" in (
        result.output
    )


def test_a_typo_ends_a_command_with_the_message_and_exit_2(tmp_path: Path) -> None:
    path = _file(tmp_path, '[storage]\ntable = "dynamodb"\n')
    result = CliRunner().invoke(app, ["config", "show", "--topology", str(path)])
    assert result.exit_code == 2
    assert "unknown key [storage] 'table'; did you mean 'tables'?" in result.output
    assert "Traceback" not in result.output


def test_a_file_that_is_not_toml_is_refused_with_a_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["config", "show", "--topology", str(_file(tmp_path, "[storage\n"))])
    assert result.exit_code == 2
    assert "not valid TOML" in result.output


def test_config_show_prints_each_value_and_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(
        tmp_path, 'home_region = "ap-southeast-1"\n[s3]\naccess_key_id = "AK"\nsecret_access_key = "SK"\n'
    )
    monkeypatch.setenv("BOOKSTORE_STORAGE__TABLES", "dynamodb")
    shown = CliRunner().invoke(app, ["config", "show", "--topology", str(path)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert 'home_region = "ap-southeast-1"  # file' in lines
    assert 'storage.tables = "dynamodb"  # env:BOOKSTORE_STORAGE__TABLES' in lines
    assert "control_port = 7070  # default" in lines
    assert 's3.secret_access_key = "***"  # file' in lines

    as_json = CliRunner().invoke(app, ["config", "show", "--json", "--topology", str(path)])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    settings = {s["key"]: (s["value"], s["source"]) for s in document["settings"]}
    assert document["file"] == str(path)
    assert settings["storage.tables"] == ("dynamodb", "env:BOOKSTORE_STORAGE__TABLES")
    assert settings["home_region"] == ("ap-southeast-1", "file")
    assert settings["edge.port"] == (8080, "default")
    assert "SK" not in as_json.stdout


def test_direct_links_reach_the_other_region_at_its_own_address(tmp_path: Path) -> None:
    from bookstore.config import link_address

    simulated = Topology()
    assert link_address(simulated, "eu-west-1", "ap-southeast-1") == "127.0.1.102"
    direct = Topology.load(_file(tmp_path, 'links = "direct"\n'))
    assert link_address(direct, "eu-west-1", "ap-southeast-1") == "127.0.2.1"
    one_pair = Topology(direct_links=(("us-east-1", "eu-west-1"),))
    assert link_address(one_pair, "eu-west-1", "us-east-1") == "127.0.3.1"
    assert link_address(one_pair, "us-east-1", "eu-west-1") == "127.0.1.1"
    assert link_address(one_pair, "eu-west-1", "ap-southeast-1") == "127.0.1.102"
    assert one_pair.simulated_links and not direct.simulated_links


def test_no_supervisor_needs_direct_links_between_every_pair_of_regions() -> None:
    with pytest.raises(
        ValidationError, match=r"supervised = false needs direct links.*eu-west-1 <-> ap-southeast-1"
    ):
        Topology(supervised=False)
    Topology(supervised=False, links="direct")
    # Every region's pairs, the inactive N. Virginia's too: a host may serve it.
    with pytest.raises(
        ValidationError, match=r"simulated: eu-west-1 <-> us-east-1, ap-southeast-1 <-> us-east-1 \["
    ):
        Topology(supervised=False, direct_links=(("ap-southeast-1", "eu-west-1"),))
    pairs = (("ap-southeast-1", "eu-west-1"), ("eu-west-1", "us-east-1"), ("us-east-1", "ap-southeast-1"))
    Topology(supervised=False, direct_links=pairs)
    with pytest.raises(ValidationError, match="unknown region 'mars-1'"):
        Topology(direct_links=(("mars-1", "eu-west-1"),))


def test_a_simulator_of_a_partly_direct_topology_proxies_only_the_simulated_pairs() -> None:
    from bookstore.domain.errors import ValidationError as Refused
    from bookstore.netsim.simulator import LinkSimulator

    topology = Topology(
        active=("eu-west-1", "ap-southeast-1", "us-east-1"), direct_links=(("eu-west-1", "us-east-1"),)
    )
    links = LinkSimulator(topology)
    assert ("eu-west-1", "ap-southeast-1") in links._links and ("us-east-1", "eu-west-1") not in links._links
    with pytest.raises(Refused, match="direct link in the topology"):
        links.link("us-east-1", "eu-west-1")


def test_a_test_runs_loopback_network_is_a_valid_address_byte_whatever_it_is_moved_by(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.regions import loopback_network

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("BOOKSTORE_TEST_NETWORK", "100")
    assert (loopback_network(), loopback_network(-50)) == (101, 51)
    for base in ("1", "42", "200", "254"):
        monkeypatch.setenv("BOOKSTORE_TEST_NETWORK", base)
        assert all(1 <= loopback_network(offset) <= 254 for offset in (-50, 0, 3))
