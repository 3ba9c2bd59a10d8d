"""AI Bridge: a self-hosted gateway that attributes and records AI coding traffic."""

__version__ = "0.1.0"
