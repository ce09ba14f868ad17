"""Senders: where a delivery's attempt runs, rendering its message and handing it to the channel.

The daemon's process receives events, plans them and keeps every record; an attempt needs none of that, only the
config, the catalog and the delivery. Python runs one thread at a time, so `delivery.workers` (default 2) moves
attempts into child processes, and a burst uses more than one core:

    daemon: planner, store, scheduling ──jobs──► sender process: render, Channel.send
                                       ◄─outcomes──

`LocalSender` renders and sends in the process it lives in: the daemon's own with `workers: 0`, each sender
process otherwise. `SenderPool` is the daemon's side of the processes; the pipeline awaits either the same way:
`send(job)` returns once the far end took the message and raises `DeliveryError` otherwise.

    channel_set.py  the channels a config sets up, and what a sender reads of their sections
    local.py        `SendJob`, `LocalSender`: render (cached) and `Channel.send` in this process
    protocol.py     the frames between the daemon and a sender process
    pool.py         the daemon's side: `SenderPool`, each process supervised, replaced when it dies or is stuck
    child.py        the sender process's side (`python -m dispatcher.senders`, see `__main__.py`)

This file imports nothing, so a sender process loads child.py and what it needs, never the daemon's side.
"""
