"""Filters of the flowsched roles (every other role depends on roles/flowsched,
so Ansible loads these for them too).

- `flowsched_file_states`: a role's files as it writes them
  (`{dest, content, owner, group, mode}`) to what the host-state module
  (library/flowsched_host_state.py) compares (`{path, sha1, owner, group,
  mode}`), the sha1 of the content as Ansible's `hash('sha1')` computes it.
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


class FilterModule:
    def filters(self):
        return {
            "flowsched_file_states": flowsched_file_states,
        }
