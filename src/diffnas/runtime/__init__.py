"""Process plumbing under everything that computes: processes (torchrun), the machine, run directories.

Nothing here knows about spaces, methods or the engine; every layer above may use it.
"""
