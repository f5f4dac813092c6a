"""Billing: checkout, the customer portal, Stripe webhooks, the plan lifecycle, quota mail."""
