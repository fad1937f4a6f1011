"""Pipeline folders: discovery, loading and validation with errors that name file, field and fix."""
