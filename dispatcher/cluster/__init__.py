"""Instances sharing one store (SPEC §8a's clusters): who is alive and what each has claimed (`membership.py`,
`claims.py`), which one runs the intake (`election.py`), and how they wake one another (`signals.py`). On SQLite
the same code runs with one instance."""
