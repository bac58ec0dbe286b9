"""Automated runs: cron schedules, and triggers that turn events into runs."""
