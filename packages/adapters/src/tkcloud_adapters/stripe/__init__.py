"""Billing through Stripe: the `PaymentGateway` port on the official `stripe` library.

This package shares its last name with the library; its modules import the library with
absolute imports (`import stripe`), which always resolve to the top-level `stripe`.
"""

from tkcloud_adapters.stripe.gateway import StripePaymentGateway

__all__ = ["StripePaymentGateway"]
