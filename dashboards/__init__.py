"""Supervision dashboards for Grafana, built as code."""
