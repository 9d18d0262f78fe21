"""The send stage: assemble each recipient's message and deliver it over SMTP."""
