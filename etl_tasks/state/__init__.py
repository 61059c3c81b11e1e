"""The state DB: the source of truth for every migration, stream, chunk and lease."""
