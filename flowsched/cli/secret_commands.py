"""``flowsched connections ...``, ``variables ...`` and ``rotate-fernet-key``, as Airflow's.

They write the metadata database through :mod:`flowsched.secrets.metastore`
(validated, encrypted, audited as ``cli``). ``get`` looks in every backend,
in lookup order, and says which one answered. Export files hold secrets in
clear, so they are created readable by their owner only (mode 0600).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from flowsched.cli.output import table
from flowsched.exceptions import FlowschedError

ACTOR = "cli"


class ImportFileError(FlowschedError):
    """An import file cannot be read or is malformed; the message names the file."""


def _read_mapping(path: str) -> dict[str, Any]:
    """A JSON or YAML file (by suffix; '-' is JSON on stdin) holding one mapping."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read it: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ImportFileError(f"{path}: not valid JSON/YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ImportFileError(f"{path}: expected a mapping of id to definition")
    return data


def _write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (0600, replacing it) or stdout for '-'."""
    if path == "-":
        click.echo(text)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


def _dump(data: Any, path: str, file_format: str | None) -> str:
    chosen = file_format or ("yaml" if path.endswith((".yaml", ".yml")) else "json")
    if chosen == "yaml":
        return yaml.safe_dump(data, sort_keys=True, allow_unicode=True).rstrip("\n")
    return json.dumps(data, indent=2, sort_keys=True)


# -- connections -----------------------------------------------------------------
@click.group()
def connections() -> None:
    """Connections to external systems (passwords and extras encrypted at rest)."""


@connections.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def connections_list(output: str) -> None:
    """Connections stored in the database (no passwords, no extras)."""
    from flowsched.secrets.metastore import list_connections

    found = list_connections()
    if output == "json":
        click.echo(
            json.dumps(
                [{"conn_id": c.conn_id, **c.to_dict(password=False)} for c in found], indent=2
            )
        )
        return
    rows = [[c.conn_id, c.conn_type, c.host, c.port, c.login, c.schema] for c in found]
    table(rows, ["conn_id", "conn_type", "host", "port", "login", "schema"])


@connections.command("get")
@click.argument("conn_id")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def connections_get(conn_id: str, output: str) -> None:
    """One connection from the first backend defining it; the password shown as ***."""
    from flowsched.connection import ConnectionNotFound
    from flowsched.secrets import find_connection
    from flowsched.secrets_masker import MASK, redact

    found = find_connection(conn_id)
    if found is None:
        raise ConnectionNotFound(f"no connection '{conn_id}' in any backend")
    conn, source = found
    fields = conn.to_dict()
    if fields["password"]:
        fields["password"] = MASK
    if conn.extra:
        fields["extra"] = json.dumps(redact(conn.extra_dejson))
    if output == "json":
        click.echo(json.dumps({"conn_id": conn_id, "source": source, **fields}, indent=2))
        return
    table(
        [[key, value] for key, value in {"conn_id": conn_id, **fields, "source": source}.items()],
        ["field", "value"],
    )


@connections.command("add")
@click.argument("conn_id")
@click.option("--conn-uri", default=None, help="The whole connection as a URI.")
@click.option("--conn-json", default=None, help="The connection as a JSON object of fields.")
@click.option("--conn-type", default=None)
@click.option("--conn-description", default=None)
@click.option("--conn-host", default=None)
@click.option("--conn-login", default=None)
@click.option("--conn-password", default=None, help="Prefer --conn-password-stdin (ps shows argv).")
@click.option("--conn-password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--conn-schema", default=None)
@click.option("--conn-port", default=None)
@click.option("--conn-extra", default=None, help="A JSON object.")
def connections_add(
    conn_id: str,
    conn_uri: str | None,
    conn_json: str | None,
    conn_type: str | None,
    conn_description: str | None,
    conn_host: str | None,
    conn_login: str | None,
    conn_password: str | None,
    conn_password_stdin: bool,
    conn_schema: str | None,
    conn_port: str | None,
    conn_extra: str | None,
) -> None:
    """Add a connection (from a URI, JSON, or --conn-* fields)."""
    from flowsched.connection import Connection
    from flowsched.secrets.metastore import add_connection

    if conn_password_stdin:
        conn_password = sys.stdin.readline().rstrip("\n")
    fields = {
        "conn_type": conn_type,
        "host": conn_host,
        "login": conn_login,
        "password": conn_password,
        "schema": conn_schema,
        "port": conn_port,
        "extra": conn_extra,
    }
    given = [name for name, value in fields.items() if value is not None]
    if sum(x is not None for x in (conn_uri, conn_json)) + bool(given) > 1:
        raise click.UsageError("give one of --conn-uri, --conn-json or the --conn-* fields")
    if conn_uri:
        conn = Connection(conn_id=conn_id, uri=conn_uri, description=conn_description)
    elif conn_json:
        conn = Connection.from_json(conn_id, conn_json)
        conn.description = conn_description or conn.description
    else:
        if not conn_type:
            raise click.UsageError("--conn-type is required without --conn-uri or --conn-json")
        conn = Connection.from_dict(conn_id, {**fields, "description": conn_description})
    add_connection(conn, actor=ACTOR)
    click.echo(f"Successfully added `conn_id`={conn_id} : {conn.conn_type}://{conn.host or ''}")


@connections.command("delete")
@click.argument("conn_id")
def connections_delete(conn_id: str) -> None:
    """Delete a connection from the database."""
    from flowsched.secrets.metastore import delete_connection

    delete_connection(conn_id, actor=ACTOR)
    click.echo(f"Successfully deleted connection with `conn_id`={conn_id}")


@connections.command("import")
@click.argument("file")
@click.option("--overwrite", is_flag=True, help="Replace connections that already exist.")
def connections_import(file: str, overwrite: bool) -> None:
    """Add connections from a JSON/YAML file: {conn_id: URI or {conn_type, host, ...}}."""
    from flowsched.secrets.base import parse_connection
    from flowsched.secrets.metastore import AlreadyExists, add_connection, check_conn_id

    data = _read_mapping(file)
    parsed = []
    for conn_id, value in data.items():  # all checked before any is stored
        check_conn_id(str(conn_id))
        parsed.append(parse_connection(str(conn_id), value, file))
    added = skipped = 0
    for conn in parsed:
        try:
            add_connection(conn, actor=ACTOR, overwrite=overwrite)
            added += 1
        except AlreadyExists:
            skipped += 1
            click.echo(f"Could not import connection {conn.conn_id}: it already exists", err=True)
    click.echo(f"Imported {added} connection(s) from {file}; {skipped} skipped (already exist)")
    if skipped:
        sys.exit(1)


@connections.command("export")
@click.argument("file")
@click.option("--format", "file_format", type=click.Choice(["json", "yaml"]), default=None)
@click.option(
    "--serialization-format",
    type=click.Choice(["json", "uri"]),
    default="json",
    help="Each connection as a mapping of fields (json) or a URI.",
)
def connections_export(file: str, file_format: str | None, serialization_format: str) -> None:
    """Write every stored connection, secrets included, to FILE (mode 0600; '-' is stdout)."""
    from flowsched.secrets.metastore import list_connections

    data: dict[str, Any] = {}
    for conn in list_connections(secrets=True):
        assert conn.conn_id is not None
        data[conn.conn_id] = conn.get_uri() if serialization_format == "uri" else conn.to_dict()
    _write_private(file, _dump(data, file, file_format))
    if file != "-":
        click.echo(f"Exported {len(data)} connection(s) to {file}", err=True)


# -- variables -----------------------------------------------------------------------
@click.group()
def variables() -> None:
    """Variables for DAGs and templates (values encrypted at rest)."""


@variables.command("list")
def variables_list() -> None:
    """Variable keys stored in the database, with descriptions (no values)."""
    from flowsched.secrets.metastore import list_variables

    table([[v.key, v.description] for v in list_variables()], ["key", "description"])


@variables.command("get")
@click.argument("key")
@click.option("-j", "--json", "deserialize_json", is_flag=True, help="Parse the value as JSON.")
@click.option("-d", "--default", "default", default=None, help="Printed if the key is unknown.")
def variables_get(key: str, deserialize_json: bool, default: str | None) -> None:
    """Print a variable's value, from the first backend that defines it."""
    from flowsched.variable import NOTSET, Variable

    try:
        value = Variable.get(
            key,
            default_var=default if default is not None else NOTSET,
            deserialize_json=deserialize_json,
        )
    except KeyError:
        raise FlowschedError(f"Variable {key} does not exist") from None
    click.echo(json.dumps(value, indent=2) if deserialize_json else value)


@variables.command("set")
@click.argument("key")
@click.argument("value")
@click.option("-j", "--json", "serialize_json", is_flag=True, help="VALUE is JSON: check it.")
@click.option("--description", default=None)
def variables_set(key: str, value: str, serialize_json: bool, description: str | None) -> None:
    """Create or replace a variable in the database."""
    from flowsched.secrets.metastore import set_variable

    if serialize_json:
        try:
            value = json.dumps(json.loads(value), indent=2)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="VALUE") from None
    set_variable(key, value, description, actor=ACTOR)
    click.echo(f"Variable {key} created")


@variables.command("delete")
@click.argument("key")
def variables_delete(key: str) -> None:
    """Delete a variable from the database."""
    from flowsched.secrets.metastore import VariableNotFound, delete_variable

    if not delete_variable(key, actor=ACTOR):
        raise VariableNotFound(f"no variable '{key}' in the database")
    click.echo(f"Variable {key} deleted")


@variables.command("import")
@click.argument("file")
@click.option(
    "-a",
    "--action-on-existing-key",
    type=click.Choice(["overwrite", "fail", "skip"]),
    default="overwrite",
    help="What to do when a key is already stored.",
)
def variables_import(file: str, action_on_existing_key: str) -> None:
    """Set variables from a JSON/YAML file {key: value}; non-text values are stored as JSON."""
    from flowsched.secrets.metastore import check_key, list_variables, set_variable

    data = _read_mapping(file)
    for key in data:
        check_key(str(key))
    existing = {v.key for v in list_variables()} & {str(k) for k in data}
    if existing and action_on_existing_key == "fail":
        raise FlowschedError(
            f"{file}: variable(s) already exist: {', '.join(sorted(existing))} (nothing imported)"
        )
    count = 0
    for key, value in data.items():
        if str(key) in existing and action_on_existing_key == "skip":
            continue
        text = value if isinstance(value, str) else json.dumps(value, indent=2)
        set_variable(str(key), text, actor=ACTOR)
        count += 1
    click.echo(f"{count} of {len(data)} variables successfully updated from {file}")


@variables.command("export")
@click.argument("file")
def variables_export(file: str) -> None:
    """Write every stored variable to FILE as JSON (mode 0600; '-' is stdout).

    Values that are JSON are written parsed, as Airflow does, so import restores them.
    """
    from flowsched.secrets.metastore import list_variables

    data: dict[str, Any] = {}
    for variable in list_variables(values=True):
        try:
            data[variable.key] = json.loads(variable.val or "")
        except json.JSONDecodeError:
            data[variable.key] = variable.val
    _write_private(file, json.dumps(data, indent=2, sort_keys=True))
    if file != "-":
        click.echo(f"{len(data)} variables successfully exported to {file}", err=True)


# -- key rotation --------------------------------------------------------------------
@click.command("rotate-fernet-key")
@click.option("--generate", is_flag=True, help="Only print a new random key, change nothing.")
def rotate_fernet_key(generate: bool) -> None:
    """Re-encrypt every stored secret with the first key of core.fernet_key.

    To rotate: set core.fernet_key = NEW,OLD everywhere, run this once, then
    remove OLD. Everything is re-encrypted in one transaction, or nothing.
    """
    from flowsched.crypto import generate_key

    if generate:
        click.echo(generate_key())
        return
    from flowsched.secrets.metastore import rotate_fernet_key as rotate

    connections_done, variables_done = rotate(actor=ACTOR)
    click.echo(
        f"re-encrypted {connections_done} connection(s) and {variables_done} variable(s) "
        "with the first key of core.fernet_key"
    )


def register(cli: click.Group) -> None:
    cli.add_command(connections)
    cli.add_command(variables)
    cli.add_command(rotate_fernet_key)
