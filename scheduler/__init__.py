"""The scheduler: daemons with run_once() (refine, broker, activate, watch, finish)."""
