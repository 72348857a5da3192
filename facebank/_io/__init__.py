"""Files on disk: atomic writes (`files`), downloads into a cache (`download`), whole-file
checksums (`checksum`: SHA-256 and the fast XXH3-128).

The lowest layer above `errors`: every stage may use it, it uses none of them.
"""
