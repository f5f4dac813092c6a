"""Implementations of the `Mailer` port."""

from tkcloud_adapters.mail.smtp import SmtpMailer

__all__ = ["SmtpMailer"]
