"""Noise control (SPEC §8a): what stops or holds back a planned delivery after routing has chosen it.

    silences.py     maintenance windows made at run time (API, CLI): stored, matched on type, account and host;
                    a delivery one stops is recorded `suppressed`, naming it
    repeats.py      `repeats:` rules: an event whose key already went to the same address within `interval_s` is
                    recorded `suppressed` (reason `repeat of <event id>`)
    quiet_hours.py  a system contact's `quiet_hours`: a delivery planned inside the window waits (pending) until
                    the window's end, unless its importance is at or above `except`
    settings.py     the config's `repeats:` and `quiet_hours:` read from YAML, each problem at FILE:LINE:COL
    gate.py         `NoiseGate`: the three applied to an event's deliveries in the planner's transaction, and the
                    same decisions without writing for `dispatcher routes`

Digests (the other half of §8a's noise control) are not here.

This package's `__init__` imports nothing: the config's model imports the rules' dataclasses from its modules, so
importing one must not pull in the store or the pipeline.
"""
