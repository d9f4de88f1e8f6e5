"""Spiking networks trained end to end with surrogate gradients (Norse)."""
