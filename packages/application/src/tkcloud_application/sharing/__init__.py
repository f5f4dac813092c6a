"""Public sharing: share links that show one app's analytics without sign-in, and badges."""

from tkcloud_application.sharing.links import Badge, Sharing

__all__ = ["Badge", "Sharing"]
