"""Delivery: recorded events → planned deliveries (outbox) → channel attempts → records.

    recorded event ──plan──► deliveries rows (pending | suppressed), event marked planned   one transaction
    pending ──ready queue per channel──► attempt (render, Channel.send under a timeout)
        sent       → row sent
        retryable  → row keeps pending with next_attempt_at (backoff with jitter, Retry-After honoured)
        permanent, or out of attempts/time → row failed, and an iContact/SendIMFailed event in the same transaction
        to an address the configuration no longer has → row suppressed, not attempted

Nothing lives only in memory. Events wait in the store until the planner reads them, and retries wait there
until due, so memory holds only the deliveries queued or in flight, and the planner pauses while those pass
`BACKLOG_HIGH`: a burst of a million events costs disk, not RAM. A crash at any point resumes the work (a
send whose success was not yet recorded may be repeated once).

    planning.py    `Planner`: each recorded event planned once, its deliveries recorded and handed on
    scheduling.py  `Scheduler`: the deliveries in hand, a ready queue and slots per channel, retries taken back
                   from the store when due, the sweep
    attempts.py    `Attempts`: one attempt, the job handed to a sender (dispatcher/senders/)
    outcomes.py    `Outcomes`: what became of an attempt, recorded (sent, retry with backoff, failed, suppressed)
    pipeline.py    `Pipeline`: the stages wired together; start (resume), reload, stop (drain)
"""
