"""What a production token secret must be: long, not a placeholder, and random-looking."""

from __future__ import annotations

import math
from collections import Counter

MIN_SECRET_LENGTH = 32
# A secret from `secrets.token_urlsafe(48)` has ~40 distinct characters and ~5.3 bits per
# character, one from `openssl rand -hex 32` 16 and ~3.9: the floors below refuse only what no
# random generator produces (a repeated character, a short cycle, a word padded out).
MIN_SECRET_DISTINCT_CHARACTERS = 10
MIN_SECRET_BITS_PER_CHARACTER = 3.0
# The values the example files ship with (gateway.env.example, postgres.env.example), and words
# that mark a value as one to replace; tests/test_production.py checks the example files.
PLACEHOLDER_SECRETS = frozenset({"change-me-to-a-long-random-secret-of-at-least-32-characters"})
PLACEHOLDER_WORDS = ("change-me", "changeme", "change_me", "replace-me", "placeholder")
GENERATE_HINT = 'generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'


def bits_per_character(value: str) -> float:
    """Shannon entropy of the string's character distribution, in bits per character.

    Hand-written (two lines): no maintained library offers just this measure, and a password
    strength estimator (zxcvbn and the like) judges human passwords, not generated secrets.
    """
    size = len(value)
    return sum(n / size * math.log2(size / n) for n in Counter(value).values())


def secret_problem(value: str | None) -> str | None:
    """Why ``value`` is not acceptable as a production token secret, or None."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return (
            f"GATEWAY_TOKEN_SECRET must be set (at least {MIN_SECRET_LENGTH} characters)"
            " in production mode"
        )
    lowered = value.lower()
    if value in PLACEHOLDER_SECRETS or any(word in lowered for word in PLACEHOLDER_WORDS):
        return f"GATEWAY_TOKEN_SECRET is a placeholder, not a secret: {GENERATE_HINT}"
    distinct = len(set(value))
    bits = bits_per_character(value)
    if distinct < MIN_SECRET_DISTINCT_CHARACTERS or bits < MIN_SECRET_BITS_PER_CHARACTER:
        return (
            f"GATEWAY_TOKEN_SECRET is not random enough ({distinct} distinct characters,"
            f" {bits:.1f} bits per character; at least {MIN_SECRET_DISTINCT_CHARACTERS} and"
            f" {MIN_SECRET_BITS_PER_CHARACTER:.1f} are required): {GENERATE_HINT}"
        )
    return None
