"""The wire: the one schema of every message (``protocol``) and the socket plumbing every
client-side process shares (``transport``)."""
