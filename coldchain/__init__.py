"""Cold chain: product profiles, excursion rules, alerts and their notifications, summaries."""
