"""Analytics of one app, read by members, observers and API keys (issue 5)."""

from tkcloud_application.analytics.queries import AnalyticsQuery, AppAnalytics

__all__ = ["AnalyticsQuery", "AppAnalytics"]
