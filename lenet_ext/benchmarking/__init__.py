"""The benchmark harness behind ``lenet-ext bench`` (``lenet_ext.benchmark`` is its command line):
``suite`` the rows as data, ``cases`` what each row runs, ``runner`` how a row is checked and timed,
``report`` the table and the chart, ``levels`` the environment that holds a run to one CPU
instruction-set level."""
