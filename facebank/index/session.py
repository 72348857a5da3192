"""Deprecated path: the picking session lives in `facebank.pick.session` (re-exported here unchanged).

The index layer no longer holds the session; this module is outside the layers contract and
imports upward only to keep `from facebank.index.session import FaceBank` working.
"""

from facebank.pick.options import FALLBACKS, MODES  # noqa: F401
from facebank.pick.session import FaceBank, Target  # noqa: F401
