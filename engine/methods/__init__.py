"""Learned reconstruction methods (MoFA, ...) built on engine.encoders and engine.train."""
