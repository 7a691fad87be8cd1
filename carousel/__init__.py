"""Tape staging (the data carousel): not built yet.

Its place in the layers is fixed (scheduler -> carousel -> ddm_bridge -> catalog):
it will turn tape-only inputs into staging requests released in bunches within
per-tape quotas. Today the broker only counts disk replicas, and a queue cannot
read from tape.
"""
