"""Digests (SPEC §8a, noise control): the events of one group to one (recipient, channel, target) go out as one
message, as Alertmanager's groups do (`group_by`, `group_wait`, `group_interval`).

    digests:
      - match: {type: "Backup/*"}   # the matcher of routes
        group_by: [type, host]      # type, app, account, host or data.KEY; default [type]
        wait_s: 30                  # the group's first message waits this long for more
        interval_s: 300             # later events of the group within this go out together at its end

A planned delivery whose event fits a rule (the first that fits) is not sent on its own: it joins the digest of
its group to its (recipient, channel, target), in the transaction that records the plan, and stays `pending`
with the reason `in digest 12, due …`. The group's first digest is due `wait_s` after its first event; once a
digest has gone (been taken for sending), the next events of the group join a new one, due `interval_s` after
the one before went, or `wait_s` after its first event if that interval has passed. When a digest is due, it is
sent as one message listing every event it holds (a digest of one event goes out as that event's own message);
each member delivery ends `sent` or `failed` with it. A send that fails is retried with the delivery policy
(backoff, `max_attempts`, `give_up_after_s`) and sends the same digest: events that arrive meanwhile wait for the
next one. Everything is in the store (`digests`, `digest_members`): a digest waiting when the daemon is killed
goes out after the restart, once.

    rules.py     `DigestRule` and `read_digests`: the config's `digests:` section, each problem at FILE:LINE:COL
    grouping.py  which rule an event fits, and its group's key
    records.py   the tables and their SQL: joining a digest, taking the due ones, recording outcomes
    render.py    `DigestJob` (what a sender is given) and `DigestRenderer`: the digest's message, from its own
                 templates (`templates/_digest/`)
    runner.py    `Digests`: the daemon's side, holding deliveries back at planning and sending each digest when due

This package's `__init__` imports nothing: the config reads its rules through `rules.py`, and a sender process
renders through `render.py`, without pulling in the store or the pipeline.
"""
