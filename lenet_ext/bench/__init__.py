"""The benchmark harness behind ``lenet-ext bench`` and ``python -m lenet_ext.bench``: ``cli`` the command
line and the run that bench/ scripts share, ``suite`` the rows as data, ``cases`` what each row runs,
``runner`` how a row is checked and timed, ``report`` the table and the chart, ``levels`` the environment
that holds a run to one CPU instruction-set level. (Not to be confused with ``lenet_ext.backends.autotune``,
which times the CPU conv algorithms inside the operators.)"""
