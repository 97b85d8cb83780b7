"""Filters of the flowsched roles (every other role depends on roles/flowsched,
so Ansible loads these for them too).

- `flowsched_file_states`: a role's files as it writes them
  (`{dest, content, owner, group, mode}`) to what the host-state module
  (library/flowsched_host_state.py) compares (`{path, sha1, owner, group,
  mode}`), the sha1 of the content as Ansible's `hash('sha1')` computes it.
- `flowsched_failures`: the problems a fleet-wide check found, one line per
  problem with the hosts that have it, for an assert's fail_msg.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_bytes


def flowsched_file_states(files: Iterable[Mapping]) -> list[dict]:
    """[{dest, content, owner, group, mode}] -> [{path, sha1, owner, group, mode}]."""
    states = []
    for file in files:
        if not isinstance(file, Mapping) or "dest" not in file or "content" not in file:
            # Never the content itself: it may hold secrets (flowsched.env).
            got = sorted(file) if isinstance(file, Mapping) else type(file).__name__
            raise AnsibleFilterError(f"flowsched_file_states: needs dest and content, got {got}")
        state = {
            "path": file["dest"],
            "sha1": hashlib.sha1(
                to_bytes(file["content"], errors="surrogate_or_strict")
            ).hexdigest(),
        }
        for key in ("owner", "group", "mode"):
            if key in file:
                state[key] = file[key]
        states.append(state)
    return states


def flowsched_failures(found: Iterable[Mapping], separator: str = "; ") -> str:
    """[{host, msg, named?}] -> "host1, host2: msg; ...": one entry per message,
    in the order first found, with every host that has it; a message that
    names its host itself (`named: true`) is shown as it is."""
    hosts_of: dict[str, list[str]] = {}
    named: set[str] = set()
    for problem in found:
        msg = str(problem["msg"])
        hosts_of.setdefault(msg, []).append(str(problem["host"]))
        if problem.get("named"):
            named.add(msg)
    return separator.join(
        msg if msg in named else f"{', '.join(hosts)}: {msg}" for msg, hosts in hosts_of.items()
    )


class FilterModule:
    def filters(self):
        return {
            "flowsched_file_states": flowsched_file_states,
            "flowsched_failures": flowsched_failures,
        }
