"""A small real Django site served by ringmaster: notes, uploads, static files (see README.md)."""
