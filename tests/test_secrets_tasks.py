"""Tasks reading variables and connections through the local executor; secrets masked in logs."""

from __future__ import annotations

from flowsched import Connection, Variable, operations
from flowsched.crypto import generate_key
from flowsched.secrets.metastore import add_connection
from flowsched.task_logs.files import log_path
from tests.harness import drive, parse, run_finished, ti_states, tries

LOG_LIMIT = 1 << 20

USES_SECRETS = """
from datetime import datetime
import os, subprocess, sys
from flowsched import DAG, BaseHook, BashOperator, Variable, task

with DAG("uses_secrets", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    templated = BashOperator(
        task_id="templated",
        bash_command=(
            "echo host={{ conn.warehouse.host }} port={{ conn.warehouse.port }} "
            "pw={{ conn.warehouse.password }} greeting={{ var.value.greeting }} "
            "field={{ var.json.settings.field }} optional={{ var.value.get('nope', 'dflt') }}"
        ),
    )

    @task
    def in_python():
        conn = BaseHook.get_connection("warehouse")
        token = Variable.get("service_token")
        print(f"python print: login={conn.login} password={conn.password} token={token}")
        print(f"plain variable: {Variable.get('greeting')}", file=sys.stderr)
        # a child process writing straight to fd 1, below Python's sys.stdout
        subprocess.run(["sh", "-c", f"echo child wrote {conn.password} and {token}"], check=True)
        os.system(f"echo os.system wrote {conn.password}")
        raise RuntimeError(f"failing with {conn.password} in the message")

    @task
    def env_only():
        # never looked up through flowsched: the env secret is masked from the start
        os.system("echo env password is "
                  "$(printenv FLOWSCHED_CONN_ENVDB | cut -d: -f3 | cut -d@ -f1)")

    templated >> in_python()
    env_only()
"""


def _log(run_id: str, task_id: str) -> str:
    with log_path("uses_secrets", run_id, task_id, 1).open("rb") as handle:
        return handle.read(LOG_LIMIT).decode()


def test_task_reads_variables_and_connections_and_logs_mask_them(home, monkeypatch):
    home.configure(core={"fernet_key": generate_key()})
    add_connection(
        Connection(
            conn_id="warehouse",
            conn_type="mysql",
            host="db.internal",
            port=3306,
            login="etl",
            password="Wh-Pa55word",
        )
    )
    Variable.set("greeting", "hello-world")
    Variable.set("settings", {"field": "from-json"}, serialize_json=True)
    Variable.set("service_token", "tok-ABCDEFGH")
    monkeypatch.setenv("FLOWSCHED_CONN_ENVDB", "mysql://u:EnvSecret99@envhost:3306/x")
    home.write_dag("uses_secrets.py", USES_SECRETS)
    parse()
    run = operations.trigger_dag("uses_secrets")
    drive(run_finished("uses_secrets"))
    states = ti_states("uses_secrets")
    assert states["templated"] == ("success", 1)
    assert states["in_python"][0] in ("failed", "up_for_retry")
    assert states["env_only"] == ("success", 1)

    templated = _log(run.run_id, "templated")
    assert "host=db.internal port=3306 pw=*** greeting=hello-world" in templated
    assert "field=from-json optional=dflt" in templated
    rendered = tries("uses_secrets", "templated")[0].rendered_fields["bash_command"]
    assert "pw=***" in rendered and "Wh-Pa55word" not in rendered

    python = _log(run.run_id, "in_python")
    assert "python print: login=etl password=*** token=***" in python
    assert "plain variable: hello-world" in python  # not a sensitive key: shown
    assert "child wrote *** and ***" in python
    assert "os.system wrote ***" in python
    assert "failing with *** in the message" in python
    for secret in ("Wh-Pa55word", "tok-ABCDEFGH"):
        assert secret not in python and secret not in templated
    error = tries("uses_secrets", "in_python")[0].error
    assert "***" in error and "Wh-Pa55word" not in error

    env_log = _log(run.run_id, "env_only")
    assert "env password is ***" in env_log and "EnvSecret99" not in env_log
