"""Money is integer minor units (cents) everywhere; this formats it for people."""


def format_cents(cents: int) -> str:
    """5000 -> "50.00", -125 -> "-1.25"."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"
