"""The send stage: assemble each recipient's message and deliver it over SMTP.

- `engine`: `send_edition`, `run_worker`, `send_test_copy` and the operator
  controls `pause_edition` / `resume_edition` / `cancel_edition`;
- `ledger`: the delivery table's set-based SQL (queue, claim with a lease, record);
- `pool`: long-lived SMTP connections (`SmtpPool`) and `NullTransport` for dry runs;
- `pacing`: the global token-bucket pace;
- `assemble`: one digest MIME-encoded once, filled in per recipient;
- `progress` and `stats`: seeing a send work and reading the ledger afterwards.
"""
