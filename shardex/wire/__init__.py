"""The wire: the one schema of every message (``protocol``), the result codes (``codes``, one
table), errors as ``(code, text, data)`` (``errors``) and the socket plumbing every client-side
process shares (``transport``)."""
