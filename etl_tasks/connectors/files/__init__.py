"""Exported files (CSV, JSON Lines) in a folder, as a source (``{"file": {…}}``)."""
