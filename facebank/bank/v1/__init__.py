"""Bank schema version 1, frozen: one HDF5 file that every commit copies whole.

Kept only to read and convert version-1 banks (`facebank bank upgrade`), to make the v1 test
fixture (tests/fixtures/make_bank_v1.py) and as the baseline of tools/bench_bank_write.py.
Do not change it: it documents the format old banks were written in.
"""

SCHEMA_VERSION = 1
