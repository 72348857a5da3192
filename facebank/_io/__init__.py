"""Files on disk: atomic writes (`files`), downloads into a cache and SHA-256 checksums (`download`).

The lowest layer above `errors`: every stage may use it, it uses none of them.
"""
