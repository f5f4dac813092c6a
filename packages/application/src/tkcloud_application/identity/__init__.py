"""Sign-in, sessions, API keys and the question every endpoint asks: may this principal act?"""
