"""The send stage: assemble each recipient's message and deliver it over SMTP.

Producers and workers apart: `control` and `one_copy` are what a web request
or a command may call; `engine` and everything under it is the worker's.

- `control`: the operator's controls `start_edition` / `pause_edition` /
  `resume_edition` / `cancel_edition`, each one short transaction that sends nothing;
- `one_copy`: `send_test_copy`, one marked copy on its own connection;
- `engine`: `send_edition` and `run_worker`, which work an edition's queue;
- `ledger`: the delivery table's set-based SQL (queue, claim with a lease, record);
- `connection`: one SMTP connection and one message's conversation (`SmtpReply`);
- `pool`: long-lived SMTP connections (`SmtpPool`) and `NullTransport` for dry runs;
- `pacing`: the global token-bucket pace;
- `assemble`: one digest MIME-encoded once, filled in per recipient;
- `progress` and `stats`: seeing a send work and reading the ledger afterwards;
- `worker_process`: `newsletter worker --forever` as a child of `newsletter serve`.
"""
