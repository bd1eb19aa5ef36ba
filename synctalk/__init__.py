"""SyncTalk 2D core library: models, audio front end, avatar format, config, logging, RPC."""

__version__ = "0.1.0"
