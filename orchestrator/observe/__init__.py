"""Watching a campaign: its live state, status, report and dashboard."""
