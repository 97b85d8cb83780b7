"""``flowsched webserver`` and ``flowsched users ...``: registered on the main CLI group."""

from __future__ import annotations

import sys

import click

from flowsched.cli.output import setup_logging, table
from flowsched.timezone import display


def _read_password(password: str | None, from_stdin: bool) -> str:
    """From stdin (scripts, Ansible: not visible in ``ps``), the option, or a prompt."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if password is not None:
        return password
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.command()
@click.option("--bind", default=None, help="host:port (default: webserver.bind).")
@click.option("--workers", type=int, default=None, help="gunicorn workers (webserver.workers).")
@click.option("--debug", is_flag=True, help="Flask's development server, with tracebacks.")
def webserver(bind: str | None, workers: int | None, debug: bool) -> None:
    """Serve the web UI and REST API (gunicorn) in the foreground; SIGTERM stops it."""
    from flowsched.db import migrate
    from flowsched.exceptions import DatabaseUnavailable, FlowschedError
    from flowsched.web.server import serve

    setup_logging()
    try:
        status = migrate.check()
    except DatabaseUnavailable as exc:
        click.echo(f"warning: {exc}; pages show an error until it answers", err=True)
    else:
        if status.pending:
            raise FlowschedError(
                f"the metadata database schema is at {status.current or 'nothing'}, "
                f"newest is {status.head}: run `flowsched db upgrade` first"
            )
    serve(bind=bind, workers=workers, debug=debug)


@click.group()
def users() -> None:
    """Create, list and delete web users; reset passwords; create API tokens."""


@users.command("create")
@click.argument("username")
@click.option(
    "--role",
    type=click.Choice(["admin", "op", "viewer"]),
    required=True,
    help="admin: everything; op: trigger, clear, pause; viewer: read only.",
)
@click.option("--password", default=None, help="Prefer --password-stdin: argv is visible in ps.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def users_create(username: str, role: str, password: str | None, password_stdin: bool) -> None:
    """Add a user who can log in to the webserver."""
    from flowsched.web.users import create_user

    user = create_user(username, _read_password(password, password_stdin), role, actor="cli")
    click.echo(f"created user {user.username} ({user.role.value})")


@users.command("list")
def users_list() -> None:
    """Every user with role, creation and last login."""
    from flowsched.web.users import list_users

    rows = [
        [u.username, u.role, display(u.created_at), display(u.last_login_at), u.tokens]
        for u in list_users()
    ]
    table(rows, ["username", "role", "created", "last login", "api tokens"])


@users.command("delete")
@click.argument("username")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def users_delete(username: str, yes: bool) -> None:
    """Remove a user and their API tokens; their sessions end at once."""
    from flowsched.web.users import delete_user

    if not yes:
        click.confirm(f"Delete user '{username}' and their API tokens?", abort=True)
    delete_user(username, actor="cli")
    click.echo(f"deleted user {username}")


@users.command("reset-password")
@click.argument("username")
@click.option("--password", default=None, help="Prefer --password-stdin: argv is visible in ps.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def users_reset_password(username: str, password: str | None, password_stdin: bool) -> None:
    """Set a new password; the user's open sessions end."""
    from flowsched.web.users import reset_password

    reset_password(username, _read_password(password, password_stdin), actor="cli")
    click.echo(f"password of {username} changed")


@users.command("token")
@click.argument("username")
@click.option("--description", default=None, help="What the token is for.")
@click.option(
    "--expires-in",
    type=click.IntRange(1, 3650),
    default=None,
    metavar="DAYS",
    help="The token stops working after this many days (default: never).",
)
@click.option("--revoke-all", is_flag=True, help="Delete the user's tokens instead.")
def users_token(
    username: str, description: str | None, expires_in: int | None, revoke_all: bool
) -> None:
    """Create an API token for USERNAME (printed once), or revoke all of theirs."""
    from datetime import timedelta

    from flowsched.web.users import create_token, revoke_tokens

    if revoke_all:
        click.echo(f"revoked {revoke_tokens(username, actor='cli')} token(s) of {username}")
        return
    lifetime = timedelta(days=expires_in) if expires_in else None
    click.echo(create_token(username, description, lifetime, actor="cli"))


@users.command("tokens")
@click.argument("username", required=False)
def users_tokens(username: str | None) -> None:
    """List API tokens (of USERNAME, or everyone's): id, use and expiry, never the token."""
    from flowsched.web.users import list_tokens

    rows = [
        [
            t.id,
            t.username,
            t.description or "-",
            display(t.created_at),
            display(t.last_used_at) if t.last_used_at else "never",
            (display(t.expires_at) + (" (expired)" if t.expired else ""))
            if t.expires_at
            else "never",
        ]
        for t in list_tokens(username)
    ]
    table(rows, ["id", "user", "description", "created", "last used", "expires"])


@users.command("revoke-token")
@click.argument("token_id", type=int)
def users_revoke_token(token_id: int) -> None:
    """Delete the API token TOKEN_ID (see `users tokens`); it stops working at once."""
    from flowsched.web.users import revoke_token

    revoked = revoke_token(token_id, actor="cli")
    click.echo(f"revoked token {revoked.id} of {revoked.username}")


def register(cli: click.Group) -> None:
    cli.add_command(webserver)
    cli.add_command(users)
