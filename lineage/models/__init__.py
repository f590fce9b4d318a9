"""Families, one per file, readable top to bottom; no Lightning here (see ``lineage.modules``)."""
