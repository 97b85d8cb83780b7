"""Connections and variables: URIs, lookup order, encryption at rest, rotation, masking."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from flowsched import BaseHook, Connection, Variable
from flowsched.config import load_config
from flowsched.connection import ConnectionNotFound, InvalidConnection
from flowsched.crypto import DecryptionFailed, FernetKeyMissing, generate_key
from flowsched.db.engine import session_scope
from flowsched.exceptions import ConfigError
from flowsched.secrets import find_connection, find_variable
from flowsched.secrets.local_filesystem import SecretsFileError
from flowsched.secrets.metastore import (
    AlreadyExists,
    add_connection,
    delete_connection,
    list_connections,
    rotate_fernet_key,
    set_variable,
    update_connection,
)
from flowsched.secrets_masker import SecretsMasker, redact


@pytest.fixture
def keyed(home):
    """A home with a Fernet key: secrets may be stored."""
    home.configure(core={"fernet_key": generate_key()})
    return home


# -- the Connection value ---------------------------------------------------------
def test_uri_parsing_as_airflow():
    conn = Connection(
        conn_id="db",
        uri="postgresql://us%40er:p%2Fw%3Ad@Db.Example.com:5432/my%20db?sslmode=require",
    )
    assert (conn.conn_type, conn.host, conn.port, conn.schema) == (
        "postgres",
        "Db.Example.com",
        5432,
        "my db",
    )
    assert (conn.login, conn.password) == ("us@er", "p/w:d")
    assert conn.extra_dejson == {"sslmode": "require"}
    assert Connection(conn_id="db", uri=conn.get_uri()).to_dict() == conn.to_dict()
    assert (
        Connection(conn_id="x", uri="google-cloud-platform://").conn_type == "google_cloud_platform"
    )


def test_nested_extra_round_trips_through_the_extra_key():
    conn = Connection(conn_id="api", conn_type="http", host="h", extra={"a": {"b": [1, 2]}})
    uri = conn.get_uri()
    assert "__extra__=" in uri
    assert Connection(conn_id="api", uri=uri).extra_dejson == {"a": {"b": [1, 2]}}


def test_malformed_connections_are_named():
    with pytest.raises(InvalidConnection, match=r"'bad'.*not valid JSON"):
        Connection(conn_id="bad", conn_type="http", extra="{oops")
    with pytest.raises(InvalidConnection, match=r"'bad'.*port 'x'"):
        Connection(conn_id="bad", conn_type="http", port="x")
    with pytest.raises(InvalidConnection, match="either a URI or separate fields"):
        Connection(conn_id="bad", uri="http://h", host="h")
    with pytest.raises(InvalidConnection, match=r"unknown field.*hostname"):
        Connection.from_dict("bad", {"conn_type": "http", "hostname": "h"})


# -- lookup order -------------------------------------------------------------------
def test_environment_then_files_then_database(keyed, monkeypatch, tmp_path):
    add_connection(
        Connection(conn_id="shared", conn_type="mysql", host="from-db", password="dbpw1")
    )
    add_connection(Connection(conn_id="db_only", conn_type="mysql", host="db-host"))
    set_variable("level", "from-db")
    set_variable("db_var", "only-in-db")
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "team.yaml").write_text(
        "connections:\n"
        "  shared: http://fileuser:filepw1@from-file:8080/\n"
        "  file_only: {conn_type: http, host: file-host, extra: {verify: false}}\n"
        "variables:\n"
        "  level: from-file\n"
        "  limits: {rows: 10}\n"
    )
    (folder / "more.json").write_text(json.dumps({"variables": {"json_var": "j"}}))
    (folder / "README.txt").write_text("not a secrets file")
    keyed.configure(secrets={"files_folder": str(folder)})
    monkeypatch.setenv("FLOWSCHED_CONN_SHARED", '{"conn_type": "ftp", "host": "from-env"}')
    monkeypatch.setenv("FLOWSCHED_VAR_LEVEL", "from-env")

    assert find_connection("shared")[0].host == "from-env"
    assert find_connection("shared")[1] == "environment"
    monkeypatch.delenv("FLOWSCHED_CONN_SHARED")
    shared = BaseHook.get_connection("shared")
    assert (shared.host, shared.port, shared.password) == ("from-file", 8080, "filepw1")
    assert find_connection("file_only")[0].extra_dejson == {"verify": False}
    assert Connection.get("db_only").host == "db-host"
    assert find_connection("db_only")[1] == "database"
    with pytest.raises(ConnectionNotFound, match="`nope` isn't defined"):
        Connection.get("nope")

    assert Variable.get("level") == "from-env"
    monkeypatch.delenv("FLOWSCHED_VAR_LEVEL")
    assert find_variable("level") == ("from-file", "files")
    assert Variable.get("limits", deserialize_json=True) == {"rows": 10}
    assert Variable.get("json_var") == "j"
    assert Variable.get("db_var") == "only-in-db"
    assert Variable.get("missing", default_var=None) is None
    with pytest.raises(KeyError, match="Variable missing does not exist"):
        Variable.get("missing")


def test_bad_secrets_files_are_named(keyed, tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir()
    keyed.configure(secrets={"files_folder": str(folder)})
    (folder / "a.yaml").write_text("variables: {x: 1}\n")
    (folder / "b.yml").write_text("variables: {x: 2}\n")
    with pytest.raises(SecretsFileError, match=r"'x' is defined in both .*a\.yaml and .*b\.yml"):
        Variable.get("x")
    (folder / "b.yml").write_text("variable: {y: 2}\n")
    with pytest.raises(SecretsFileError, match=r"b\.yml: unknown top-level key\(s\) variable"):
        Variable.get("x")
    (folder / "b.yml").write_text("connections: {c: 42}\n")
    with pytest.raises(InvalidConnection, match=r"b\.yml: connection 'c' must be a URI"):
        Connection.get("c")
    (folder / "b.yml").write_text("connections: [\n")
    with pytest.raises(SecretsFileError, match=r"b\.yml: not valid yml"):
        Connection.get("c")


def test_env_connection_that_is_not_a_uri(home, monkeypatch):
    monkeypatch.setenv("FLOWSCHED_CONN_BROKEN", "just-a-host")
    with pytest.raises(InvalidConnection, match=r"FLOWSCHED_CONN_BROKEN.*not a URI"):
        Connection.get("broken")


# -- the database: encrypted, audited, refused without a key -------------------------
def _raw(sql: str) -> list[tuple]:
    with session_scope() as session:
        return [tuple(row) for row in session.execute(text(sql))]


def test_secrets_are_encrypted_at_rest(keyed):
    add_connection(
        Connection(
            conn_id="wh",
            conn_type="mysql",
            host="db",
            login="etl",
            password="hunter2-secret",
            extra={"api_token": "tok-123456"},
        ),
        actor="test",
    )
    Variable.set("api_key", "k-987654321", description="for the API")
    Variable.set("config", {"a": [1, 2]}, serialize_json=True)
    [(password, extra)] = _raw("SELECT password, extra FROM connection WHERE conn_id = 'wh'")
    [(val,)] = _raw("SELECT val FROM variable ORDER BY id LIMIT 1")
    for stored, clear in ((password, "hunter2"), (extra, "tok-123456"), (val, "k-987654321")):
        assert clear not in stored and stored.startswith("gAAAA")  # a Fernet token
    assert Connection.get("wh").password == "hunter2-secret"
    assert Variable.get("api_key") == "k-987654321"
    assert Variable.get("config", deserialize_json=True) == {"a": [1, 2]}
    events = _raw("SELECT event, actor, extra FROM audit_log ORDER BY id")
    assert events[0][:2] == ("connection_add", "test")
    assert all("hunter2" not in str(e) and "k-987" not in str(e) for e in events)

    with pytest.raises(AlreadyExists, match="'wh' already exists"):
        add_connection(Connection(conn_id="wh", conn_type="mysql"))
    updated = update_connection("wh", {"host": "db2"})
    assert (updated.host, updated.password) == ("db2", "hunter2-secret")  # others kept
    assert Variable.setdefault("fresh", {"n": 1}, deserialize_json=True) == {"n": 1}
    assert Variable.setdefault("fresh", {"n": 2}, deserialize_json=True) == {"n": 1}
    assert Connection.get("wh").get_password() == "hunter2-secret"
    Variable.update("api_key", "k-new-value")
    assert Variable.get("api_key") == "k-new-value"
    assert [c.conn_id for c in list_connections()] == ["wh"]
    assert list_connections()[0].password is None  # listing never decrypts
    delete_connection("wh")
    assert Variable.delete("api_key") == 1 and Variable.delete("api_key") == 0
    with pytest.raises(ConnectionNotFound):
        delete_connection("wh")


def test_no_key_no_secrets_stored(home):
    with pytest.raises(FernetKeyMissing, match="refusing to store the password of connection 'c'"):
        add_connection(Connection(conn_id="c", conn_type="mysql", password="pw-12345"))
    with pytest.raises(FernetKeyMissing, match=r"store variable 'v'.*rotate-fernet-key"):
        Variable.set("v", "value")
    assert _raw("SELECT COUNT(*) FROM connection") == [(0,)]
    assert _raw("SELECT COUNT(*) FROM variable") == [(0,)]
    add_connection(Connection(conn_id="public", conn_type="http", host="example.com"))
    assert Connection.get("public").host == "example.com"  # nothing secret: stored


def test_rotation_and_wrong_keys(keyed):
    old = keyed.settings["core"]["fernet_key"]
    add_connection(Connection(conn_id="c", conn_type="mysql", password="pw-rotate"))
    Variable.set("v", "value-rotate")
    new = generate_key()
    keyed.configure(core={"fernet_key": f"{new},{old}"})
    assert rotate_fernet_key() == (1, 1)
    keyed.configure(core={"fernet_key": new})  # the old key dropped: still readable
    assert Connection.get("c").password == "pw-rotate"
    assert Variable.get("v") == "value-rotate"
    keyed.configure(core={"fernet_key": old})
    with pytest.raises(DecryptionFailed, match="cannot decrypt variable 'v': no key"):
        Variable.get("v")
    with pytest.raises(DecryptionFailed, match="cannot rotate the password of connection 'c'"):
        rotate_fernet_key()


def test_malformed_fernet_key_fails_at_load(tmp_path):
    good = generate_key()
    with pytest.raises(ConfigError, match=r"\[core\] fernet_key = .*key 2 of the list"):
        load_config(tmp_path / "none.cfg", {"FLOWSCHED__CORE__FERNET_KEY": f"{good},nope"})
    conf = load_config(tmp_path / "none.cfg", {"FLOWSCHED__CORE__FERNET_KEY": good})
    assert conf.as_dict()["core"]["fernet_key"] == "***"


# -- masking ----------------------------------------------------------------------------
def test_masker_replaces_secrets_and_sensitive_keys():
    masker = SecretsMasker()
    masker.add_mask("pa ss/word")
    masker.add_mask("abc")  # too short to mask
    masker.add_mask({"api_token": "tok-abcdef", "region": "eu-west-1"})
    line = "login with pa ss/word or pa%20ss%2Fword, token tok-abcdef in eu-west-1, abc"
    assert masker.redact(line) == "login with *** or ***, token *** in eu-west-1, abc"
    assert masker.redact({"password": "whatever", "x": ["tok-abcdef"]}) == {
        "password": "***",
        "x": ["***"],
    }
    assert redact("nothing registered here") == "nothing registered here"


def test_standalone_home_gets_its_own_fernet_key(tmp_path, monkeypatch):
    from flowsched.config import set_config
    from flowsched.db.engine import reset_engine
    from flowsched.standalone import initialise_home

    for name in ("FLOWSCHED_CONFIG", "FLOWSCHED__CORE__FERNET_KEY"):
        monkeypatch.delenv(name, raising=False)
    keys = []
    try:
        for name in ("one", "two"):
            monkeypatch.setenv("FLOWSCHED_HOME", str(tmp_path / name))
            initialise_home()
            Variable.set("token", f"secret-of-{name}")
            assert Variable.get("token") == f"secret-of-{name}"
            keys.append(load_config().core.fernet_key)
            reset_engine()
    finally:
        set_config(None)
        reset_engine()
    assert keys[0] != keys[1] and all(len(key) == 44 for key in keys)  # fresh per home
