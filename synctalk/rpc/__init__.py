"""gRPC plumbing shared by every service: generated stubs, server base, channels, errors."""
