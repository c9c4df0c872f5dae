"""Unit conversions, defined once; every layer may import them (they import nothing)."""

J_PER_WH = 3600.0
J_PER_KWH = 3.6e6
