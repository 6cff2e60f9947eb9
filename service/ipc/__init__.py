"""Between HTTP workers and the engine process: framing, shared memory, both ends."""
