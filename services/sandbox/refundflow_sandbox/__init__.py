"""A Stripe-compatible payment-provider sandbox for local runs and tests (refunds only)."""

from refundflow_sandbox.app import create_app
from refundflow_sandbox.settings import SandboxSettings

__all__ = ["SandboxSettings", "create_app"]
