#!/usr/bin/python
"""Compare a host with the state a role sets up, in one module run.

A converged host re-run by site.yml used to cost one module run per file,
folder, link, unit and package (a stat, then the write's own check): ~50 per
worker host, each a fork and an SSH round trip on the control machine and a
Python start on the host. The roles now describe what they set up as data,
this module reads all of it at once and lists what differs, and a role whose
host is in sync ends there (``meta: end_role``). A role whose host differs
in anything runs its tasks as before: this module only decides whether they
are needed, so it errs towards "differs" whenever it cannot tell.

It never changes the host (check mode is the same run).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import stat

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: flowsched_host_state
short_description: List how a host differs from what a role sets up
description:
  - Reads the host only. Returns C(in_sync) and C(differences), one sentence per difference.
  - A mode is an octal string (C("0644")); an owner or group a name.
options:
  files:
    description: >-
      Regular files, each C(path) with optional C(sha1) of the content, C(owner), C(group),
      C(mode).
    type: list
    elements: dict
    default: []
  dirs:
    description: Folders, each C(path) with optional C(owner), C(group), C(mode).
    type: list
    elements: dict
    default: []
  links:
    description: Symbolic links, each C(path) and the C(target) it must point at.
    type: list
    elements: dict
    default: []
  absent:
    description: Paths that must not exist.
    type: list
    elements: str
    default: []
  lines:
    description: >-
      Lines of a file, each C(path), C(regexp) and C(line): the lines matching C(regexp)
      must be exactly C(line), or none when C(line) is null.
    type: list
    elements: dict
    default: []
  trees:
    description: >-
      Folders, each C(path) whose regular files (recursively, hidden ones too) must be exactly
      C(sha256), a dict of relative path to sha256.
    type: list
    elements: dict
    default: []
  counts:
    description: >-
      Folders, each C(path) that must hold at most C(max) entries (a missing folder holds
      none).
    type: list
    elements: dict
    default: []
  units:
    description: systemd units, each C(name) with optional C(enabled) and C(active) (booleans).
    type: list
    elements: dict
    default: []
  packages:
    description: Debian packages that must be installed.
    type: list
    elements: str
    default: []
  groups:
    description: Groups that must exist.
    type: list
    elements: str
    default: []
  users:
    description: >-
      Accounts, each C(name) with optional C(group) (primary), C(shell), C(home),
      C(comment), C(groups) (supplementary groups it must be in), C(not_groups) (those it
      must not be in).
    type: list
    elements: dict
    default: []
"""

RETURN = r"""
in_sync:
  description: Nothing differs.
  type: bool
differences:
  description: What differs, one sentence each, naming the path, unit, package or account.
  type: list
  elements: str
"""


def _owner_differences(path: str, st: os.stat_result, want: dict) -> list[str]:
    found = []
    if want.get("mode") is not None:
        try:
            mode = int(str(want["mode"]), 8)
        except ValueError as error:
            raise ValueError(
                f"{path}: mode {want['mode']!r} is not an octal string such as '0644'"
            ) from error
        if stat.S_IMODE(st.st_mode) != mode:
            found.append(f"{path}: mode {stat.S_IMODE(st.st_mode):04o}, not {mode:04o}")
    if want.get("owner") is not None:
        owner = _name(pwd.getpwuid, st.st_uid)
        if owner != want["owner"]:
            found.append(f"{path}: owner {owner}, not {want['owner']}")
    if want.get("group") is not None:
        group = _name(grp.getgrgid, st.st_gid)
        if group != want["group"]:
            found.append(f"{path}: group {group}, not {want['group']}")
    return found


def _name(lookup, number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _digest(path: str, digest) -> str:
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _of_type(path: str, is_type, noun: str) -> tuple[os.stat_result | None, list[str]]:
    """The path's lstat when it is of the type, else why not."""
    st = _lstat(path)
    if st is None:
        return None, [f"{path}: missing"]
    if not is_type(st.st_mode):
        return None, [f"{path}: not {noun}"]
    return st, []


def file_differences(want: dict) -> list[str]:
    path = want["path"]
    st, found = _of_type(path, stat.S_ISREG, "a regular file")
    if st is None:
        return found
    found = _owner_differences(path, st, want)
    if want.get("sha1") is not None and _digest(path, hashlib.sha1()) != want["sha1"]:
        found.append(f"{path}: content differs")
    return found


def dir_differences(want: dict) -> list[str]:
    path = want["path"]
    st, found = _of_type(path, stat.S_ISDIR, "a folder")
    return found if st is None else _owner_differences(path, st, want)


def link_differences(want: dict) -> list[str]:
    path = want["path"]
    st, found = _of_type(path, stat.S_ISLNK, "a symbolic link")
    if st is None:
        return found
    target = os.readlink(path)
    return [] if target == want["target"] else [f"{path}: points at {target}, not {want['target']}"]


def line_differences(want: dict) -> list[str]:
    path, line = want["path"], want.get("line")
    pattern = re.compile(want["regexp"])
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            matching = [text.rstrip("\n") for text in stream if pattern.search(text.rstrip("\n"))]
    except FileNotFoundError:
        return [] if line is None else [f"{path}: missing (wants {line!r})"]
    wanted = [] if line is None else [line]
    if matching == wanted:
        return []
    return [f"{path}: lines matching {want['regexp']!r} are {matching!r}, not {wanted!r}"]


def tree_differences(want: dict) -> list[str]:
    """The regular files under a folder, by relative path and sha256, against a manifest."""
    root = want["path"].rstrip("/") + "/"  # a trailing slash follows a `current` link
    found: dict[str, str] = {}
    if os.path.isdir(root):
        for folder, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                if stat.S_ISREG(os.lstat(path).st_mode):
                    found[os.path.relpath(path, root)] = _digest(path, hashlib.sha256())
    wanted = want["sha256"]
    names = sorted(set(found) | set(wanted))
    return [f"{root}{name}: differs" for name in names if found.get(name) != wanted.get(name)]


def count_differences(want: dict) -> list[str]:
    path = want["path"]
    try:
        entries = len(os.listdir(path))
    except FileNotFoundError:
        return []
    if entries > want["max"]:
        return [f"{path}: {entries} entries, more than {want['max']}"]
    return []


def unit_differences(module: AnsibleModule, units: list[dict]) -> list[str]:
    if not units:
        return []
    names = [unit["name"] for unit in units]
    rc, out, err = module.run_command(
        ["systemctl", "show", "--property=Id,ActiveState,UnitFileState", "--", *names]
    )
    if rc != 0:
        return [f"systemctl show {' '.join(names)} failed: {err.strip() or rc}"]
    blocks = [
        dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        for block in out.strip().split("\n\n")
    ]
    if len(blocks) != len(units):
        return [f"systemctl show gave {len(blocks)} answers for {len(units)} units"]
    found = []
    for unit, shown in zip(units, blocks, strict=True):
        name = unit["name"]
        if unit.get("enabled") is not None:
            enabled = shown.get("UnitFileState") == "enabled"
            if enabled != bool(unit["enabled"]):
                found.append(f"{name}: unit file state {shown.get('UnitFileState') or 'unknown'}")
        if unit.get("active") is not None:
            active = shown.get("ActiveState") == "active"
            if active != bool(unit["active"]):
                found.append(f"{name}: {shown.get('ActiveState') or 'unknown'}")
    return found


def package_differences(module: AnsibleModule, packages: list[str]) -> list[str]:
    if not packages:
        return []
    # Exits 1 when a package is unknown to dpkg; its line is then missing.
    _rc, out, _err = module.run_command(
        ["dpkg-query", "--show", "--showformat=${Package} ${db:Status-Abbrev}\n", "--", *packages]
    )
    installed = {
        fields[0]
        for fields in (line.split() for line in out.splitlines())
        if len(fields) > 1 and fields[1] == "ii"
    }
    return [
        f"package {name}: not installed" for name in packages if name.split(":")[0] not in installed
    ]


def account_differences(groups: list[str], users: list[dict]) -> list[str]:
    found = []
    for name in groups:
        try:
            grp.getgrnam(name)
        except KeyError:
            found.append(f"group {name}: missing")
    for want in users:
        name = want["name"]
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            found.append(f"user {name}: missing")
            continue
        primary = _name(grp.getgrgid, entry.pw_gid)
        if want.get("group") is not None and primary != want["group"]:
            found.append(f"user {name}: primary group {primary}, not {want['group']}")
        for field, value in (
            ("shell", entry.pw_shell),
            ("home", entry.pw_dir),
            ("comment", entry.pw_gecos),
        ):
            if want.get(field) is not None and value != want[field]:
                found.append(f"user {name}: {field} {value!r}, not {want[field]!r}")
        for group in want.get("groups") or []:
            try:
                members = grp.getgrnam(group).gr_mem
            except KeyError:
                found.append(f"user {name}: group {group} missing")
                continue
            if name not in members:
                found.append(f"user {name}: not in group {group}")
        for group in want.get("not_groups") or []:
            try:
                members = grp.getgrnam(group).gr_mem
            except KeyError:
                continue
            if name in members:
                found.append(f"user {name}: in group {group}")
    return found


def main() -> None:
    def listed(**options: dict) -> dict:
        return {"type": "list", "elements": "dict", "default": [], "options": options}

    text, required = {"type": "str"}, {"type": "str", "required": True}
    owned = {"owner": text, "group": text, "mode": {"type": "raw"}}
    module = AnsibleModule(
        argument_spec={
            # A checksum of a secrets file is kept out of logs and the host's journal.
            "files": listed(path=required, sha1={"type": "str", "no_log": True}, **owned),
            "dirs": listed(path=required, **owned),
            "links": listed(path=required, target=required),
            "absent": {"type": "list", "elements": "str", "default": []},
            "lines": listed(path=required, regexp=required, line=text),
            "trees": listed(path=required, sha256={"type": "dict", "required": True}),
            "counts": listed(path=required, max={"type": "int", "required": True}),
            "units": listed(name=required, enabled={"type": "bool"}, active={"type": "bool"}),
            "packages": {"type": "list", "elements": "str", "default": []},
            "groups": {"type": "list", "elements": "str", "default": []},
            "users": listed(
                name=required,
                group=text,
                shell=text,
                home=text,
                comment=text,
                groups={"type": "list", "elements": "str"},
                not_groups={"type": "list", "elements": "str"},
            ),
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        differences = [
            *(found for want in params["files"] for found in file_differences(want)),
            *(found for want in params["dirs"] for found in dir_differences(want)),
            *(found for want in params["links"] for found in link_differences(want)),
            *(f"{path}: present" for path in params["absent"] if _lstat(path) is not None),
            *(found for want in params["lines"] for found in line_differences(want)),
            *(found for want in params["trees"] for found in tree_differences(want)),
            *(found for want in params["counts"] for found in count_differences(want)),
            *unit_differences(module, params["units"]),
            *package_differences(module, params["packages"]),
            *account_differences(params["groups"], params["users"]),
        ]
    except (KeyError, ValueError, re.error, OSError) as error:
        module.fail_json(msg=f"flowsched_host_state: {type(error).__name__}: {error}")
    module.exit_json(changed=False, in_sync=not differences, differences=differences)


if __name__ == "__main__":
    main()
