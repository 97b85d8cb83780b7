"""``flowsched connections|variables|rotate-fernet-key`` as real processes, on both backends."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

from flowsched import Connection, Variable
from flowsched.crypto import generate_key
from tests.test_cli import flowsched


def test_connections_commands(home, tmp_path):
    home.configure(core={"fernet_key": generate_key()})
    out = flowsched(
        home, "connections", "add", "wh", "--conn-uri", "mysql://etl:S3cr%40t@db:3306/dw"
    ).stdout
    assert "Successfully added `conn_id`=wh" in out
    flowsched(
        home,
        "connections", "add", "api",
        "--conn-type", "http", "--conn-host", "api.example.com", "--conn-port", "443",
        "--conn-extra", '{"api_token": "tok-123456", "verify": "yes"}',
        "--conn-description", "the API",
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "flowsched", "connections", "add", "ftp", "--conn-type", "ftp",
         "--conn-login", "me", "--conn-password-stdin"],
        input="from-stdin-pw\n", capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, **home.env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Connection.get("ftp").password == "from-stdin-pw"
    assert Connection.get("wh").password == "S3cr@t"

    listing = flowsched(home, "connections", "list").stdout
    assert [line.split()[0] for line in listing.splitlines()[2:]] == ["api", "ftp", "wh"]
    assert "S3cr" not in listing and "tok-" not in listing
    got = json.loads(flowsched(home, "connections", "get", "api", "-o", "json").stdout)
    assert got["host"] == "api.example.com" and got["port"] == 443 and got["source"] == "database"
    assert json.loads(got["extra"]) == {"api_token": "***", "verify": "yes"}
    got = json.loads(flowsched(home, "connections", "get", "wh", "-o", "json").stdout)
    assert got["password"] == "***"

    duplicate = flowsched(home, "connections", "add", "wh", "--conn-type", "x", check=False)
    assert (
        duplicate.returncode == 1 and "error: a connection 'wh' already exists" in duplicate.stderr
    )
    mixed = flowsched(home, "connections", "add", "z", "--conn-uri", "a://b", "--conn-host", "h",
                      check=False)  # fmt: skip
    assert mixed.returncode == 2 and "give one of" in mixed.stderr

    exported = tmp_path / "conns.json"
    flowsched(home, "connections", "export", str(exported))
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    data = json.loads(exported.read_text())
    assert data["wh"]["password"] == "S3cr@t" and data["api"]["port"] == 443
    uris = tmp_path / "conns.yaml"
    flowsched(home, "connections", "export", str(uris), "--serialization-format", "uri")
    assert "mysql://etl:S3cr%40t@db:3306/dw" in uris.read_text()

    for conn_id in ("api", "ftp", "wh"):
        assert "Successfully deleted" in flowsched(home, "connections", "delete", conn_id).stdout
    missing = flowsched(home, "connections", "delete", "wh", check=False)
    assert missing.returncode == 1 and "no connection 'wh'" in missing.stderr
    flowsched(home, "connections", "import", str(exported))
    assert Connection.get("wh").password == "S3cr@t"
    again = flowsched(home, "connections", "import", str(exported), check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert "Imported 3" in flowsched(home, "connections", "import", str(uris), "--overwrite").stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"ok": "http://h", "bad": {"conn_type": "x", "port": "eighty"}}')
    result = flowsched(home, "connections", "import", str(bad), check=False)
    assert result.returncode == 1 and "connection 'bad': port 'eighty'" in result.stderr
    assert "ok" not in flowsched(home, "connections", "list").stdout.split()  # all or nothing


def test_variables_commands(home, tmp_path):
    home.configure(core={"fernet_key": generate_key()})
    assert "created" in flowsched(home, "variables", "set", "env", "prod").stdout
    flowsched(home, "variables", "set", "cfg", '{"a": [1, 2]}', "-j", "--description", "settings")
    bad = flowsched(home, "variables", "set", "cfg", "{nope", "-j", check=False)
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    assert flowsched(home, "variables", "get", "env").stdout == "prod\n"
    assert json.loads(flowsched(home, "variables", "get", "cfg", "-j").stdout) == {"a": [1, 2]}
    assert flowsched(home, "variables", "get", "nope", "-d", "fallback").stdout == "fallback\n"
    missing = flowsched(home, "variables", "get", "nope", check=False)
    assert missing.returncode == 1 and "Variable nope does not exist" in missing.stderr
    listing = flowsched(home, "variables", "list").stdout
    assert "cfg" in listing and "settings" in listing and "prod" not in listing

    exported = tmp_path / "vars.json"
    flowsched(home, "variables", "export", str(exported))
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    assert json.loads(exported.read_text()) == {"cfg": {"a": [1, 2]}, "env": "prod"}
    flowsched(home, "variables", "delete", "env")
    flowsched(home, "variables", "delete", "cfg")
    assert flowsched(home, "variables", "delete", "cfg", check=False).returncode == 1
    flowsched(home, "variables", "import", str(exported))
    assert Variable.get("cfg", deserialize_json=True) == {"a": [1, 2]}
    (tmp_path / "more.yaml").write_text("env: staging\nnew: 5\n")
    failed = flowsched(home, "variables", "import", str(tmp_path / "more.yaml"), "-a", "fail",
                       check=False)  # fmt: skip
    assert failed.returncode == 1 and "already exist: env" in failed.stderr
    out = flowsched(home, "variables", "import", str(tmp_path / "more.yaml"), "-a", "skip").stdout
    assert "1 of 2" in out and Variable.get("env") == "prod" and Variable.get("new") == "5"


def test_rotate_fernet_key_command(home):
    key = flowsched(home, "rotate-fernet-key", "--generate").stdout.strip()
    assert len(key) == 44 and key.endswith("=")
    refused = flowsched(home, "variables", "set", "k", "v", check=False)
    assert refused.returncode == 1
    assert "refusing to store variable 'k': core.fernet_key is empty" in refused.stderr
    home.configure(core={"fernet_key": key})
    flowsched(home, "variables", "set", "k", "v-rotated")
    flowsched(home, "connections", "add", "c", "--conn-uri", "http://u:pw-rotated@h")
    new = generate_key()
    home.configure(core={"fernet_key": f"{new},{key}"})
    out = flowsched(home, "rotate-fernet-key").stdout
    assert "re-encrypted 1 connection(s) and 1 variable(s)" in out
    home.configure(core={"fernet_key": new})
    assert flowsched(home, "variables", "get", "k").stdout == "v-rotated\n"
    assert Connection.get("c").password == "pw-rotated"
