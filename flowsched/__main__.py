from flowsched.processes import adopt_parent_death_signal

# First, before anything slow: a child started by flowsched dies with its parent.
adopt_parent_death_signal()

from flowsched.cli.main import main  # noqa: E402

main()
