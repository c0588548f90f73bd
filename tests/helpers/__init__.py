"""Test helpers: tiny data files in the real on-disk formats, tiny tasks, and process tools."""
