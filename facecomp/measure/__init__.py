"""Measuring what a model does: evaluate (age shift, same person, colour, texture), the identity
measure and the video flicker measure.
"""
