"""Sign-in providers: GitHub OAuth through authlib."""

from tkcloud_adapters.oauth.github import GitHubOAuthProvider

__all__ = ["GitHubOAuthProvider"]
