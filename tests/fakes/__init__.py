"""Strict loopback stand-ins for the providers, built from ../shared/PROVIDERS.md."""
