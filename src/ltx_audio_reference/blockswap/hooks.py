"""Block-swap plugin: config fields and model configuration hooks."""

from __future__ import annotations

PLUGIN_NAME = "block_swap"
