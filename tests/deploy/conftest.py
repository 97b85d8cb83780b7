"""Fixtures of the deployment tests: run the venv's Ansible tools on this repository."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.prefix) / "bin"


def tool(name: str) -> str:
    """Path of a command installed in the test's virtualenv."""
    path = BIN / name
    assert path.exists(), (
        f"{name} is not installed in {sys.prefix} (pip install ansible-core ansible-lint yamllint)"
    )
    return str(path)


def ansible_env(tmp: Path) -> dict[str, str]:
    """Environment of an Ansible run: the repository's ansible.cfg, no user state."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"),
        ANSIBLE_HOME=str(tmp / "ansible-home"),
        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp / "ansible-facts"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """Run a command from the repository root and return its completed process."""

    def _run(
        *args: str, timeout: float = 240, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = ansible_env(tmp_path)
        env.update(extra_env or {})
        return subprocess.run(
            list(args),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return _run
