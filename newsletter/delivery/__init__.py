"""The send stage: assemble each recipient's message and deliver it over SMTP.

Producers and workers apart: `control` and `one_copy` are what a web request
or a command may call; `worker` and everything under it is the worker's.

- `control`: the operator's controls `start_edition` / `pause_edition` /
  `resume_edition` / `cancel_edition`, each one short transaction that sends nothing;
- `one_copy`: `send_test_copy`, one marked copy on its own connection;
- `worker`: `send_edition` and `run_worker`, which work an edition's queue;
- `ledger`: the delivery table's set-based SQL (queue, claim with a lease, record);
- `connection`: one SMTP connection and one message's conversation (`SmtpReply`);
- `transport`: long-lived SMTP connections (`SmtpPool`) and `NullTransport` for dry runs;
- `pacing`: the relay's pace, token buckets in the database shared by every worker;
- `breaker`: an edition's failure breaker, counters in the database shared by every worker;
- `assemble`: one digest MIME-encoded once, filled in per recipient;
- `verp`: the per-delivery envelope sender (`bounces+TOKEN@domain`) bounces come back to;
- `feedback`: bounces and complaints reported later, read and recorded; `newsletter bounces serve`;
- `report`: what a send reports (`SendReport`) and the `SendProgress` it calls;
- `progress` and `stats`: a terminal progress bar, and reading the ledger afterwards;
- `worker_process`: sending processes as children: the worker of `newsletter serve`,
  and the N processes of `--processes N` with one progress read from the ledger.
"""
