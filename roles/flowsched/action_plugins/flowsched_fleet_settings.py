"""Read settings of many hosts in one task on the control machine.

`hostvars[host]` holds a host's inventory variables and facts, not the role
defaults and role variables that most settings come from, so a check that
loops over the hosts of a play cannot read `hostvars[host].flowsched_ports`.
This action computes each host's variables as a task of that host would see
them (Ansible's own variable manager, with this task's role, play and
include context: role defaults, inventory, role variables, facts, extra
variables, in Ansible's precedence), templates the named ones in the host's
context and returns them per host. With `argument_spec` (a role entry
point's `options`), it also validates each host's values against it, the
check Ansible runs as a role's first task, once for the fleet instead of
once per host and play.

It never fails: what it could not evaluate or what the spec refuses is in
`errors`, one message per host and problem, naming the host, for an assert
to report (the task itself runs with no_log, since the values hold secrets;
no message holds a no_log value).

Returns `settings` ({host: {name: value}}, names a host does not define
left out) and `errors` (list of str).
"""

from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.template import Templar

DOCUMENTATION = """
module: flowsched_fleet_settings
short_description: Evaluate and validate settings of many hosts in one task
options:
  hosts:
    description: Inventory names of the hosts to read.
    type: list
    elements: str
    required: true
  names:
    description: Variables to read (besides the options of argument_spec).
    type: list
    elements: str
    default: []
  argument_spec:
    description: A role entry point's argument spec options, to validate each host's values.
    type: dict
    default: {}
"""


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(("hosts", "names", "argument_spec"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        hosts = list(self._task.args.get("hosts") or [])
        spec = dict(self._task.args.get("argument_spec") or {})
        names = list(dict.fromkeys([*spec, *(self._task.args.get("names") or [])]))
        secret_names = {name for name, option in spec.items() if option.get("no_log")}

        manager = self._task.get_variable_manager()
        play = self._task.get_play()
        if manager is None or play is None:  # not in a play (never expected)
            raise AnsibleError("flowsched_fleet_settings needs the play's variable manager")
        inventory = manager._inventory

        settings: dict[str, dict] = {}
        errors: list[str] = []
        for name in hosts:
            host = inventory.get_host(name)
            if host is None:
                errors.append(f"{name}: not a host of the inventory")
                continue
            host_vars = manager.get_vars(
                play=play,
                host=host,
                task=self._task,
                _hosts=task_vars.get("ansible_play_batch"),
                _hosts_all=task_vars.get("ansible_play_hosts_all"),
            )
            templar = Templar(loader=self._loader, variables=host_vars)
            values = {}
            for var in names:
                if var not in host_vars:
                    continue
                try:
                    values[var] = templar.template(host_vars[var])
                except AnsibleError as error:
                    detail = "" if var in secret_names else f": {error.message}"
                    errors.append(f"{name}: {var} could not be evaluated{detail}")
            settings[name] = values
            if spec:
                checked = ArgumentSpecValidator(spec).validate(
                    {var: value for var, value in values.items() if var in spec},
                    validate_role_argument_spec=True,
                )
                hidden = [
                    str(values[var]) for var in secret_names if values.get(var) not in (None, "")
                ]
                for message in checked.error_messages:
                    for value in hidden:
                        message = message.replace(value, "********")
                    errors.append(f"{name}: {message}")

        result.update(changed=False, settings=settings, errors=errors)
        return result
