"""The topology's choice of the blog's database: `[storage] blog` and each region's DSNs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from bookstore.config import MysqlDsn, Topology, parse_mysql_dsn
from bookstore.replication.blog.mariadb_node import MysqlBlogTopology

TWO = """
home_region = "eu-west-1"
active = ["eu-west-1", "ap-southeast-1"]

[[regions]]
id = "eu-west-1"
name = "Ireland"
flag = "IE"
address = "127.0.1.1"
{eu}

[[regions]]
id = "ap-southeast-1"
name = "Singapore"
flag = "SG"
address = "127.0.2.1"
{ap}

[storage]
blog = "{blog}"
"""
EU_DSNS = (
    'blog_dsn = "mysql://app:p%40ss@127.0.0.1:3307/blog"\nblog_admin_dsn = "mysql://root@127.0.0.1:3307"'
)
AP_DSNS = (
    'blog_dsn = "mysql://app:other@127.0.0.1:3308/blog"\nblog_admin_dsn = "mysql://root:pw@127.0.0.1:3308"'
)


def load(tmp_path: Path, **values: str) -> Topology:
    path = tmp_path / "topology.toml"
    path.write_text(TWO.format(**{"eu": EU_DSNS, "ap": AP_DSNS, "blog": "mysql", **values}), encoding="utf-8")
    return Topology.load(path)


def test_the_blog_defaults_to_sqlite_and_needs_no_dsn() -> None:
    assert Topology().storage.blog == "sqlite"
    assert (
        Topology.model_validate(tomllib.loads(TWO.format(eu="", ap="", blog="sqlite"))).storage.blog
        == "sqlite"
    )


def test_an_unknown_blog_backend_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        load(tmp_path, blog="oracle")
    assert "storage.blog" in str(refused.value) and "'sqlite' or 'mysql'" in str(refused.value)


def test_the_mysql_blog_needs_both_dsns_of_every_active_region(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        load(tmp_path, ap='blog_dsn = "mysql://app:x@127.0.0.1:3308/blog"')
    message = str(refused.value)
    assert "ap-southeast-1 needs blog_dsn" in message and "blog_admin_dsn" in message
    with pytest.raises(ValidationError, match="names no database"):
        load(tmp_path, ap='blog_dsn = "mysql://app:x@127.0.0.1:3308"\nblog_admin_dsn = "mysql://root@h:1"')
    with pytest.raises(ValidationError, match="not a DSN"):
        load(tmp_path, ap='blog_dsn = "postgres://app@h/blog"\nblog_admin_dsn = "mysql://root@h:1"')


def test_the_dsns_give_each_server_and_one_replication_password_for_all(tmp_path: Path) -> None:
    assert parse_mysql_dsn("mysql://app:p%40ss@127.0.0.1:3307/blog") == MysqlDsn(
        "127.0.0.1", 3307, "app", "p@ss", "blog"
    )
    topology = load(tmp_path)
    eu = MysqlBlogTopology.of(topology, topology.region("eu-west-1"))
    ap = MysqlBlogTopology.of(topology, topology.region("ap-southeast-1"))
    assert (eu.servers["ap-southeast-1"].port, eu.servers["ap-southeast-1"].password) == (3308, "pw")
    assert (eu.accounts.app_user, eu.accounts.app_password, eu.database) == ("app", "p@ss", "blog")
    assert ap.accounts.app_password == "other"
    # Every server gets the same replication account, whichever region set it up.
    assert eu.accounts.repl_password == ap.accounts.repl_password
    assert eu.accounts.repl_password not in ("p@ss", "other", "")


def test_bookstore_up_refuses_a_topology_with_an_unknown_blog_backend_saying_why(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bookstore.cli import app

    path = tmp_path / "topology.toml"
    path.write_text('[storage]\nblog = "oracle"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["up", "--topology", str(path), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert "storage.blog: Input should be 'sqlite' or 'mysql'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "data").exists()
